# PixPro ResNet-50 on COCO train2017 (118,287 scene-centric images), 8 GPUs x 128 images. The
# authors published ImageNet-1K pretraining only (contrast/option.py --dataset accepts
# 'ImageNet' alone; their COCO numbers are detection fine-tuning of the ImageNet models), so this
# is NOT an authors' recipe: it is ./r50_in1k-100e.py with the data set changed and the schedule
# kept at the same number of optimizer steps. ImageNet-1K (1,281,167 images) at a total batch of
# 1024 is 1251 steps an epoch, 125,100 in 100 epochs; COCO is 115 steps an epoch, so 1088 epochs
# (125,120 steps), and the warm-up stays 5 % of the run (54.4 epochs, 6256 steps; 6255 in the
# ImageNet recipe). The lr, momentum and teacher-momentum schedules then follow the same curve
# over the same steps.
_base_ = ['./r50_in1k-100e.py']

# the data set of ../_base_/datasets/coco_unlabeled.py
train_dataloader = dict(dataset=dict(data_root='data/coco/', data_prefix='train2017/'))

max_epochs = 1088
warmup_epochs = max_epochs * 5 / 100
param_scheduler = _base_.param_scheduler
param_scheduler[0].update(end=warmup_epochs)
param_scheduler[1].update(T_max=max_epochs - warmup_epochs, begin=warmup_epochs, end=max_epochs)
train_cfg = dict(max_epochs=max_epochs)
default_hooks = dict(checkpoint=dict(interval=100))
