"""Errors users can act on: every tool answers a user mistake with one ``error: ...`` line naming
the file and the reason, and exit status 2 (tracebacks are for bugs); damaged checkpoints and a
full disk are named; a mistyped ``--cfg-options`` key stops the tool with the nearest valid
name."""
import errno
import inspect
import os

import pytest
import torch
from helpers import run_tool

import mmdense  # noqa: F401


def one_error_line(capsys, *fragments):
    err = capsys.readouterr().err
    assert 'Traceback' not in err, err
    (line, ) = [line for line in err.splitlines() if line.strip()]
    assert line.startswith('error: ')
    for fragment in fragments:
        assert str(fragment) in line, line


MISSING = 'nowhere/missing.pth'
TOOLS = {
    'train': ('tools/train.py', 'nowhere/missing.py'),
    'test_dense': ('tools/test_dense.py', 'nowhere/missing.py', 'random', '--protocol', 'knn',
                   '--data-root', '{toy}'),
    'visualize_dense': ('tools/analysis_tools/visualize_dense.py', 'nowhere/missing.py', 'random',
                        '--data-root', '{toy}'),
    'visualize_slots': ('tools/analysis_tools/visualize_slots.py', '{config}', MISSING, '.',
                        '--out', '{tmp}/out'),
    'build_nn_pairs': ('tools/misc/build_nn_pairs.py', '{config}', MISSING, '--out',
                       '{tmp}/nn.json'),
    'export': ('tools/model_converters/export.py', MISSING, '{tmp}/out.pth', '--target',
               'mmdet'),
    'import_weights': ('tools/model_converters/import_weights.py', MISSING, '{tmp}/out.pth',
                       '--from', 'dino'),
    'check_transfer': ('tools/analysis_tools/check_transfer.py', 'nowhere/missing.py', MISSING),
}


@pytest.mark.parametrize('tool', list(TOOLS))
def test_a_missing_file_is_one_line_and_exit_2(tool, tiny_models, toy_root, tmp_path, capsys):
    config = tiny_models['slotcon' if tool == 'visualize_slots' else 'dino'][0]
    args = [str(a).format(config=config, tmp=tmp_path, toy=toy_root) for a in TOOLS[tool]]
    assert run_tool(*args) == 2
    one_error_line(capsys, 'nowhere/missing.')


def test_other_user_mistakes_are_one_line_and_exit_2(tiny_models, toy_root, tmp_path, capsys):
    config, checkpoint = tiny_models['dino']
    broken = tmp_path / 'broken.py'
    broken.write_text("model = dict(type='DINO'\n")
    assert run_tool('tools/train.py', broken) == 2
    one_error_line(capsys, broken, 'syntax error at line')
    assert run_tool('tools/model_converters/export.py', tmp_path, tmp_path / 'o.pth',
                    '--target', 'mmdet') == 2
    one_error_line(capsys, tmp_path, 'is a folder')
    assert run_tool('tools/test_dense.py', config, checkpoint, '--protocol', 'knn', '--dataset',
                    'imagenet') == 2
    one_error_line(capsys, "unknown dense-eval dataset 'imagenet'")
    assert run_tool('tools/misc/build_nn_pairs.py', config, checkpoint, '--out',
                    tmp_path / 'nn.json', '--topk', 24, '--data-root', toy_root) == 2
    one_error_line(capsys, '--topk must lie in [1, 23] for 24 images, got 24')
    assert run_tool('tools/model_converters/export.py', checkpoint, tmp_path / 'o.pth',
                    '--target', 'mmdet', '--debug') == 0  # the same tool works on good input


