# UperNet on the toy scenes (9 classes: background + 8 shapes) with a ViT-S/16 pyramid backbone:
# the ADE20K ViT-S/16 recipe (upernet_vit-s16_160k_ade20k-512x512.py: layer decay 0.9, AdamW)
# shrunk for a 2-core CPU: 128 px images, 128-channel decoder, batch 4, 100 iterations, one
# evaluation at the end (mIoU with mmseg's IoUMetric).
# The backbone init is set by tools/benchmarks/train_downstream.py --pretrained (or
# tools/benchmarks/toy_transfer.py); check it with tools/analysis_tools/check_transfer.py.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmdense.transfer'], allow_failed_imports=False)

data_root = 'data/toy_scenes/'
metainfo = dict(
    classes=('background', 'disc', 'square', 'triangle', 'star', 'ring', 'cross', 'ellipse',
             'hexagon'),
    palette=[(0, 0, 0), (230, 32, 32), (32, 98, 230), (65, 230, 32), (230, 217, 32),
             (131, 32, 230), (32, 230, 197), (230, 124, 32), (230, 32, 151)])
img_scale = (128, 128)
max_iters = 100
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    pretrained=None,
    data_preprocessor=dict(size=img_scale),
    backbone=dict(
        _delete_=True,
        type='ViTPyramid',
        arch='deit-small',
        patch_size=16,
        img_size=img_scale[0],
        drop_path_rate=0.1,
        out_indices=(3, 5, 7, 11),
        adapter_norm_cfg=norm_cfg,
        init_cfg=dict(type='Pretrained', checkpoint=None)),
    decode_head=dict(in_channels=[384, 384, 384, 384], channels=128, num_classes=9,
                     norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=384, channels=64, num_classes=9, norm_cfg=norm_cfg))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
dataset = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=metainfo,
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=False)
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        **dataset,
        data_prefix=dict(img_path='images/train', seg_map_path='semantic/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        **dataset,
        data_prefix=dict(img_path='images/val', seg_map_path='semantic/val'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='LayerDecayOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(layer_decay_rate=0.9))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=16),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=16, end=max_iters),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1),
    visualization=dict(type='SegVisualizationHook', draw=False))
log_processor = dict(by_epoch=False)
