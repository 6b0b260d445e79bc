"""Checkpoints: an interrupted save leaves the previous checkpoint loadable; a run of every
algorithm of ``algorithm_table.py`` killed after a checkpoint and resumed reproduces the
uninterrupted run's losses exactly on CPU."""
import builtins
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

import mmdense  # noqa: F401
from algorithm_table import ALGORITHMS, tiny_config
from helpers import ROOT, run_train, train_linear


class SimulatedCrash(Exception):
    """Stands in for the process dying in the middle of a write."""


def crash_on_call(number, monkeypatch, module, name, make_crashing):
    """Patch ``module.name`` so that its ``number``-th call crashes as ``make_crashing`` says."""
    original = getattr(module, name, None) or builtins.open
    calls = []

    def patched(*args, **kwargs):
        calls.append(args)
        if len(calls) == number:
            return make_crashing(original, *args, **kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, patched, raising=False)


def test_crash_mid_save_keeps_previous_checkpoint_loadable(tmp_path, monkeypatch):
    def fsync_then_crash(original, fd):
        raise SimulatedCrash  # data written to the temporary file, not yet renamed

    # fsync calls: iter_2.pth, last_checkpoint, iter_4.pth
    crash_on_call(3, monkeypatch, os, 'fsync', fsync_then_crash)
    with pytest.raises(SimulatedCrash):
        train_linear(tmp_path, 4)
    assert not (tmp_path / 'iter_4.pth').exists()
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_2.pth')
    ckpt = torch.load(tmp_path / 'iter_2.pth', map_location='cpu')  # weights_only by default
    assert ckpt['meta']['iter'] == 2
    assert not [name for name in os.listdir(tmp_path) if name.endswith('.tmp')]


def test_atomic_checkpoints_get_the_usual_file_permissions(tmp_path):
    """The temporary file is created 0o600; the checkpoint gets 0o666 less the umask, as a
    plain open() would give it (so a shared work dir stays readable by the group)."""
    umask = os.umask(0o022)
    try:
        train_linear(tmp_path, 4)
    finally:
        os.umask(umask)
    for name in ('iter_4.pth', 'last_checkpoint'):
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o644, name


def test_plain_checkpoint_hook_loses_everything_in_the_same_crash(tmp_path, monkeypatch):
    """Why the hook exists: mmengine deletes the old checkpoint first and writes in place."""
    from mmengine.fileio.backends import local_backend

    def open_half_written(original, path, mode='r', *args, **kwargs):
        class HalfWriter:
            def __enter__(self):
                self.file = original(path, mode, *args, **kwargs)
                return self

            def write(self, data):
                self.file.write(data[:len(data) // 2])
                raise SimulatedCrash

            def __exit__(self, *exc):
                self.file.close()
        return HalfWriter()

    # LocalBackend.put opens iter_2.pth, then iter_4.pth
    crash_on_call(2, monkeypatch, local_backend, 'open', open_half_written)
    with pytest.raises(SimulatedCrash):
        train_linear(tmp_path, 4, 'CheckpointHook')
    assert not (tmp_path / 'iter_2.pth').exists()
    with pytest.raises(Exception):
        torch.load(tmp_path / 'iter_4.pth', map_location='cpu')


KILL_HOOK = '''
import os
from mmengine.hooks import Hook
from mmdense.registry import HOOKS


@HOOKS.register_module()
class KillAfterIter(Hook):
    """Ends the process like SIGKILL right after iteration KILL_AFTER (1-based) is saved."""
    priority = 'LOWEST'

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == int(os.environ['KILL_AFTER']):
            os._exit(137)
'''


def reliability_config(algorithm, toy_root, max_iters):
    """``RNGStateHook`` comes from the default runtime; checkpoints every 3 iterations."""
    cfg = tiny_config(algorithm, toy_root, max_iters)
    cfg.default_hooks.checkpoint = dict(type='AtomicCheckpointHook', by_epoch=False, interval=3)
    return cfg


def logged_losses(work_dir):
    losses = []
    for run in sorted(p for p in work_dir.iterdir() if (p / 'vis_data/scalars.json').exists()):
        with open(run / 'vis_data/scalars.json') as f:
            losses += [(entry['step'], entry['loss']) for entry in map(json.loads, f)
                       if 'loss' in entry]
    return losses


@pytest.mark.parametrize('algorithm', list(ALGORITHMS))
def test_resume_after_kill_is_bit_exact(algorithm, toy_root, tmp_path):
    """Killed after iteration 3 (checkpointed) and resumed, the run logs the straight run's
    6 losses exactly. (DSC: its queue and pointer are checkpointed buffers, and the batch
    k-means is seeded from the momentum encoder's checkpointed step count.)"""
    straight = tmp_path / 'straight.py'
    reliability_config(algorithm, toy_root, max_iters=6).dump(str(straight))
    run_train(str(straight), str(tmp_path / 'straight'))

    (tmp_path / 'kill_after_iter.py').write_text(KILL_HOOK)
    killed_cfg = reliability_config(algorithm, toy_root, max_iters=6)
    killed_cfg.custom_hooks += [dict(type='KillAfterIter')]
    imports = killed_cfg.get('custom_imports', {})  # the algorithm's own imports stay
    killed_cfg.custom_imports = dict(imports, imports=[*imports.get('imports', []),
                                                       'kill_after_iter'])
    killed = tmp_path / 'killed.py'
    killed_cfg.dump(str(killed))
    python_path = [str(tmp_path), *filter(None, [os.environ.get('PYTHONPATH')])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(python_path), KILL_AFTER='3')
    result = subprocess.run([sys.executable, osp.join(ROOT, 'tools/train.py'), str(killed),
                             '--work-dir', str(tmp_path / 'split')], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 137, result.stderr[-3000:]
    assert (tmp_path / 'split/iter_3.pth').exists()
    run_train(str(straight), str(tmp_path / 'split'), '--resume')

    expected = logged_losses(tmp_path / 'straight')
    assert [step for step, _ in expected] == [1, 2, 3, 4, 5, 6]
    assert logged_losses(tmp_path / 'split') == expected  # float equality, no tolerance
    state = torch.load(tmp_path / 'split/iter_6.pth', map_location='cpu')['state_dict']
    assert int(state['teacher.steps']) == 6
    if algorithm == 'DSC':  # the 20-key queue wrapped around: 8 keys per iteration
        assert int(state['queue_ptr']) == 6 * 8 % 20 and state['queue'].shape == (20, 16)
