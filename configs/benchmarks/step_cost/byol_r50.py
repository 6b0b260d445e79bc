# Step cost, ResNet-50 group, baseline: mmpretrain's BYOL (built from mmpretrain's registry, the
# parent of mmdense's), with the same views and batch as the SlotCon and DSC step-cost configs:
# 2 overlapping views of 128 px (BYOL photometric augmentation), 8 images per step, toy scenes,
# fp32. The model is the BYOL R50 recipe: 4096-256 projector and predictor MLPs, cosine-EMA
# target network from 0.99, symmetric loss; LARS (trust ratio and weight decay off for BN and
# bias parameters, like SlotCon's), lr 4.8 x 8/4096, wd 1.5e-6.
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

mlp = dict(type='NonLinearNeck', hid_channels=4096, out_channels=256, num_layers=2,
           with_bias=True, with_last_bn=False)
model = dict(
    type='BYOL',
    data_preprocessor=dict(
        type='SelfSupDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(type='ResNet', depth=50, out_indices=(3, ), style='pytorch',
                  zero_init_residual=False),
    neck=dict(**mlp, in_channels=2048, with_avg_pool=True),
    head=dict(type='LatentPredictHead',
              predictor=dict(**mlp, in_channels=256, with_avg_pool=False),
              loss=dict(type='CosineSimilarityLoss')),
    base_momentum=0.01,  # mmpretrain CosineEMA convention: target momentum 1 - 0.01 -> 1
)
one_dim_params = dict(decay_mult=0.0, lars_exclude=True)
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='LARS', lr=4.8 * 8 / 4096, momentum=0.9, weight_decay=1.5e-6),
    paramwise_cfg=dict(custom_keys={
        '.bias': one_dim_params,
        'bn': one_dim_params,
        'downsample.1': one_dim_params,
    }))
train_cfg = dict(type='IterBasedTrainLoop', max_iters=100)
sync_bn = 'torch'
