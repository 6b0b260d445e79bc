# iBOT ViT-S/16 as bytedance/ibot main_ibot.py builds it with the README's ViT-S/16 arguments:
# DINO's ViT-S/16 and initialisation (./dino_vit-s16.py: 384 channels, 12 blocks, drop-path 0.1
# in the student) with a mask token (zeros at first, vision_transformer.py masked_embed), one
# head for the CLS and the patch tokens (--shared_head true: 384 -> 2048 -> 2048 -> 256 -> 8192,
# --out_dim 8192, --norm_last_layer false), the CLS term (DINOLoss) and the masked-image term
# (iBOTPatchLoss, λ = 1: --lambda2), τ_s 0.1, both centres with momentum 0.9, τ_t and τ_p ending
# at 0.07 (--teacher_temp 0.07, --teacher_patch_temp 0.07), EMA 0.996 -> 1.
_base_ = ['./dino_vit-s16.py']

model = dict(
    type='iBOT',
    backbone=dict(type='QueryVisionTransformer', mask_token=True),
    head=dict(out_channels=8192, norm_last_layer=False),
    loss=dict(out_channels=8192),
    patch_loss=dict(type='iBOTPatchLoss', out_channels=8192, student_temp=0.1,
                    center_momentum=0.9),
    patch_loss_weight=1.0,
    teacher_temp=0.07,
    teacher_patch_temp=0.07)
