# PixPro sized for the 2-core CPU on the toy scenes: ResNet-18, two 128 px views (4x4 feature
# maps), a 1024-wide projector, batch 8, 3 epochs, fp32. The propagation, the positive threshold,
# the teacher momenta, LARS and the schedule shape are those of the R50 recipe. The lr is not the
# linear-scaling value (4.0 x 8/1024): LARS steps are relative to each layer's weight norm, and
# that value would leave a 3-epoch run almost unchanged (as configs/slotcon/r18_toy.py).
_base_ = ['./r50_in1k-100e.py']

# the data set of ../_base_/datasets/toy_scenes_unlabeled.py
train_pipeline = _base_.train_pipeline
train_pipeline[1].global_crops.update(size=128)
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    dataset=dict(data_root='data/toy_scenes/', data_prefix='', ann_file='meta/train.txt',
                 pipeline=train_pipeline))

model = dict(
    backbone=dict(depth=18),
    neck=dict(in_channels=512, hidden_channels=1024),
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
