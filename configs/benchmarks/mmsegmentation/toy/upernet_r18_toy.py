# The toy UperNet (upernet_vit-s16_toy.py: 128 px, 128-channel decoder, 100 iterations, AdamW)
# with a ResNet-18 (plain stem), for ResNet checkpoints (SlotCon, DSC toy runs); no layer decay
# (mmseg's ResNet reports no layer depths). Backbone init: tools/benchmarks/toy_transfer.py or
# --pretrained.
_base_ = './upernet_vit-s16_toy.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNet',
        depth=18,
        out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint=None)),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=1.0))
