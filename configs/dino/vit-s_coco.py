# DINO ViT-S/16 on COCO train2017 (118k scene-centric images), 8 GPUs x 64 images.
# 800 epochs (~185k iterations), the COCO schedule dense methods compare at (SlotCon, DenseCL).
_base_ = [
    '../_base_/datasets/coco_unlabeled.py',
    '../_base_/pipelines/dino_multicrop.py',
    '../_base_/models/dino_vit-s16.py',
    '../_base_/schedules/dino_adamw_800e.py',
    '../_base_/default_runtime.py',
]
train_dataloader = dict(batch_size=64, dataset=dict(pipeline={{_base_.train_pipeline}}))
default_hooks = dict(checkpoint=dict(interval=50))
