# DINO ViT-S/16 on ImageNet-1K, 100 epochs, 8 GPUs x 64 images.
_base_ = [
    '../_base_/datasets/imagenet_unlabeled.py',
    '../_base_/pipelines/dino_multicrop.py',
    '../_base_/models/dino_vit-s16.py',
    '../_base_/schedules/dino_adamw_100e.py',
    '../_base_/default_runtime.py',
]
train_dataloader = dict(batch_size=64, dataset=dict(pipeline={{_base_.train_pipeline}}))
