# DINO ViT-Ti/16 on the toy scenes for 30 epochs (540 iterations, 14-15 minutes on the idle 2-core
# CPU), with linear and kNN dense evaluation every 95 iterations: the toy run that shows the
# dense-evaluation learning curve (numbers in configs/dino/README.md). A ViT-Ti image costs a third
# of a ViT-S one here (median 1.59 s per 32-image step against 1.22 s per 8-image step of
# vit-s_toy.py), which pays for batch 32: at batch 8 the ViT-S loss stayed near ln K for 12
# epochs (README).
_base_ = ['./vit-s_toy.py']
model = dict(backbone=dict(arch='deit-tiny', drop_path_rate=0.0), head=dict(in_channels=192))
train_dataloader = dict(batch_size=32)

max_epochs = 30
warmup_epochs = 3
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=1e-6,
         by_epoch=True, begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingWeightDecay', eta_min=0.4, T_max=max_epochs, by_epoch=True,
         begin=0, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
dense_eval_hook = dict(type='DenseEvalHook', dataset='toy', interval=95, num_train=120,
                       num_val=40, img_size=96)
custom_hooks = [
    dict(type='FreezeLastLayerHook', module_prefixes=('head.last_layer', ), freeze_epochs=1),
    dict(dense_eval_hook, protocol='knn'),
    dict(dense_eval_hook, protocol='linear'),
]
default_hooks = dict(logger=dict(interval=5), checkpoint=dict(interval=5))
auto_scale_lr = dict(base_batch_size=32)
