# ADCLR ViT-S/16 on ImageNet-1K, 100 epochs, 8 GPUs x 64 images: the run of the authors'
# README command (Sherrylone/PQCL, main_pos_bot.py) with ADCLR's query crops: 1 query crop of
# 96 px whose 36 tokens are appended to the student's two global views, fixed sin-cos
# positions, 8192 prototypes, each parameter's gradient clipped at 3.0, DINO's 100-epoch
# schedule with τ_t and τ_q warmed up 0.04 -> 0.07. The DINO term sees the two global views
# only. One departure: no iBOT masked-image term (the paper's ViT-S baseline is DINO; see
# ./vit-b_in1k.py and README.md, "Recipe arguments").
_base_ = [
    '../_base_/datasets/imagenet_unlabeled.py',
    '../_base_/pipelines/adclr_query_crops.py',
    '../_base_/models/adclr_vit-s16.py',
    '../_base_/schedules/dino_adamw_100e.py',
    '../_base_/default_runtime.py',
]
train_dataloader = dict(batch_size=64, dataset=dict(pipeline={{_base_.train_pipeline}}))
# fp32, as the authors' script trains (DINO's schedule is fp16 with a dynamic loss scale)
optim_wrapper = dict(type='OptimWrapper')
# DINO's hooks, with the query term's teacher temperature warmed up alongside τ_t: the
# script's np.linspace(0.04, 0.07, 30)[epoch] reaches 0.07 in epoch 29
# (../_base_/schedules/dino_adamw_300e.py)
custom_hooks = [
    dict(type='TeacherTempWarmupHook', start=0.04, end=0.07, warmup_epochs=29,
         attributes=('teacher_temp', 'query_teacher_temp')),
    dict(type='FreezeLastLayerHook', module_prefixes=('head.last_layer', ), freeze_epochs=1),
]
