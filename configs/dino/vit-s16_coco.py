# DINO ViT-S/16 on COCO train2017 (118k scene-centric images), 8 GPUs x 64 images.
# 800 epochs (~185k iterations), the COCO schedule dense methods compare at (SlotCon, DenseCL).
_base_ = [
    '../_base_/datasets/coco_unlabeled.py',
    '../_base_/pipelines/dino_multicrop.py',
    '../_base_/models/dino_vit-s16.py',
    '../_base_/schedules/dino_adamw_100e.py',
    '../_base_/default_runtime.py',
]
train_dataloader = dict(batch_size=64, dataset=dict(pipeline={{_base_.train_pipeline}}))

max_epochs = 800
warmup_epochs = 10
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=1e-6, by_epoch=True,
         begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingWeightDecay', eta_min=0.4, T_max=max_epochs, by_epoch=True, begin=0,
         end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
default_hooks = dict(checkpoint=dict(interval=50))
