"""tools/train.py's default work dir keeps apart configs of different methods that share a name."""
import importlib.util
import os.path as osp

from helpers import ROOT

_spec = importlib.util.spec_from_file_location('train_tool', osp.join(ROOT, 'tools', 'train.py'))
train_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_tool)


def test_configs_of_different_methods_with_one_name_train_in_different_folders():
    folders = {train_tool.default_work_dir(f'configs/{method}/vit-s_toy.py')
               for method in ('dino', 'adclr', 'cotap')}
    assert folders == {osp.join('./work_dirs', method, 'vit-s_toy')
                       for method in ('dino', 'adclr', 'cotap')}


def test_the_default_work_dir_is_method_then_config_name():
    assert train_tool.default_work_dir(osp.join(ROOT, 'configs/cotap/vit-s_coco.py')) == \
        osp.join('./work_dirs', 'cotap', 'vit-s_coco')
