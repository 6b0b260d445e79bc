# ADCLR ViT-S/16 on ImageNet-1K: the DINO recipe of ../dino/vit-s16_in1k.py (100 epochs,
# 8 GPUs x 64 images) plus 10 query crops of 16 px (one token each) per image, appended to the
# student's global views. The query term has its own centre and the same teacher-temperature
# warm-up as the DINO term; its DINOLoss settings are copied from `model.loss`.
_base_ = ['../dino/vit-s16_in1k.py']

model = dict(
    type='ADCLR',
    backbone=dict(type='QueryVisionTransformer', query_attend_queries=False,
                  query_pos_embed=False),
    query_loss_weight=1.0,
    query_teacher_temp=0.07)

# train_pipeline = [LoadRGBImage, MultiCropWithGeometry, PackMultiViewInputs]: the multi-crop
# step also draws the query crops, and num_queries is packed with the geometry.
train_pipeline = _base_.train_pipeline
train_pipeline[1].update(
    type='MultiCropWithQueries',
    query_crops=dict(num=10, size=16, scale=(0.05, 0.25)),
    query_pipeline=_base_.color_distortion)
train_pipeline[2].algorithm_keys = ['crop_boxes', 'flips', 'num_queries']
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

# custom_hooks = [TeacherTempWarmupHook, FreezeLastLayerHook]: warm both temperatures up.
custom_hooks = _base_.custom_hooks
custom_hooks[0].attributes = ('teacher_temp', 'query_teacher_temp')
