# DINO ViT-S/16 on ImageNet-1K, 300 epochs, 16 GPUs x 64 images: the README's "boost" run
# (`run_with_submitit.py --arch vit_small --epochs 300 --teacher_temp 0.07
# --warmup_teacher_temp_epochs 30 --norm_last_layer false`, 2 nodes x 8 GPUs by default;
# published: 73.3 % k-NN, 76.0 % linear). Every argument and its source: configs/dino/README.md.
_base_ = [
    '../_base_/datasets/imagenet_unlabeled.py',
    '../_base_/pipelines/dino_multicrop.py',
    '../_base_/models/dino_vit-s16.py',
    '../_base_/schedules/dino_adamw_300e.py',
    '../_base_/default_runtime.py',
]
train_dataloader = dict(batch_size=64, dataset=dict(pipeline={{_base_.train_pipeline}}))
# lr 5e-4 x total_batch/256 at 16 x 64 = 1024 images per step; `tools/train.py --auto-scale-lr`
# rescales it for another total batch.
optim_wrapper = dict(optimizer=dict(lr=5e-4 * 1024 / 256))
auto_scale_lr = dict(base_batch_size=1024)
