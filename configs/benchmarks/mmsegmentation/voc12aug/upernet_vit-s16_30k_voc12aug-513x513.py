# PASCAL VOC 2012 + aug UperNet with a ViT-S/16, 513 x 513, 30k iterations: the ADE20K ViT-S/16
# recipe (../_base_/upernet_vit-s16.py: ViTPyramid adapter, AdamW 3e-5, wd 0.05, layer
# decay 0.9, 1500-iteration warm-up, poly) on VOC's crops (the FCN-D6 VOC pipeline) and
# schedule; 8 GPUs x 2 images, sliding-window test (stride 341).
_base_ = [
    '../_base_/upernet_vit-s16.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/datasets/pascal_voc12_aug.py',
]
crop_size = (513, 513)
num_classes = 21
max_iters = 30000
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(img_size=512),
    decode_head=dict(num_classes=num_classes),
    auxiliary_head=dict(num_classes=num_classes),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='Pad', size=crop_size),
    dict(type='PackSegInputs'),
]
voc_root = 'data/VOCdevkit/VOC2012'
train_dataloader = dict(
    batch_size=2,
    dataset=dict(datasets=[
        dict(type='PascalVOCDataset', data_root=voc_root,
             data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
             ann_file='ImageSets/Segmentation/train.txt', pipeline=train_pipeline),
        dict(type='PascalVOCDataset', data_root=voc_root,
             data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
             ann_file='ImageSets/Segmentation/aug.txt', pipeline=train_pipeline),
    ]))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=5000)
default_hooks = dict(checkpoint=dict(interval=5000))
