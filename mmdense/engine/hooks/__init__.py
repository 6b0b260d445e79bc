from .atomic_checkpoint_hook import AtomicCheckpointHook, CheckpointLoadGuardHook
from .channels_last import ChannelsLastHook
from .compile_backbone import CompileBackboneHook
from .dense_eval_hook import DenseEvalHook
from .freeze_last_layer import FreezeLastLayerHook
from .nan_guard_hook import NonFiniteLossHook
from .prototype_init import PrototypeInitHook
from .rng_state_hook import RNGStateHook
from .skipped_images import SkippedImagesHook
from .teacher_schedule import TeacherScheduleHook
from .teacher_temp import TeacherTempWarmupHook

__all__ = [
    'AtomicCheckpointHook', 'ChannelsLastHook', 'CheckpointLoadGuardHook', 'CompileBackboneHook',
    'DenseEvalHook', 'FreezeLastLayerHook', 'NonFiniteLossHook', 'PrototypeInitHook',
    'RNGStateHook', 'SkippedImagesHook', 'TeacherScheduleHook', 'TeacherTempWarmupHook'
]
