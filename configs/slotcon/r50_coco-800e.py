# SlotCon ResNet-50 on COCO train2017 (118k scene-centric images), 800 epochs, 8 GPUs x 64: the
# official scripts/slotcon_coco_r50_800ep.sh (256 prototypes).
_base_ = [
    '../_base_/datasets/coco_unlabeled.py',
    '../_base_/pipelines/two_view_geometry.py',
    '../_base_/models/slotcon_r50.py',
    '../_base_/schedules/slotcon_lars.py',
    '../_base_/default_runtime.py',
]
train_dataloader = dict(batch_size=64, dataset=dict(pipeline={{_base_.train_pipeline}}))

max_epochs = 800
param_scheduler = _base_.param_scheduler
param_scheduler[1].update(T_max=max_epochs - _base_.warmup_epochs, end=max_epochs)
train_cfg = dict(max_epochs=max_epochs)
default_hooks = dict(checkpoint=dict(interval=50))
# NHWC convolutions (tensor cores); remove to train in NCHW
custom_hooks = [dict(type='ChannelsLastHook')]
