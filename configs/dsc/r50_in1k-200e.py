# DSC (k-means semantic classes) ResNet-50 on ImageNet-1K, 200 epochs, 8 GPUs x 32 images.
_base_ = [
    '../_base_/datasets/imagenet_unlabeled.py',
    '../_base_/pipelines/two_view_geometry.py',
    '../_base_/models/dsc_r50.py',
    '../_base_/schedules/dsc_sgd.py',
    '../_base_/default_runtime.py',
]
train_dataloader = dict(batch_size=32, dataset=dict(pipeline={{_base_.train_pipeline}}))
# NHWC convolutions (tensor cores); remove to train in NCHW
custom_hooks = [dict(type='ChannelsLastHook')]
