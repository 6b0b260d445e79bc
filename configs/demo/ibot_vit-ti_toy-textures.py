# `tools/demo.py --methods all`: iBOT on the colour-free toy textures of the demo, at the size
# and schedule of configs/demo/dino_vit-ti_toy-textures.py (ViT-Ti/16, batch 32, 1 epoch of 600
# images, lr 5e-4 warmed up over its first fifth); crops and masked patches as
# configs/ibot/vit-s_toy.py (2 x 96 + 4 x 48 px). Measured on the 2-core CPU, no setting beat
# the best random draw: this one (its teacher keeps 96 % of its init), nor 2 epochs at batch 16
# with a teacher momentum 0.98 -> 1 (teacher below the draws; student +0.9 std over their mean).
_base_ = ['../ibot/vit-s_toy.py']

data_root = 'data/toy_textures/'
train_dataloader = dict(batch_size=32, dataset=dict(data_root=data_root))
optim_wrapper = dict(optimizer=dict(lr=5e-4))
model = dict(backbone=dict(arch='deit-tiny', drop_path_rate=0.0), head=dict(in_channels=192))

default_hooks = dict(logger=dict(interval=5))
auto_scale_lr = dict(base_batch_size=32)
