# DINO ViT-S/16 on COCO train2017 (118k scene-centric images), 8 GPUs x 64 images.
# 800 epochs (~185k iterations), the COCO schedule dense methods compare at (SlotCon, DenseCL),
# with the boost run's τ_t warm-up and learned prototype norms, and 2 global crops of area scale
# (0.25, 1) + 10 local crops of (0.05, 0.25).
_base_ = [
    '../_base_/datasets/coco_unlabeled.py',
    '../_base_/pipelines/dino_multicrop.py',
    '../_base_/models/dino_vit-s16.py',
    '../_base_/schedules/dino_adamw_800e.py',
    '../_base_/default_runtime.py',
]
# train_pipeline = [LoadRGBImage, MultiCropWithGeometry, PackMultiViewInputs]
train_pipeline = _base_.train_pipeline
train_pipeline[1].global_crops.update(scale=(0.25, 1.0))
train_pipeline[1].local_crops.update(num=10, scale=(0.05, 0.25))
train_dataloader = dict(batch_size=64, dataset=dict(pipeline=train_pipeline))
default_hooks = dict(checkpoint=dict(interval=50))
