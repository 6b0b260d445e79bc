# ADE20K FCN R50-D8, 512 x 512, 80k iterations (SlotCon protocol; SlotCon reports 39.0).
# mmseg's base uses ResNetV1c (deep stem) with pretrained='open-mmlab://resnet50_v1c': an SSL
# ResNet-50 has a plain stem, so the backbone is a plain ResNet and that pretrained is removed.
# Backbone: an export (export.py --target mmseg), set by
# tools/benchmarks/mmsegmentation/train.sh CONFIG EXPORTED.pth GPUS. 4 GPUs x 4 images.
_base_ = 'mmseg::fcn/fcn_r50-d8_4xb4-80k_ade20k-512x512.py'
custom_imports = dict(imports=['mmdense.transfer'], allow_failed_imports=False)

model = dict(
    pretrained=None,
    backbone=dict(type='ResNet', init_cfg=dict(type='Pretrained', checkpoint=None)))
