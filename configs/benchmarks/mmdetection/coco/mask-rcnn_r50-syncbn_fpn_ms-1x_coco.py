# COCO Mask R-CNN R50-FPN, multi-scale 1x, SyncBN: the DenseCL / SlotCon / DSC protocol.
# SyncBN in backbone, FPN, box head (4 shared convs + 1 fc) and mask head; no frozen stages, BN in
# train mode; train scales (1333, 640..800 step 32); SGD 0.02, wd 1e-4, 12 epochs, steps 8/11,
# 500-iteration warm-up, 8 GPUs x 2 images. SlotCon (COCO 800 ep) reports 41.0 APb / 37.0 APm.
# Backbone: an export for mmdet (tools/model_converters/export.py --target mmdet), set by
# tools/benchmarks/mmdetection/train.sh CONFIG EXPORTED.pth GPUS.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmdense.transfer'], allow_failed_imports=False)

norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(
        frozen_stages=-1,
        norm_cfg=norm_cfg,
        norm_eval=False,
        init_cfg=dict(type='Pretrained', checkpoint=None)),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(type='Shared4Conv1FCBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomChoiceResize',
         scales=[(1333, short) for short in range(640, 801, 32)],
         keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4))
