# DINO ViT-S/16 as facebookresearch/dino's main_dino.py builds it (vit_small: 384 channels, 12
# blocks, 6 heads, qkv bias, LayerNorm eps 1e-6; drop-path 0.1 in the student, none in the
# teacher; DINOHead 384 -> 2048 -> 2048 -> 256 -> 65536 without BatchNorm; τ_s 0.1, centre
# momentum 0.9; EMA teacher 0.996 -> 1) with DINO's initialisation (DINOInit: trunc-normal 0.02
# Linear weights and cls/pos tokens, torch-default prototype layer). The prototype norms are
# learned (norm_last_layer=False) and τ_t ends at 0.07, as in the README's "boost" run; the
# vanilla run (../../dino/vit-s_in1k-100e.py) sets norm_last_layer=True and τ_t 0.04.
model = dict(
    type='DINO',
    data_preprocessor=dict(
        type='SelfSupDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(
        type='VisionTransformer',
        arch='deit-small',
        patch_size=16,
        img_size=224,
        drop_path_rate=0.1,
        out_type='cls_token',
        final_norm=True,
        init_cfg=dict(type='DINOInit')),
    head=dict(
        type='DINOHead',
        in_channels=384,
        out_channels=65536,
        hidden_channels=2048,
        bottleneck_channels=256,
        num_layers=3,
        norm_last_layer=False,
        init_cfg=dict(type='DINOInit')),
    loss=dict(type='DINOLoss', out_channels=65536, student_temp=0.1, center_momentum=0.9),
    num_global_views=2,
    teacher_momentum=0.996,
    end_teacher_momentum=1.0,
    teacher_temp=0.07,
)
