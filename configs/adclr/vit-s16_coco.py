# ADCLR ViT-S/16 on COCO train2017: the DINO COCO recipe of ../dino/vit-s16_coco.py (800 epochs,
# 8 GPUs x 64 images) with the query crops, query term and 8192 prototypes of ./vit-s16_in1k.py.
_base_ = ['../dino/vit-s16_coco.py', '../_base_/models/adclr_vit-s16.py']

model = _base_.adclr_model
model.update(head=dict(out_channels=8192), loss=dict(out_channels=8192))

# train_pipeline = [LoadRGBImage, MultiCropWithGeometry, PackMultiViewInputs]
train_pipeline = _base_.train_pipeline
train_pipeline[1].update(
    type='MultiCropWithQueries',
    local_crops=dict(num=0),
    query_crops=_base_.adclr_query_crops,
    query_pipeline=_base_.photometric_local)
train_pipeline[2].algorithm_keys = ['crop_boxes', 'flips', 'num_queries']
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

# custom_hooks = [TeacherTempWarmupHook, FreezeLastLayerHook]
custom_hooks = _base_.custom_hooks
custom_hooks[0].attributes = ('teacher_temp', 'query_teacher_temp')
