# ADCLR ViT-S/16: DINO's ViT-S/16, head and loss (./dino_vit-s16.py) with a backbone that takes
# query tokens and 8192 prototypes, as in the authors' script (Sherrylone/PQCL main_pos_bot.py).
# As in its PosVisionTransformer, the image tokens' positional embedding is the fixed 2-D
# sin-cos one (not trained), and each query token carries the sin-cos embedding of its cell's
# place in the global view's patch grid (augmentation.py, calculate_sin_cos). Query tokens see
# the image tokens and the tokens of every query crop, and each one's target is the teacher's
# patch token at the same place of the crop encoded alone; the head and the prototypes are
# shared with the DINO term (λ = 1; τ_q 0.04 -> 0.07 when the schedule warms τ_t up). Where each
# value comes from: configs/adclr/README.md.
_base_ = ['./dino_vit-s16.py']

model = dict(
    type='ADCLR',
    backbone=dict(type='QueryVisionTransformer', query_attend_queries=True,
                  query_pos_embed='global_sincos', sincos_pos_embed=True),
    head=dict(out_channels=8192),
    loss=dict(out_channels=8192),
    query_target='patch_tokens',
    query_loss_weight=1.0,
    query_teacher_temp=0.07)
