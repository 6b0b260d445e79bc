"""Exact resume: the global RNG states saved in checkpoints and restored on resume."""
import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.runner import IterBasedTrainLoop

from mmdense.registry import HOOKS


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
