# DSC sized for the 2-core CPU demo on the toy scenes: ResNet-18, two 128 px views (4x4 pixel
# grids), 128-d embeddings, 16 k-means classes, 2 feature neighbours, queue of 512, batch 8,
# 3 epochs, fp32. Temperatures, loss weights, the momentum (0.999) and the lr rule (0.03 x
# batch/256) are those of the R50 recipe: a faster encoder (lr 0.05, momentum 0.99) outruns its
# queue and the global embeddings of all images collapse to one direction (configs/dsc/README.md).
_base_ = [
    '../_base_/datasets/toy_scenes_unlabeled.py',
    '../_base_/pipelines/two_view_geometry.py',
    '../_base_/models/dsc_r50.py',
    '../_base_/schedules/dsc_sgd.py',
    '../_base_/default_runtime.py',
]
# train_pipeline = [LoadRGBImage, MultiCropWithGeometry, PackMultiViewInputs]
train_pipeline = _base_.train_pipeline
train_pipeline[1].global_crops.update(size=128)
train_dataloader = dict(batch_size=8, num_workers=2, dataset=dict(pipeline=train_pipeline))

model = dict(
    backbone=dict(depth=18),
    neck=dict(in_channels=512, hid_channels=512, out_channels=128),
    queue_len=512,
    num_neighbours=2,
    num_classes=16,
)

max_epochs = 3
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=0.03 * 8 / 256))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min=0.0, by_epoch=True, begin=0,
         end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=1))
auto_scale_lr = dict(base_batch_size=8)
