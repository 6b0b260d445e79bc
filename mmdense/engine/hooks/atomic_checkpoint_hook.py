"""Hooks that make checkpoints safe to write and safe to load (exact resume:
:class:`~mmdense.engine.hooks.rng_state_hook.RNGStateHook`)."""
import logging
import os.path as osp
from typing import Optional

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.runner import find_latest_checkpoint

from mmdense.fileio.checkpoint import (ATOMIC_BACKEND, MODEL_CONFIG_KEY, lock_work_dir,
                                       plain_copy, remove_stale_temporaries, unlock_work_dir,
                                       write_atomically)
from mmdense.fileio.load_coverage import checkpoint_weights, is_backbone_key, measure_coverage
from mmdense.registry import HOOKS


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` whose saves can be interrupted without losing the last good checkpoint.

    Differences from mmengine 0.10.7's hook (same arguments):

    - checkpoints and ``last_checkpoint`` are written to a temporary file and renamed into place
      (:class:`~mmdense.fileio.checkpoint.AtomicLocalBackend`), never left half-written;
    - with ``max_keep_ckpts``, the oldest checkpoint is removed *after* the new one is saved
      (mmengine removes it before, so a crash mid-save with ``max_keep_ckpts=1`` left nothing);
    - before training, the main process locks the work dir (a second live run on it is refused
      instead of replacing this run's checkpoints) and removes the temporary files a killed save
      left in the work dir and the checkpoint folder;
    - every checkpoint records the model config as plain data (``meta.model_config``), so tools
      read the architecture without executing the config text in ``meta.cfg``.

    Only local paths are supported; give ``backend_args`` to use another storage backend
    (writes are then as atomic as that backend makes them).
    """

    def __init__(self, *args, backend_args: Optional[dict] = None, **kwargs) -> None:
        super().__init__(*args, backend_args=backend_args or dict(backend=ATOMIC_BACKEND),
                         **kwargs)

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if not is_main_process():
            return
        lock_work_dir(runner.work_dir)
        for folder in {runner.work_dir, self.out_dir}:
            for path in remove_stale_temporaries(folder):
                print_log(f'removed {path}, left by an interrupted save', logger='current',
                          level=logging.WARNING)

    def after_run(self, runner) -> None:
        if is_main_process():
            unlock_work_dir(runner.work_dir)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        model = runner.cfg.get('model')
        if not isinstance(model, dict):  # a runner built from a model instance
            return
        try:
            checkpoint.setdefault('meta', {})[MODEL_CONFIG_KEY] = plain_copy(model)
        except TypeError:  # a lazy-import config holding types: readers need the config file
            return

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


@HOOKS.register_module()
class CheckpointLoadGuardHook(Hook):
    """Checks every checkpoint the runner loads (``load_from``, ``resume``) before it reaches the
    model (``tools/train.py`` registers it).

    - Config text in ``meta.config`` is removed: mmengine 0.10.7's ``Runner.resume`` executes it
      (``Config.fromstring``) only to compare GPU ids, so a checkpoint could run code on resume.
    - The coverage of the state dict is logged and a partial load refused
      (:mod:`mmdense.fileio.load_coverage`): on resume the whole model must load; with
      ``load_from`` its backbones (the whole model if it has none), since heads may be new.
      ``allow_partial=True`` logs the refusal as a warning instead.
    """

    priority = 'VERY_HIGH'

    def __init__(self, allow_partial: bool = False) -> None:
        self.allow_partial = allow_partial

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.get('meta')
        if isinstance(meta, dict) and meta.pop('config', None) is not None:
            print_log('ignored the config text in the checkpoint\'s meta.config: config text '
                      'from a checkpoint is never executed', logger='current',
                      level=logging.WARNING)
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        resuming = runner._resume  # mmengine resumes iff resume=True (load_or_resume)
        has_backbone = any(is_backbone_key(k) for k in model.state_dict())
        required = None if resuming or not has_backbone else is_backbone_key
        part = 'the model' if required is None else 'the backbones'
        source = str(runner._load_from or find_latest_checkpoint(runner.work_dir))
        coverage = measure_coverage(model, checkpoint_weights(checkpoint, source), source,
                                    required, part)
        print_log(coverage.summary(), logger='current')
        problem = coverage.problem()
        if problem and self.allow_partial:
            print_log(f'{problem} (--allow-partial: going on)', logger='current',
                      level=logging.WARNING)
        else:
            coverage.check()
