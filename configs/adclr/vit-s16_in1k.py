# ADCLR ViT-S/16 on ImageNet-1K, 100 epochs, 8 GPUs x 64 images: the DINO recipe of
# ../dino/vit-s16_in1k.py in which the 10 local views give way to 4 query crops of 96 px whose
# 36 tokens each are appended to the student's two global views (the authors' public code),
# with 8192 prototypes as in that code. The DINO term sees the two global views only.
_base_ = ['../dino/vit-s16_in1k.py', '../_base_/models/adclr_vit-s16.py']

model = _base_.adclr_model
model.update(head=dict(out_channels=8192), loss=dict(out_channels=8192))

# train_pipeline = [LoadRGBImage, MultiCropWithGeometry, PackMultiViewInputs]: the multi-crop
# step draws the query crops instead of local views, and num_queries is packed with the geometry.
train_pipeline = _base_.train_pipeline
train_pipeline[1].update(
    type='MultiCropWithQueries',
    local_crops=dict(num=0),
    query_crops=_base_.adclr_query_crops,
    query_pipeline=_base_.photometric_local)
train_pipeline[2].algorithm_keys = ['crop_boxes', 'flips', 'num_queries']
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

# custom_hooks = [TeacherTempWarmupHook, FreezeLastLayerHook]: warm both temperatures up.
custom_hooks = _base_.custom_hooks
custom_hooks[0].attributes = ('teacher_temp', 'query_teacher_temp')
