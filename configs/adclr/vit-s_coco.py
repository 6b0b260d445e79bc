# ADCLR ViT-S/16 on COCO train2017: the DINO COCO recipe of ../dino/vit-s_coco.py (800 epochs,
# 8 GPUs x 64 images) with the query crops, query term and 8192 prototypes of ./vit-s_in1k.py.
_base_ = [
    '../_base_/datasets/coco_unlabeled.py',
    '../_base_/pipelines/adclr_query_crops.py',
    '../_base_/models/adclr_vit-s16.py',
    '../_base_/schedules/dino_adamw_800e.py',
    '../_base_/default_runtime.py',
]
train_dataloader = dict(batch_size=64, dataset=dict(pipeline={{_base_.train_pipeline}}))
# fp32, as the authors' script trains (DINO's schedule is fp16 with a dynamic loss scale)
optim_wrapper = dict(type='OptimWrapper')
default_hooks = dict(checkpoint=dict(interval=50))
# DINO's hooks, with the query term's teacher temperature warmed up alongside τ_t: the
# script's np.linspace(0.04, 0.07, 30)[epoch] reaches 0.07 in epoch 29
# (../_base_/schedules/dino_adamw_300e.py)
custom_hooks = [
    dict(type='TeacherTempWarmupHook', start=0.04, end=0.07, warmup_epochs=29,
         attributes=('teacher_temp', 'query_teacher_temp')),
    dict(type='FreezeLastLayerHook', module_prefixes=('head.last_layer', ), freeze_epochs=1),
]
