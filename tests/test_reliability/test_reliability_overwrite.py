"""No file lost to an argument mistake, a full disk, a killed save or a second run: outputs that
are inputs are refused, result files are replaced atomically, temporaries a killed save left are
removed, and a work dir held by a live run is refused."""
import hashlib
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest
from helpers import ROOT, run_tool, train_linear


def digest(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.mark.parametrize('tool', ['export', 'import_weights'])
def test_an_output_that_is_the_source_is_refused(tool, tiny_models, tmp_path, capsys):
    source = tmp_path / 'source.pth'
    source.write_bytes(open(tiny_models['dino'][1], 'rb').read())
    before = digest(source)
    args = (['tools/model_converters/export.py', source, source, '--target', 'mmdet']
            if tool == 'export' else
            ['tools/model_converters/import_weights.py', source, source, '--from', 'dino'])
    assert run_tool(*args) == 2
    assert 'is the same file as the source checkpoint' in capsys.readouterr().err
    assert digest(source) == before


def test_an_export_whose_sidecar_would_be_the_output_is_refused(tiny_models, tmp_path, capsys):
    out = tmp_path / 'out.json'
    assert run_tool('tools/model_converters/export.py', tiny_models['dino'][1], out, '--target',
                    'mmdet') == 2
    assert f'its sidecar {out} is the same file as the OUT' in capsys.readouterr().err
    assert not out.exists()


@pytest.fixture
def full_disk(tmp_path):
    """A 256 KiB tmpfs holding ``previous.json`` and filled to the last byte (needs root)."""
    mount = tmp_path / 'full'
    mount.mkdir()
    result = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', str(mount)],
                            capture_output=True)
    if result.returncode != 0:
        pytest.skip('cannot mount a tmpfs here (needs root)')
    try:
        (mount / 'previous.json').write_text(json.dumps(dict(results='previous')))
        with open(mount / 'filler', 'wb', buffering=0) as f:
            try:
                while True:
                    f.write(b'\0' * 4096)
            except OSError:
                pass
        yield mount
    finally:
        subprocess.run(['umount', str(mount)])


def test_a_full_disk_keeps_the_previous_results(full_disk, tiny_models, toy_root, capsys):
    out = full_disk / 'previous.json'
    config, checkpoint = tiny_models['dino']
    assert run_tool('tools/test_dense.py', config, checkpoint, '--protocol', 'dispersion',
                    '--data-root', toy_root, '--num-val', 2, '--img-size', 64, '--out', out) == 2
    error = capsys.readouterr().err
    assert f'writing {out} failed: No space left on device' in error
    assert json.loads(out.read_text()) == dict(results='previous')

    assert run_tool('tools/misc/build_nn_pairs.py', config, checkpoint, '--out', out, '--topk',
                    2, '--img-size', 64, '--num-workers', 0, '--data-root', toy_root) == 2
    assert 'No space left on device' in capsys.readouterr().err
    assert json.loads(out.read_text()) == dict(results='previous')
    assert sorted(os.listdir(full_disk)) == ['filler', 'previous.json']  # no temporary left

    exported = full_disk / 'backbone.pth'
    assert run_tool('tools/model_converters/export.py', checkpoint, exported, '--target',
                    'mmdet') == 2
    assert f'writing {exported} failed: No space left on device' in capsys.readouterr().err
    assert sorted(os.listdir(full_disk)) == ['filler', 'previous.json']


KILLED_SAVE = '''
import os, signal, sys
from mmdense.engine.checkpoint import _replace_atomically
def write(f):
    f.write(b'x' * 100000)
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
_replace_atomically(sys.argv[1], write)
'''


def test_a_killed_save_leaves_a_temporary_that_the_next_run_removes(tmp_path):
    work = tmp_path / 'work'
    work.mkdir()
    result = subprocess.run([sys.executable, '-c', KILLED_SAVE, str(work / 'iter_2.pth')],
                            cwd=ROOT)
    assert result.returncode == -signal.SIGKILL
    (stale, ) = [name for name in os.listdir(work) if name.endswith('.tmp')]
    assert stale.startswith('.iter_2.pth.') and os.path.getsize(work / stale) == 100000
    live = work / f'.iter_4.pth.{os.getpid()}.abcdefgh.tmp'  # a writer that still runs
    live.write_bytes(b'partial')
    train_linear(work)
    assert not (work / stale).exists()
    assert live.exists()
    assert (work / 'iter_2.pth').exists()


HOLD_LOCK = '''
import sys, time
from mmdense.engine.checkpoint import lock_work_dir
lock_work_dir(sys.argv[1])
print('locked', flush=True)
time.sleep(120)
'''


def test_a_work_dir_held_by_a_live_run_is_refused(tmp_path):
    from mmdense.engine.checkpoint import WorkDirLockedError
    work = tmp_path / 'work'
    holder = subprocess.Popen([sys.executable, '-c', HOLD_LOCK, str(work)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        with pytest.raises(WorkDirLockedError, match=f'in use by another run \\(pid {holder.pid}'):
            train_linear(work)
        assert not (work / 'iter_2.pth').exists()
    finally:
        holder.kill()
        holder.wait()
    deadline = time.time() + 10
    while time.time() < deadline and osp.exists(f'/proc/{holder.pid}'):
        time.sleep(0.1)
    train_linear(work)  # the lock dies with its process
    assert (work / 'iter_2.pth').exists()
