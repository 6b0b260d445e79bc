from .freeze_last_layer import FreezeLastLayerHook
from .teacher_temp import TeacherTempWarmupHook

__all__ = ['FreezeLastLayerHook', 'TeacherTempWarmupHook']
from .dense_eval_hook import DenseEvalHook  # noqa: E402,F401
__all__ += ['DenseEvalHook']
from .atomic_checkpoint_hook import AtomicCheckpointHook, CheckpointLoadGuardHook  # noqa: E402,F401
__all__ += ['AtomicCheckpointHook', 'CheckpointLoadGuardHook']
from .rng_state_hook import RNGStateHook  # noqa: E402,F401
__all__ += ['RNGStateHook']
from .nan_guard_hook import NonFiniteLossHook  # noqa: E402,F401
__all__ += ['NonFiniteLossHook']
from .prototype_init import PrototypeInitHook  # noqa: E402,F401
__all__ += ['PrototypeInitHook']
from .skipped_images import SkippedImagesHook  # noqa: E402,F401
__all__ += ['SkippedImagesHook']
from .channels_last import ChannelsLastHook  # noqa: E402,F401
__all__ += ['ChannelsLastHook']
from .compile_backbone import CompileBackboneHook  # noqa: E402,F401
__all__ += ['CompileBackboneHook']