def damaged(kind, good, path):
    data = open(good, 'rb').read()
    path.write_bytes({'zero-byte': b'', 'truncated': data[:len(data) // 2],
                      'corrupt': data[:100] + bytes(range(256)) * 4,
                      'text': b'not a checkpoint\n' * 10}[kind])
    return path


@pytest.mark.parametrize('kind', ['zero-byte', 'truncated', 'corrupt', 'text'])
def test_a_damaged_checkpoint_is_named(kind, tiny_models, tmp_path, capsys):
    from mmdense.fileio.checkpoint import CheckpointReadError, read_checkpoint
    path = damaged(kind, tiny_models['dino'][1], tmp_path / f'{kind}.pth')
    with pytest.raises(CheckpointReadError, match=str(path)):
        read_checkpoint(str(path))
    assert run_tool('tools/model_converters/export.py', path, tmp_path / 'out.pth', '--target',
                    'mmdet') == 2
    one_error_line(capsys, path, 'empty (0 bytes)' if kind == 'zero-byte' else
                   'truncated or corrupt checkpoint')


def test_a_full_disk_during_a_checkpoint_save_says_enospc(tmp_path, monkeypatch):
    """torch.save reports a failed write as ``RuntimeError: [enforce fail ...]``."""
    from mmdense.fileio import checkpoint as module
    original_fdopen = os.fdopen

    class FullDisk:

        def __init__(self, file):
            self.file, self.written = file, 0

        def write(self, data):
            if self.written + len(data) > 4096:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.written += len(data)
            return self.file.write(data)

        def __getattr__(self, name):
            return getattr(self.file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    monkeypatch.setattr(module.os, 'fdopen', lambda *a, **k: FullDisk(original_fdopen(*a, **k)))
    out = tmp_path / 'backbone.pth'
    with pytest.raises(OSError, match=f'cannot write {out}: No space left on device') as error:
        module.torch_save_atomically({'w': torch.zeros(10000)}, out)
    assert error.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == []


MISTYPED_OPTIONS = {
    # option: what the one error line says after "--cfg-options KEY: "
    'model.backbone.dpeth=18':
        "ResNet (model.backbone) takes no argument 'dpeth' (did you mean 'depth'?)",
    'train_dataloader.dataset.data_rot=data/elsewhere':
        "UnlabeledImageDataset (train_dataloader.dataset) takes no argument 'data_rot' "
        "(did you mean 'data_root'?)",
    'train_dataloder.batch_size=2':
        "configs/slotcon/r18_toy.py has no top-level key 'train_dataloder' "
        "(did you mean 'train_dataloader'?)",
    'default_hooks.chekpoint.interval=1':
        "default_hooks has no key 'chekpoint' (did you mean 'checkpoint'?)",
    'train_dataloader.batch_sise=2':
        "train_dataloader has no key 'batch_sise' (did you mean 'batch_size'?)",
    'model.backbone.depth.layers=2': 'model.backbone.depth is 18, which has no key',
    'train_dataloader.dataset.pipeline.7.size=64':
        "train_dataloader.dataset.pipeline is a list of 3 items, '7' is not one of its indices",
}


@pytest.mark.parametrize('option', list(MISTYPED_OPTIONS))
def test_a_mistyped_cfg_option_stops_train_with_the_nearest_name(option, tmp_path, capsys):
    """Before: a ``TypeError`` traceback from the model or dataset constructor, or (a top-level
    key) a warning and a run without the option. ``load_from`` makes the old code stop early
    (with 'checkpoint not found') instead of training."""
    assert run_tool('tools/train.py', 'configs/slotcon/r18_toy.py', '--work-dir', tmp_path,
                    '--cfg-options', option, f'load_from={tmp_path}/missing.pth') == 2
    key = option.split('=')[0]
    one_error_line(capsys, f'error: --cfg-options {key}: {MISTYPED_OPTIONS[option]}')


def test_every_tool_with_cfg_options_checks_them(capsys):
    """print_config, check_transfer (an mmseg config: UPerHead hands its ``**kwargs`` to
    BaseDecodeHead), browse_dataset and the downstream tools share ``load_config``."""
    assert run_tool('tools/misc/print_config.py', 'configs/dino/vit-s_toy.py', '--cfg-options',
                    'model.backbone.drop_path_rat=0.1') == 2
    one_error_line(capsys, "(model.backbone) takes no argument 'drop_path_rat' "
                   "(did you mean 'drop_path_rate'?)")
    assert run_tool('tools/analysis_tools/check_transfer.py',
                    'configs/benchmarks/mmsegmentation/toy/upernet_r18_toy.py', MISSING,
                    '--cfg-options', 'model.decode_head.num_clases=5') == 2
    one_error_line(capsys, "UPerHead (model.decode_head) takes no argument 'num_clases' "
                   "(did you mean 'num_classes'?)")


VALID_OPTIONS = [
    'model.backbone.drop_path_rate=0.1',  # an argument the config does not set
    'model.backbone.layer_cfgs.qkv_bias=False',  # an argument the config lacks, a key below it
    'optim_wrapper.paramwise_cfg.norm_decay_mult=0.0',  # read by the wrapper's constructor
    'param_scheduler.0.convert_to_iter_based=True',  # read by the runner
    'train_dataloader.pin_memory=True',  # a DataLoader argument
    'default_hooks.checkpoint.max_keep_ckpts=1',
    'env_cfg.cudnn_benchmark=False',
    'randomness.deterministic=True',
    'fast_path.bf16=False',
    'compile=True',  # a key the runner reads that the config does not set
    'my_note=hello',  # a new top-level key close to nothing: warned about only
]


def test_valid_cfg_options_pass(capsys):
    assert run_tool('tools/misc/print_config.py', 'configs/dino/vit-s_toy.py', '--cfg-options',
                    *VALID_OPTIONS) == 0
    out, err = capsys.readouterr()
    assert 'pin_memory=True' in out and "my_note = 'hello'" in out
    assert err.strip() == ('warning: --cfg-options my_note: configs/dino/vit-s_toy.py has no '
                           "top-level key 'my_note' and nothing reads it")
    assert "no top-level key 'my_note' and nothing reads it" in err


class _Base:

    def __init__(self, depth, width=1):
        pass


class _HandsOn(_Base):

    def __init__(self, extra=0, **kwargs):
        super().__init__(**kwargs)


class _KeepsSome(_Base):

    def __init__(self, **kwargs):
        self.scale = kwargs.pop('scale', 1)
        super().__init__(**kwargs)


def test_accepted_arguments_follow_kwargs_handed_to_the_base_class():
    from mmdense.utils.cli import accepted_arguments
    assert accepted_arguments(_Base) == {'depth', 'width'}
    assert accepted_arguments(_HandsOn) == {'extra', 'depth', 'width'}
    assert accepted_arguments(_KeepsSome) is None  # reads kwargs itself: cannot be told
    from mmpretrain.models import VisionTransformer

    from mmdense.models.backbones.vit_cp import VisionTransformerCP
    vit_arguments = set(inspect.signature(VisionTransformer).parameters)
    assert accepted_arguments(VisionTransformerCP) == vit_arguments | {'with_cp'}
    assert accepted_arguments(torch.nn.Linear) == {'in_features', 'out_features', 'bias',
                                                   'device', 'dtype'}
