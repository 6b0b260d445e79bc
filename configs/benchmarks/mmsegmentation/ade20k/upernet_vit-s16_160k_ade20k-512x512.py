# ADE20K UperNet with a ViT-S/16, 512 x 512, 160k iterations: the iBOT protocol
# (../_base_/upernet_vit-s16.py: ViTPyramid adapter, AdamW 3e-5, wd 0.05, layer decay 0.9,
# 1500-iteration warm-up, poly), 8 GPUs x 2 images, sliding-window test (stride 341).
# Reported (UperNet 160k): DINO 42.3, SelfPatch 43.2.
# Backbone: an export (export.py --target mmseg or mmdet; ViTPyramid reads both layouts), set
# by tools/benchmarks/mmsegmentation/train.sh CONFIG EXPORTED.pth GPUS.
_base_ = [
    '../_base_/upernet_vit-s16.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
]
num_classes = 150
max_iters = 160000
model = dict(
    data_preprocessor=dict(size=(512, 512)),
    backbone=dict(img_size=512),
    decode_head=dict(num_classes=num_classes),
    auxiliary_head=dict(num_classes=num_classes),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=16000)
train_dataloader = dict(batch_size=2)
