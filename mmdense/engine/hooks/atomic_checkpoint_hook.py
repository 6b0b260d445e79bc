"""Hooks that make checkpoints safe to write and exact to resume from."""
import os.path as osp
import random
from typing import Optional

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.runner import IterBasedTrainLoop

from mmdense.engine.checkpoint import ATOMIC_BACKEND, write_atomically
from mmdense.registry import HOOKS


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` whose saves can be interrupted without losing the last good checkpoint.

    Differences from mmengine 0.10.7's hook (same arguments):

    - checkpoints and ``last_checkpoint`` are written to a temporary file and renamed into place
      (:class:`~mmdense.engine.checkpoint.AtomicLocalBackend`), never left half-written;
    - with ``max_keep_ckpts``, the oldest checkpoint is removed *after* the new one is saved
      (mmengine removes it before, so a crash mid-save with ``max_keep_ckpts=1`` left nothing).

    Only local paths are supported; give ``backend_args`` to use another storage backend
    (writes are then as atomic as that backend makes them).
    """

    def __init__(self, *args, backend_args: Optional[dict] = None, **kwargs) -> None:
        super().__init__(*args, backend_args=backend_args or dict(backend=ATOMIC_BACKEND),
                         **kwargs)

    def _expire_oldest(self, runner, step: int) -> Optional[str]:
        """Record ``step`` among the kept checkpoints; return the path that falls out, if any."""
        if self.max_keep_ckpts <= 0 or (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            return None
        expired = None
        if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
            expired = self.file_backend.join_path(
                self.out_dir, self.filename_tmpl.format(self.keep_ckpt_ids.popleft()))
        self.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        return expired

    def _save_checkpoint_with_step(self, runner, step, meta):
        expired = self._expire_oldest(runner, step)
        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        if not is_main_process():
            return
        write_atomically(self.last_ckpt.encode(), osp.join(runner.work_dir, 'last_checkpoint'))
        if expired is not None:
            if self.file_backend.isfile(expired):
                self.file_backend.remove(expired)
            elif self.file_backend.isdir(expired):
                self.file_backend.rmtree(expired)


def get_rng_states() -> dict:
    """Python, numpy and torch (CPU and, where present, CUDA) global RNG states."""
    states = dict(python=random.getstate(), numpy=np.random.get_state(legacy=False),
                  torch=torch.get_rng_state())
    if torch.cuda.is_available():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    random.setstate(states['python'])
    np.random.set_state(states['numpy'])
    torch.set_rng_state(states['torch'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


class _RestoreAfterSkip:
    """Wraps the iteration-based loop's data iterator: lets the loop's resume fast-forward
    (which runs the data pipeline and so draws random numbers) pass, then restores the saved
    RNG states just before the first new batch is loaded, and unwraps itself."""

    def __init__(self, loop, states: dict) -> None:
        self.loop, self.states = loop, states
        self.iterator = loop.dataloader_iterator
        self.skips_left = loop.iter

    def __iter__(self):
        return self

    def __next__(self):
        if self.skips_left == 0:
            set_rng_states(self.states)
            self.loop.dataloader_iterator = self.iterator
        self.skips_left -= 1
        return next(self.iterator)


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Saves the global RNG states in every checkpoint and restores them on resume, so that a
    resumed run draws the same random numbers (crops, drop-path...) as an uninterrupted one.

    mmengine 0.10.7 re-seeds on resume instead, and its iteration-based loop fast-forwards the
    dataloader, so a resumed run's random draws differ from an uninterrupted run's. States are
    stored under ``checkpoint['meta']['rng_states']`` (plain tensors, arrays and ints, loadable
    with ``weights_only=True``). With data-loading workers, the workers' own RNGs are re-seeded by
    mmengine's ``worker_init_fn`` as in the uninterrupted run; only the main process's states are
    restored. Per-rank states are saved by rank 0 only, so restoring is exact on one process.
    """

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self._loaded_states = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault('meta', {})['rng_states'] = get_rng_states()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._loaded_states = checkpoint.get('meta', {}).get('rng_states')

    def before_train_epoch(self, runner) -> None:
        if self._loaded_states is None:
            return
        loop = runner.train_loop
        if isinstance(loop, IterBasedTrainLoop) and loop.iter > 0:
            loop.dataloader_iterator = _RestoreAfterSkip(loop, self._loaded_states)
        else:
            set_rng_states(self._loaded_states)
        self._loaded_states = None
