# ADCLR ViT-S/16 on ImageNet-1K, 100 epochs, 8 GPUs x 64 images: the DINO recipe of
# ../dino/vit-s_in1k.py in which the 10 local views give way to 4 query crops of 96 px whose
# 36 tokens each are appended to the student's two global views (the authors' public code),
# with 8192 prototypes as in that code. The DINO term sees the two global views only.
_base_ = [
    '../_base_/datasets/imagenet_unlabeled.py',
    '../_base_/pipelines/adclr_query_crops.py',
    '../_base_/models/adclr_vit-s16.py',
    '../_base_/schedules/dino_adamw_100e.py',
    '../_base_/default_runtime.py',
]
train_dataloader = dict(batch_size=64, dataset=dict(pipeline={{_base_.train_pipeline}}))
# DINO's hooks, with the query term's teacher temperature warmed up alongside τ_t
custom_hooks = [
    dict(type='TeacherTempWarmupHook', start=0.04, end=0.07, warmup_epochs=30,
         attributes=('teacher_temp', 'query_teacher_temp')),
    dict(type='FreezeLastLayerHook', module_prefixes=('head.last_layer', ), freeze_epochs=1),
]
