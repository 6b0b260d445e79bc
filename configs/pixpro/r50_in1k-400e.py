# PixPro ResNet-50 on ImageNet-1K, 400 epochs, 8 GPUs x 128 images: the authors'
# tools/pixpro_base_r50_400ep.sh, whose settings are those of the 100-epoch script but --epochs.
_base_ = ['./r50_in1k-100e.py']

max_epochs = 400
param_scheduler = _base_.param_scheduler
param_scheduler[1].update(T_max=max_epochs - _base_.warmup_epochs, end=max_epochs)
train_cfg = dict(max_epochs=max_epochs)
