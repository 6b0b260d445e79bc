# The toy Mask R-CNN (mask-rcnn_vit-s16_fpn_toy.py: 128 px, small heads, 100 iterations, AdamW)
# with a ResNet-18 (plain stem, BN in train mode, no frozen stage), for ResNet checkpoints
# (SlotCon, DSC toy runs). Backbone init: tools/benchmarks/toy_transfer.py or --pretrained.
_base_ = './mask-rcnn_vit-s16_fpn_toy.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNet',
        depth=18,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint=None)),
    neck=dict(in_channels=[64, 128, 256, 512]))
