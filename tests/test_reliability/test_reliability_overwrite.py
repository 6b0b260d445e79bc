"""No file lost to an argument mistake, a full disk, a killed save or a second run: outputs that
are inputs are refused, result files are replaced atomically, temporaries a killed save left are
removed, and a work dir held by a live run is refused."""
import errno
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
    assert f'cannot write {out}: No space left on device' in error
    assert json.loads(out.read_text()) == dict(results='previous')

    assert run_tool('tools/misc/build_nn_pairs.py', config, checkpoint, '--out', out, '--topk',
                    2, '--img-size', 64, '--num-workers', 0, '--data-root', toy_root) == 2
    assert 'No space left on device' in capsys.readouterr().err
    assert json.loads(out.read_text()) == dict(results='previous')
    assert sorted(os.listdir(full_disk)) == ['filler', 'previous.json']  # no temporary left

    exported = full_disk / 'backbone.pth'
    assert run_tool('tools/model_converters/export.py', checkpoint, exported, '--target',
                    'mmdet') == 2
    assert f'cannot write {exported}: No space left on device' in capsys.readouterr().err
    assert sorted(os.listdir(full_disk)) == ['filler', 'previous.json']


@pytest.fixture
def torchvision_resnet(tmp_path_factory):
    """A torchvision ResNet-18 state dict, saved as torchvision's own weights are."""
    import torch
    import torchvision
    path = tmp_path_factory.mktemp('torchvision') / 'resnet18.pth'
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def tool_writing(tool, out, tiny_models, toy_root, torchvision_resnet):
    """The command line of ``tool`` writing its result to ``out``."""
    config, checkpoint = tiny_models['dino']
    return {
        'export': ['tools/model_converters/export.py', checkpoint, out, '--target', 'mmdet'],
        'import_weights': ['tools/model_converters/import_weights.py', torchvision_resnet, out,
                           '--from', 'torchvision'],
        'test_dense': ['tools/test_dense.py', config, checkpoint, '--protocol', 'dispersion',
                       '--data-root', toy_root, '--num-val', 2, '--img-size', 64, '--out', out],
        'build_nn_pairs': ['tools/misc/build_nn_pairs.py', config, checkpoint, '--out', out,
                           '--topk', 2, '--img-size', 64, '--num-workers', 0, '--data-root',
                           toy_root],
    }[tool]


OUTPUTS = {'export': 'previous.pth', 'import_weights': 'previous.pth',
           'test_dense': 'previous.json', 'build_nn_pairs': 'previous.json'}


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder holding ``previous.json`` and ``previous.pth`` where no file can be created, and
    the reason the OS gives: mode 0o555, or, for root (whom modes do not stop), a tmpfs mounted
    read-only (skipped where it cannot be mounted)."""
    folder = tmp_path / 'read_only'
    folder.mkdir()
    as_root = os.geteuid() == 0
    if as_root and subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=64k', 'tmpfs',
                                   str(folder)], capture_output=True).returncode != 0:
        pytest.skip('root, and cannot mount a tmpfs here: no read-only folder')
    try:
        (folder / 'previous.json').write_text(json.dumps(dict(results='previous')))
        (folder / 'previous.pth').write_bytes(b'previous weights')
        if as_root:
            subprocess.run(['mount', '-o', 'remount,ro', str(folder)], check=True)
        else:
            folder.chmod(0o555)
        yield folder, os.strerror(errno.EROFS if as_root else errno.EACCES)
    finally:
        if as_root:
            subprocess.run(['umount', str(folder)])
        else:
            folder.chmod(0o755)


@pytest.mark.parametrize('tool', list(OUTPUTS))
def test_an_output_in_a_read_only_folder_is_named_as_given(tool, read_only_folder, tiny_models,
                                                           toy_root, torchvision_resnet,
                                                           capsys):
    """Before: ``[Errno 13] Permission denied: '.../.previous.pth.18596.6m4t_6fo.tmp'``, the
    hidden temporary file's name."""
    folder, reason = read_only_folder
    out = folder / OUTPUTS[tool]
    before = {name: digest(folder / name) for name in os.listdir(folder)}
    assert run_tool(*tool_writing(tool, out, tiny_models, toy_root, torchvision_resnet)) == 2
    (line, ) = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert line == f'error: cannot write {out}: folder {folder} is not writable ({reason})'
    assert {name: digest(folder / name) for name in os.listdir(folder)} == before


@pytest.mark.parametrize('tool', list(OUTPUTS))
def test_an_output_below_a_file_names_that_file(tool, tmp_path, tiny_models, toy_root,
                                                torchvision_resnet, capsys):
    """A parent folder that is a file (as root too). Before: ``[Errno 20] Not a directory:
    '/abs/notes.txt/results'``."""
    notes = tmp_path / 'notes.txt'
    notes.write_text('not a folder')
    out = notes / 'results' / OUTPUTS[tool]
    assert run_tool(*tool_writing(tool, out, tiny_models, toy_root, torchvision_resnet)) == 2
    (line, ) = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert line == f'error: cannot write {out}: {notes} is a file, not a folder'
    assert notes.read_text() == 'not a folder'


PERMISSION_DENIED = '''
import sys
from mmdense.fileio.checkpoint import write_atomically
write_atomically(b'new', sys.argv[1])
'''


def test_a_folder_without_write_permission_as_root_without_privileges(tmp_path):
    """Mode 0o555 refuses root too once its capabilities are dropped (``setpriv``): the real
    ``EACCES``, in a real process."""
    folder = tmp_path / 'no_write'
    folder.mkdir()
    (folder / 'previous.json').write_text('previous')
    folder.chmod(0o555)
    prefix = ['setpriv', '--inh-caps=-all', '--bounding-set=-all'] if os.geteuid() == 0 else []
    try:
        result = subprocess.run(prefix + [sys.executable, '-c', PERMISSION_DENIED,
                                          str(folder / 'previous.json')],
                                cwd=ROOT, capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip('root, and no setpriv to drop its privileges')
    finally:
        folder.chmod(0o755)
    assert result.returncode != 0
    assert (f'OutputWriteError: cannot write {folder}/previous.json: folder {folder} is not '
            'writable (Permission denied)') in result.stderr
    assert os.listdir(folder) == ['previous.json'] and (folder / 'previous.json').read_text() \
        == 'previous'


def test_the_longest_name_the_folder_allows_can_be_written(tmp_path):
    """The temporary's name is cut to fit. Before: ``[Errno 36] File name too long`` naming
    the temporary, for a name the folder allows."""
    from mmdense.fileio.checkpoint import OutputWriteError, write_atomically
    longest = tmp_path / ('n' * (os.pathconf(tmp_path, 'PC_NAME_MAX') - len('.json')) + '.json')
    write_atomically(b'{}', longest)
    assert os.listdir(tmp_path) == [longest.name] and longest.read_bytes() == b'{}'
    too_long = tmp_path / ('n' + longest.name)
    with pytest.raises(OutputWriteError) as error:
        write_atomically(b'{}', too_long)
    assert str(error.value) == f'cannot write {too_long}: File name too long'
    assert os.listdir(tmp_path) == [longest.name]


KILLED_SAVE = '''
import os, signal, sys
from mmdense.fileio.checkpoint import _replace_atomically
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
from mmdense.fileio.checkpoint import lock_work_dir
lock_work_dir(sys.argv[1])
print('locked', flush=True)
time.sleep(120)
'''


def test_a_work_dir_held_by_a_live_run_is_refused(tmp_path):
    from mmdense.fileio.checkpoint import WorkDirLockedError
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
