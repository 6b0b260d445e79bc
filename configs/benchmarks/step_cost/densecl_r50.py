# Step cost, ResNet-50 group, baseline: mmpretrain's DenseCL (built from mmpretrain's registry,
# the parent of mmdense's), with the same views and batch as the SlotCon and DSC step-cost
# configs: 2 overlapping views of 128 px (BYOL photometric augmentation), 8 images per step,
# toy scenes, fp32. The model is the DenseCL R50 recipe: MoCo-v2 style query encoder and
# momentum key encoder (0.999), DenseCL neck (global + dense 128-d projections), 65536-key
# queues, temperature 0.2, loss weight 0.5; SGD lr 0.03 x 8/256, momentum 0.9, wd 1e-4.
_base_ = [
    '../../_base_/datasets/toy_scenes_unlabeled.py',
    '../../_base_/pipelines/two_view_geometry.py',
    '../../_base_/default_runtime.py',
]
# train_pipeline = [LoadRGBImage, MultiCropWithGeometry, PackMultiViewInputs]
train_pipeline = _base_.train_pipeline
train_pipeline[1].global_crops.update(size=128)
train_dataloader = dict(batch_size=8, num_workers=2, persistent_workers=False,
                        dataset=dict(pipeline=train_pipeline))

model = dict(
    type='DenseCL',
    data_preprocessor=dict(
        type='SelfSupDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(type='ResNet', depth=50, out_indices=(3, ), style='pytorch',
                  zero_init_residual=False),
    neck=dict(type='DenseCLNeck', in_channels=2048, hid_channels=2048, out_channels=128,
              num_grid=None),
    head=dict(type='ContrastiveHead', loss=dict(type='CrossEntropyLoss'), temperature=0.2),
    queue_len=65536,
    feat_dim=128,
    momentum=0.001,  # mmengine EMA convention: weight of the new parameters
    loss_lambda=0.5,
)
optim_wrapper = dict(
    type='OptimWrapper',
    # foreach: torch's default on CUDA, set here so that the CPU runs (and counts) the same step
    optimizer=dict(type='SGD', lr=0.03 * 8 / 256, momentum=0.9, weight_decay=1e-4, foreach=True))
train_cfg = dict(type='IterBasedTrainLoop', max_iters=100)
sync_bn = 'torch'
