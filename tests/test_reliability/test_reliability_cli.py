"""Errors users can act on: every tool answers a user mistake with one ``error: ...`` line naming
the file and the reason, and exit status 2 (tracebacks are for bugs); damaged checkpoints and a
full disk are named; a mistyped top-level ``--cfg-options`` key is warned about."""
import errno
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
    from mmdense.engine.checkpoint import CheckpointReadError, read_checkpoint
    path = damaged(kind, tiny_models['dino'][1], tmp_path / f'{kind}.pth')
    with pytest.raises(CheckpointReadError, match=str(path)):
        read_checkpoint(str(path))
    assert run_tool('tools/model_converters/export.py', path, tmp_path / 'out.pth', '--target',
                    'mmdet') == 2
    one_error_line(capsys, path, 'empty (0 bytes)' if kind == 'zero-byte' else
                   'truncated or corrupt checkpoint')


def test_a_full_disk_during_a_checkpoint_save_says_enospc(tmp_path, monkeypatch):
    """torch.save reports a failed write as ``RuntimeError: [enforce fail ...]``."""
    from mmdense.engine import checkpoint as module
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
    with pytest.raises(OSError, match=f'writing {out} failed: No space left on device') as error:
        module.torch_save_atomically({'w': torch.zeros(10000)}, out)
    assert error.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == []


def test_a_mistyped_top_level_key_is_warned_about(tiny_models, tmp_path, capsys):
    config = tiny_models['dino'][0]
    assert run_tool('tools/train.py', config, '--work-dir', tmp_path, '--cfg-options',
                    'train_dataloder.batch_size=2', f'load_from={tmp_path}/missing.pth') == 2
    err = capsys.readouterr().err
    assert ("--cfg-options train_dataloder.batch_size: " in err
            and "has no top-level key 'train_dataloder'" in err
            and "did you mean 'train_dataloader'?" in err)
    assert f'checkpoint not found: {tmp_path}/missing.pth' in err
