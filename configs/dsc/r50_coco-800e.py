# DSC (k-means semantic classes) ResNet-50 on COCO train2017 (118k scene-centric images),
# 800 epochs, 8 GPUs x 32 images.
_base_ = [
    '../_base_/datasets/coco_unlabeled.py',
    '../_base_/pipelines/two_view_geometry.py',
    '../_base_/models/dsc_r50.py',
    '../_base_/schedules/dsc_sgd.py',
    '../_base_/default_runtime.py',
]
train_dataloader = dict(batch_size=32, dataset=dict(pipeline={{_base_.train_pipeline}}))

max_epochs = 800
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min=0.0, by_epoch=True, begin=0,
         end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
default_hooks = dict(checkpoint=dict(interval=50))
# NHWC convolutions (tensor cores); remove to train in NCHW
custom_hooks = [dict(type='ChannelsLastHook')]
