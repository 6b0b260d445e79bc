# DINO ViT-S/16 on ImageNet-1K, 100 epochs, 8 GPUs x 64 images: the README's "vanilla" run
# (`main_dino.py --arch vit_small` on one node of 8 GPUs, every other argument at its default;
# published: 69.3 % k-NN, 74.0 % linear). Every argument and its source: configs/dino/README.md.
_base_ = [
    '../_base_/datasets/imagenet_unlabeled.py',
    '../_base_/pipelines/dino_multicrop.py',
    '../_base_/models/dino_vit-s16.py',
    '../_base_/schedules/dino_adamw_100e.py',
    '../_base_/default_runtime.py',
]
train_dataloader = dict(batch_size=64, dataset=dict(pipeline={{_base_.train_pipeline}}))
# main_dino.py defaults: prototypes of norm 1, constant τ_t 0.04 (--warmup_teacher_temp_epochs 0)
model = dict(head=dict(norm_last_layer=True), teacher_temp=0.04)
