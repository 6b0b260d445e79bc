# ADCLR ViT-B/16 on ImageNet-1K, 100 epochs, 8 GPUs x 64 images: the authors' README command
# with --arch vit_base ("You can change the vit_small to vit_base"), i.e. ./vit-s_in1k.py with a
# ViT-B backbone plus iBOT's masked-image term, which that command keeps on (--lambda2 1.0,
# --pred_ratio 0 0.3, --pred_ratio_var 0 0.2, block masks): the paper's ViT-B row is compared
# with iBOT. The command's --norm_last_layer false and lr 5e-4 x batch/256 are kept for ViT-B
# (main_pos_bot.py's help suggests norm_last_layer for vit_base; the command does not set it).
_base_ = ['./vit-s_in1k.py']

model = dict(
    backbone=dict(arch='base', mask_token=True),
    head=dict(in_channels=768),
    patch_loss=dict(type='iBOTPatchLoss', out_channels=8192, student_temp=0.1,
                    center_momentum=0.9),
    patch_loss_weight=1.0,
    teacher_patch_temp=0.07)

# train_pipeline = [LoadRGBImage, MultiCropWithQueries, BlockwisePatchMasks, PackMultiViewInputs]
train_pipeline = _base_.train_pipeline
train_pipeline.insert(2, dict(type='BlockwisePatchMasks', num_views=2, patch_size=16,
                              pred_ratio=(0.0, 0.3), pred_ratio_var=(0.0, 0.2),
                              pred_aspect_ratio=(0.3, 1 / 0.3)))
train_pipeline[3].algorithm_keys = ['crop_boxes', 'flips', 'num_queries', 'masks']
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
# τ_t, τ_q and τ_p warmed up together, 0.04 -> 0.07, as main_pos_bot.py's three schedules
custom_hooks = [
    dict(type='TeacherTempWarmupHook', start=0.04, end=0.07, warmup_epochs=29,
         attributes=('teacher_temp', 'query_teacher_temp', 'teacher_patch_temp')),
    dict(type='FreezeLastLayerHook', module_prefixes=('head.last_layer', ), freeze_epochs=1),
]
