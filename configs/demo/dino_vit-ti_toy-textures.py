# `tools/demo.py --methods all`: DINO on the colour-free toy textures of the demo (96 px scenes,
# random hue per object), at a size that trains in a few CPU minutes: ViT-Ti/16 (deit-tiny, 6 x 6
# patch grid on the 96 px global crops), 2 x 96 + 4 x 48 px crops as configs/dino/vit-s_toy.py,
# batch 32, lr 5e-4; the schedule of configs/_base_/schedules/dino_adamw_toy.py: 1 epoch of 600
# images (18 iterations), lr warmed up over its first fifth, last layer frozen over its tenth.
# The transferred teacher (momentum 0.996 -> 1) keeps 96 % of its random init over these 18
# iterations, so its kNN score sits at the random draws' mean. Measured on the 2-core CPU, none
# beat the best draw: this schedule's student, and 2 epochs at batch 16 (74 iterations) with a
# momentum of 0.99 (teacher and student; the loss falls to 0.9, then drifts up to ln 256).
_base_ = ['../dino/vit-s_toy.py']

data_root = 'data/toy_textures/'
train_dataloader = dict(batch_size=32, dataset=dict(data_root=data_root))
optim_wrapper = dict(optimizer=dict(lr=5e-4))
model = dict(backbone=dict(arch='deit-tiny', drop_path_rate=0.0), head=dict(in_channels=192))

default_hooks = dict(logger=dict(interval=5))
auto_scale_lr = dict(base_batch_size=32)
