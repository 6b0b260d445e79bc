# ADCLR ViT-S/16 on COCO train2017: the DINO COCO recipe of ../dino/vit-s16_coco.py (800 epochs,
# 8 GPUs x 64 images) plus the query crops and query term of ./vit-s16_in1k.py.
_base_ = ['../dino/vit-s16_coco.py']

model = dict(
    type='ADCLR',
    backbone=dict(type='QueryVisionTransformer', query_attend_queries=False,
                  query_pos_embed=False),
    query_loss_weight=1.0,
    query_teacher_temp=0.07)

# train_pipeline = [LoadRGBImage, MultiCropWithGeometry, PackMultiViewInputs]
train_pipeline = _base_.train_pipeline
train_pipeline[1].update(
    type='MultiCropWithQueries',
    query_crops=dict(num=10, size=16, scale=(0.05, 0.25)),
    query_pipeline=_base_.color_distortion)
train_pipeline[2].algorithm_keys = ['crop_boxes', 'flips', 'num_queries']
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

# custom_hooks = [TeacherTempWarmupHook, FreezeLastLayerHook]
custom_hooks = _base_.custom_hooks
custom_hooks[0].attributes = ('teacher_temp', 'query_teacher_temp')
