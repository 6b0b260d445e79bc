# SlotCon ResNet-50 on ImageNet-1K, 100 epochs, 8 GPUs x 64 images: the official
# scripts/slotcon_imagenet_r50_100ep.sh (2048 prototypes).
_base_ = [
    '../_base_/datasets/imagenet_unlabeled.py',
    '../_base_/pipelines/two_view_geometry.py',
    '../_base_/models/slotcon_r50.py',
    '../_base_/schedules/slotcon_lars.py',
    '../_base_/default_runtime.py',
]
train_dataloader = dict(batch_size=64, dataset=dict(pipeline={{_base_.train_pipeline}}))
model = dict(head=dict(num_prototypes=2048))
# NHWC convolutions (tensor cores); remove to train in NCHW
custom_hooks = [dict(type='ChannelsLastHook')]
