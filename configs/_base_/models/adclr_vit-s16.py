# ADCLR's additions to a DINO ViT-S/16 config, merged in by the configs of configs/adclr/ (the
# keys are named adclr_* so that they do not clash with the DINO config's own keys). Where each
# value comes from (the authors' public code, the paper, our choice): configs/adclr/README.md.

# Query tokens see the image tokens and the tokens of every query crop, carry the positional
# embedding of their place in their crop, and each one's target is the teacher's patch token
# at the same place of the crop encoded alone; the head and the prototypes are shared with the
# DINO term (τ_q 0.04 -> 0.07 with τ_t's warm-up, λ = 1).
adclr_model = dict(
    type='ADCLR',
    backbone=dict(type='QueryVisionTransformer', query_attend_queries=True, query_pos_embed=True),
    query_target='patch_tokens',
    query_loss_weight=1.0,
    query_teacher_temp=0.07)

# The query crops replace the local views: 4 crops of 96 px (6 x 6 = 36 tokens each), 5-25 %
# of the image, not flipped, with the local views' photometric pipeline.
adclr_query_crops = dict(num=4, size=96, scale=(0.05, 0.25), flip_prob=0.0)
