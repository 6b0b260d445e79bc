# SlotCon ResNet-50 on ImageNet-1K, 200 epochs, 8 GPUs x 64 images: the official
# scripts/slotcon_imagenet_r50_200ep.sh (2048 prototypes).
_base_ = ['./r50_in1k-100e.py']

max_epochs = 200
param_scheduler = _base_.param_scheduler
param_scheduler[1].update(T_max=max_epochs - _base_.warmup_epochs, end=max_epochs)
train_cfg = dict(max_epochs=max_epochs)
