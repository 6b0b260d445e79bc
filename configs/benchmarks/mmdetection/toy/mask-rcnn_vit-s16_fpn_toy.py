# Mask R-CNN + FPN on the toy scenes with a ViT-S/16 pyramid backbone: the COCO ViT-S/16 recipe
# (mask-rcnn_vit-s16_fpn_1x_coco.py) shrunk for a 2-core CPU: 128 px images, anchors half the
# COCO size (objects are 15-70 px), 128-channel FPN and small heads (2 x 64-channel mask
# convs, 256-d box head), fewer proposals and RoIs, batch 4, 100 iterations with AdamW, one
# evaluation at the end (bbox and segm AP with mmdet's CocoMetric). BN in the mask head: without
# it the mask loss diverges under AdamW 1e-4 (1.9 -> 7.6 within 10 iterations from the DINO toy
# checkpoint); BN in the FPN as well slows the RPN down.
# The backbone init is set by tools/benchmarks/train_downstream.py --pretrained (or
# tools/benchmarks/toy_transfer.py); check it with tools/analysis_tools/check_transfer.py.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmdense.transfer'], allow_failed_imports=False)

data_root = 'data/toy_scenes/'
metainfo = dict(
    classes=('disc', 'square', 'triangle', 'star', 'ring', 'cross', 'ellipse', 'hexagon'),
    palette=[(230, 32, 32), (32, 98, 230), (65, 230, 32), (230, 217, 32), (131, 32, 230),
             (32, 230, 197), (230, 124, 32), (230, 32, 151)])  # mmdense.datasets.toy_scenes
img_scale = (128, 128)
max_iters = 100

model = dict(
    backbone=dict(
        _delete_=True,
        type='ViTPyramid',
        arch='deit-small',
        patch_size=16,
        img_size=img_scale[0],
        drop_path_rate=0.05,
        out_indices=(3, 5, 7, 11),
        adapter_norm_cfg=dict(type='BN'),
        init_cfg=dict(type='Pretrained', checkpoint=None)),
    neck=dict(in_channels=[384, 384, 384, 384], out_channels=128),
    rpn_head=dict(in_channels=128, feat_channels=128, anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=128),
        bbox_head=dict(in_channels=128, fc_out_channels=256, num_classes=8),
        mask_roi_extractor=dict(out_channels=128),
        mask_head=dict(num_convs=2, in_channels=128, conv_out_channels=64, num_classes=8,
                       norm_cfg=dict(type='BN'))),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(max_per_img=30)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='CocoDataset',
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='images/train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=0),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='CocoDataset',
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='images/val/'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val.json',
    metric=['bbox', 'segm'])
test_evaluator = val_evaluator

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='LayerDecayOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(layer_decay_rate=1.0),
    clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=16),
    dict(type='CosineAnnealingLR', T_max=max_iters - 16, by_epoch=False, begin=16,
         end=max_iters),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1),
    visualization=dict(type='DetVisualizationHook', draw=False))
log_processor = dict(by_epoch=False)
