# SlotCon sized for the 2-core CPU demo on the toy scenes: ResNet-18, two 128 px views (4x4
# score maps), 32 prototypes, 1024-wide MLPs, batch 8, 3 epochs, fp32. Losses, temperatures,
# momenta, LARS and the schedule shape are those of the R50 recipe. The lr is not the linear-
# scaling value (1.0 x 8/256): LARS steps are relative to each layer's weight norm, and that value
# would leave a 3-epoch run almost unchanged.
_base_ = [
    '../_base_/datasets/toy_scenes_unlabeled.py',
    '../_base_/pipelines/two_view_geometry.py',
    '../_base_/models/slotcon_r50.py',
    '../_base_/schedules/slotcon_lars.py',
    '../_base_/default_runtime.py',
]
# train_pipeline = [LoadRGBImage, MultiCropWithGeometry, PackMultiViewInputs]
train_pipeline = _base_.train_pipeline
train_pipeline[1].global_crops.update(size=128)
train_dataloader = dict(batch_size=8, num_workers=2, dataset=dict(pipeline=train_pipeline))

model = dict(
    backbone=dict(depth=18),
    neck=dict(in_channels=512, hidden_channels=1024),
    head=dict(num_prototypes=32),
    predictor=dict(hidden_channels=1024),
)

max_epochs = 3
warmup_epochs = 0.5
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=1.0))
param_scheduler = _base_.param_scheduler
param_scheduler[0].update(end=warmup_epochs)
param_scheduler[1].update(T_max=max_epochs - warmup_epochs, begin=warmup_epochs, end=max_epochs)
train_cfg = dict(max_epochs=max_epochs)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=1))
auto_scale_lr = dict(base_batch_size=8)
