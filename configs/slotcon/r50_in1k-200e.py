# SlotCon ResNet-50 on ImageNet-1K, 200 epochs, 8 GPUs x 64 images.
_base_ = ['./r50_in1k-100e.py']

max_epochs = 200
warmup_epochs = 5
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=0.0, by_epoch=True,
         begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
