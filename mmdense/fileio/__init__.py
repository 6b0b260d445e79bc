"""File input/output below the models: atomic checkpoint writes and the work-dir lock, safe
weights-only checkpoint reads (:mod:`.checkpoint`), loading weights with a coverage check
(:mod:`.load_coverage`) and file digests (:mod:`.digest`)."""
from .checkpoint import (ATOMIC_BACKEND, MODEL_CONFIG_KEY, AtomicLocalBackend, CheckpointReadError,
                         OutputWriteError, UnsafeCheckpointError, WorkDirLockedError, lock_work_dir,
                         plain_copy, read_checkpoint, refuse_overwriting_inputs,
                         remove_stale_temporaries, stored_model_config, torch_save_atomically,
                         unlock_work_dir, write_atomically)
from .digest import sha256sum
from .load_coverage import (Coverage, PartialLoadError, checkpoint_weights, is_backbone_key,
                            load_weights, measure_coverage, module_prefix)

__all__ = [
    'ATOMIC_BACKEND', 'MODEL_CONFIG_KEY', 'AtomicLocalBackend', 'CheckpointReadError',
    'OutputWriteError', 'UnsafeCheckpointError', 'WorkDirLockedError', 'lock_work_dir',
    'plain_copy', 'read_checkpoint', 'refuse_overwriting_inputs', 'remove_stale_temporaries',
    'stored_model_config', 'torch_save_atomically', 'unlock_work_dir', 'write_atomically',
    'sha256sum', 'Coverage', 'PartialLoadError', 'checkpoint_weights', 'is_backbone_key',
    'load_weights', 'measure_coverage', 'module_prefix'
]
