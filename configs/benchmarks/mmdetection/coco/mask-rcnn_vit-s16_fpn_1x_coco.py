# COCO Mask R-CNN with a ViT-S/16 and FPN, 1x: the DINO / SelfPatch / ADCLR protocol.
# The outputs of blocks 3, 5, 7, 11 become a 4-level pyramid (x4: ConvTranspose-BN-GELU-
# ConvTranspose, x2: ConvTranspose, x1, x1/2: MaxPool) feeding an FPN 4 x 384 -> 256 (ViTPyramid);
# AdamW lr 5e-5, wd 0.05 (none on pos_embed, cls_token, norms and biases), drop-path 0.05,
# 1000-iteration warm-up, steps 8/11, AMP, 8 GPUs x 2 images.
# Reported: DINO 40.8 APb / 37.3 APm, SelfPatch 42.1 / 38.5, ADCLR 44.3 / 39.7.
# Backbone: an export for mmdet (export.py --target mmdet), set by
# tools/benchmarks/mmdetection/train.sh CONFIG EXPORTED.pth GPUS.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmdense.transfer'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='ViTPyramid',
        arch='deit-small',
        patch_size=16,
        img_size=224,  # the pretraining size; pos_embed is resized to each input
        drop_path_rate=0.05,
        out_indices=(3, 5, 7, 11),
        adapter_norm_cfg=dict(type='SyncBN', requires_grad=True),
        init_cfg=dict(type='Pretrained', checkpoint=None)),
    neck=dict(in_channels=[384, 384, 384, 384]))

optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    constructor='LayerDecayOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=5e-5, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(layer_decay_rate=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
train_dataloader = dict(batch_size=2)
