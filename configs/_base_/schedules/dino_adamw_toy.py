# DINO recipe of ./dino_adamw_100e.py cut to 1 epoch for the 2-core CPU toy runs (75 iterations
# at batch 8 on the toy scenes): lr 3e-4 (x batch/8), warm-up 0.2 epoch, prototype layer frozen
# for 0.1 epoch, and no teacher-temperature warm-up (the toy model configs set a constant one).
_base_ = ['./dino_adamw_100e.py']

max_epochs = 1
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=3e-4))  # fp32, also on a GPU
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, begin=0, end=0.2,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 0.2, eta_min=1e-6, by_epoch=True,
         begin=0.2, end=max_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingWeightDecay', eta_min=0.4, T_max=max_epochs, by_epoch=True,
         begin=0, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
custom_hooks = [
    dict(type='FreezeLastLayerHook', module_prefixes=('head.last_layer', ), freeze_epochs=0.1),
]
auto_scale_lr = dict(base_batch_size=8)
