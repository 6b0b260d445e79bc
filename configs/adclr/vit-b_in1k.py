# ADCLR ViT-B/16 on ImageNet-1K, 100 epochs, 8 GPUs x 64 images: ./vit-s_in1k.py (DINO plus
# the query crops) with a ViT-B backbone. The paper's ViT-B row builds on iBOT, not DINO (its
# masked-image-modelling term is not here), so this is not that row's recipe. Our choices for
# the larger model: prototypes with fixed norm (norm_last_layer) and lr 7.5e-4 x batch/256, as
# DINO and iBOT use for ViT-B.
_base_ = ['./vit-s_in1k.py']

model = dict(
    backbone=dict(arch='base'),
    head=dict(in_channels=768, norm_last_layer=True))
optim_wrapper = dict(optimizer=dict(lr=7.5e-4 * 512 / 256))
