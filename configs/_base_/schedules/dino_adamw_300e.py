# DINO recipe of ./dino_adamw_100e.py for 300 epochs with the teacher-temperature warm-up of the
# README's "boost" run (--teacher_temp 0.07 --warmup_teacher_temp_epochs 30): main_dino.py's
# τ_t in epoch e is np.linspace(0.04, 0.07, 30)[e] = 0.04 + 0.03·e/29 for e < 30 and 0.07 after,
# so it reaches 0.07 in epoch 29. TeacherTempWarmupHook ramps per iteration over 29 epochs: equal
# to DINO's value at the first iteration of every epoch, in between at most 0.03/29 above it.
_base_ = ['./dino_adamw_100e.py']

max_epochs = 300
warmup_epochs = _base_.warmup_epochs
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=1e-6, by_epoch=True,
         begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingWeightDecay', eta_min=0.4, T_max=max_epochs, by_epoch=True, begin=0,
         end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
custom_hooks = [
    dict(type='TeacherTempWarmupHook', start=0.04, end=0.07, warmup_epochs=29),
    dict(type='FreezeLastLayerHook', module_prefixes=('head.last_layer', ), freeze_epochs=1),
]
