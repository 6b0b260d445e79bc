# ADCLR ViT-S/16 on ImageNet-1K (./vit-s_in1k.py) with learned positions instead of the authors'
# fixed sin-cos ones: the image tokens keep the ViT's trained positional embedding, and each
# query token carries that embedding resized to its own crop's patch grid (its place within
# the crop, as when the crop is encoded alone), not its place in the global view.
_base_ = ['./vit-s_in1k.py']

model = dict(backbone=dict(query_pos_embed='crop', sincos_pos_embed=False))
