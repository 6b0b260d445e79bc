# PASCAL VOC 2012 + aug FCN-D6 R50, 513 x 513, 30k iterations: the SlotCon protocol (reported
# 71.6). The Cityscapes FCN-D6 model (output stride 16, 256-channel head, dilation 6, no concat,
# dropout or auxiliary head) with 21 classes; SGD 0.003, wd 1e-4, steps 21k / 27k; 8 GPUs x 2.
# Backbone: an export (export.py --target mmseg), set by
# tools/benchmarks/mmsegmentation/train.sh CONFIG EXPORTED.pth GPUS.
_base_ = [
    'mmseg::_base_/models/fcn_r50-d8.py',
    'mmseg::_base_/datasets/pascal_voc12_aug.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_40k.py',
]
custom_imports = dict(imports=['mmdense.transfer'], allow_failed_imports=False)

crop_size = (513, 513)
max_iters = 30000
model = dict(
    pretrained=None,
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        type='ResNet',
        dilations=(1, 1, 1, 2),
        strides=(1, 2, 2, 1),
        init_cfg=dict(type='Pretrained', checkpoint=None)),
    decode_head=dict(channels=256, dilation=6, concat_input=False, dropout_ratio=0.0,
                     num_classes=21),
    auxiliary_head=None)

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

optim_wrapper = dict(optimizer=dict(lr=0.003, weight_decay=1e-4))
param_scheduler = [
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters, milestones=[21000, 27000],
         gamma=0.1),
]
train_cfg = dict(max_iters=max_iters, val_interval=5000)
default_hooks = dict(checkpoint=dict(interval=5000))
