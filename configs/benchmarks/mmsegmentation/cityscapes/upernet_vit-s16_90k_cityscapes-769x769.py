# Cityscapes UperNet with a ViT-S/16, 769 x 769, 90k iterations: the ADE20K ViT-S/16 recipe
# (../_base_/upernet_vit-s16.py: ViTPyramid adapter, AdamW 3e-5, wd 0.05, layer decay
# 0.9, 1500-iteration warm-up, poly) on Cityscapes' crops and schedule; 8 GPUs x 2 images,
# sliding-window test (stride 513).
_base_ = [
    '../_base_/upernet_vit-s16.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/datasets/cityscapes_769x769.py',
]
crop_size = (769, 769)
num_classes = 19
max_iters = 90000
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(img_size=768),
    decode_head=dict(num_classes=num_classes),
    auxiliary_head=dict(num_classes=num_classes),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(513, 513)))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=10000)
default_hooks = dict(checkpoint=dict(interval=10000))
train_dataloader = dict(batch_size=2)
