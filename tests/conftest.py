"""Fixtures shared by the test modules; the shared builders are in ``helpers.py``.

The test modules sit in sub-folders named like the package's (``test_models/``, ...); they
import ``helpers``, ``algorithm_table`` and ``distributed`` from this folder, which is put on
``sys.path`` here, as the repository root is (for ``mmdense`` and ``tools``).
"""
import argparse
import os.path as osp
import sys

import pytest

TESTS = osp.dirname(osp.abspath(__file__))
for path in (osp.dirname(TESTS), TESTS):
    if path not in sys.path:
        sys.path.insert(0, path)

from helpers import (build_algorithm, four_block_dino, save_runner_checkpoint,  # noqa: E402
                     small_slotcon_heads)


@pytest.fixture(scope='session')
def toy_root(tmp_path_factory):
    """A small toy scene set shared by the tests that train or build datasets."""
    from mmdense.datasets.toy_scenes import generate_toy_scenes
    root = tmp_path_factory.mktemp('toy_scenes')
    generate_toy_scenes(str(root), num_train=24, num_val=8, img_size=96, seed=0)
    return str(root)


@pytest.fixture(scope='module')
def one_thread():
    """One torch thread for a module of tiny models: several threads only contend on a small
    shared CPU. Use with ``pytestmark = pytest.mark.usefixtures('one_thread')``."""
    import torch
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def mmdense_default_scope():
    """Run every test in the mmdense scope: a Runner built by an earlier test (a downstream mmdet
    or mmseg one, say) leaves its own scope as the process-wide default."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdense'):
        yield


def runner_checkpoint(tmp_path_factory, folder, config, edit, filename):
    """A runner-style checkpoint of ``config`` shrunk by ``edit``, as ``<folder>/<filename>``
    (``path``, ``model``, ``dir``)."""
    cfg, model = build_algorithm(config, edit)
    path = tmp_path_factory.mktemp(folder) / filename
    save_runner_checkpoint(cfg, model, path)
    return argparse.Namespace(path=str(path), model=model, dir=path.parent)


@pytest.fixture(scope='module')
def dino(tmp_path_factory):
    """A runner-style checkpoint of a 4-block DINO ViT."""
    return runner_checkpoint(tmp_path_factory, 'dino', 'configs/dino/vit-s_toy.py',
                             four_block_dino, 'epoch_1.pth')


@pytest.fixture(scope='module')
def slotcon(tmp_path_factory):
    """A runner-style checkpoint of a small SlotCon ResNet-18."""
    return runner_checkpoint(tmp_path_factory, 'slotcon', 'configs/slotcon/r18_toy.py',
                             small_slotcon_heads, 'epoch_3.pth')


@pytest.fixture(scope='module')
def tiny_models(tmp_path_factory):
    """Config files and runner-style checkpoints (config text + weights) of a tiny DINO ViT and
    a tiny SlotCon ResNet-18."""
    folder = tmp_path_factory.mktemp('tiny_models')
    files = {}
    for name, config, edit in (('dino', 'configs/dino/vit-s_toy.py', four_block_dino),
                               ('slotcon', 'configs/slotcon/r18_toy.py', small_slotcon_heads)):
        cfg, model = build_algorithm(config, edit)
        cfg.dump(str(folder / f'{name}.py'))
        save_runner_checkpoint(cfg, model, folder / f'{name}.pth')
        files[name] = (str(folder / f'{name}.py'), str(folder / f'{name}.pth'))
    return files
