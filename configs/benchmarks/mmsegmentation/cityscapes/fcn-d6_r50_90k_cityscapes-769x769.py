# Cityscapes FCN-D6 R50, 769 x 769, 90k iterations: the SlotCon protocol (reported 76.2).
# Plain ResNet-50 (no deep stem) with strides (1, 2, 2, 1) and dilations (1, 1, 1, 2) (output
# stride 16); FCN head of 256 channels, dilation 6, no input concat, no dropout, no auxiliary
# head; crops from (2049, 1025) at ratio 0.5-2; SGD 0.01, wd 1e-4, steps 63k / 81k; 8 GPUs x 2.
# Backbone: an export (export.py --target mmseg), set by
# tools/benchmarks/mmsegmentation/train.sh CONFIG EXPORTED.pth GPUS.
_base_ = 'mmseg::fcn/fcn-d6_r50-d16_4xb2-80k_cityscapes-769x769.py'
custom_imports = dict(imports=['mmdense.transfer'], allow_failed_imports=False)

max_iters = 90000
model = dict(
    pretrained=None,
    backbone=dict(type='ResNet', init_cfg=dict(type='Pretrained', checkpoint=None)),
    decode_head=dict(channels=256, concat_input=False, dropout_ratio=0.0),
    auxiliary_head=None)

optim_wrapper = dict(optimizer=dict(lr=0.01, weight_decay=1e-4))
param_scheduler = [
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters, milestones=[63000, 81000],
         gamma=0.1),
]
train_cfg = dict(max_iters=max_iters, val_interval=10000)
default_hooks = dict(checkpoint=dict(interval=10000))
train_dataloader = dict(batch_size=2)
