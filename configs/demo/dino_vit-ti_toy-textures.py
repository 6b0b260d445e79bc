# `tools/demo.py --methods all`: DINO on the colour-free toy textures of the demo (96 px scenes,
# random hue per object), at a size that trains in a few CPU minutes: ViT-Ti/16 (deit-tiny, 6 x 6
# patch grid on the 96 px global crops), 2 x 96 + 4 x 48 px crops as configs/dino/vit-s_toy.py,
# batch 32, 3 epochs of 600 images (54 iterations), lr 5e-4 warmed up over the first epoch.
_base_ = ['../dino/vit-s_toy.py']

data_root = 'data/toy_textures/'
train_dataloader = dict(batch_size=32, dataset=dict(data_root=data_root))
model = dict(backbone=dict(arch='deit-tiny', drop_path_rate=0.0), head=dict(in_channels=192))

max_epochs = 3
warmup_epochs = 1
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = _base_.param_scheduler
param_scheduler[0].update(end=warmup_epochs)
param_scheduler[1].update(T_max=max_epochs - warmup_epochs, begin=warmup_epochs, end=max_epochs)
param_scheduler[2].update(T_max=max_epochs, end=max_epochs)
train_cfg = dict(max_epochs=max_epochs)
custom_hooks = [
    dict(type='FreezeLastLayerHook', module_prefixes=('head.last_layer', ), freeze_epochs=1),
]
default_hooks = dict(logger=dict(interval=5), checkpoint=dict(interval=max_epochs))
auto_scale_lr = dict(base_batch_size=32)
