from .freeze_last_layer import FreezeLastLayerHook
from .teacher_temp import TeacherTempWarmupHook

__all__ = ['FreezeLastLayerHook', 'TeacherTempWarmupHook']
