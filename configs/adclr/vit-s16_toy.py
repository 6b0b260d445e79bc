# ADCLR on the toy scenes, for the 2-core CPU: ../dino/vit-s16_toy.py unchanged (2 x 96 px
# global + 4 x 48 px local crops, batch 8, 1 epoch, constant teacher temperature 0.02) plus
# 10 query crops of 16 px per image, whose teacher temperature is the same constant 0.02.
_base_ = ['../dino/vit-s16_toy.py']

model = dict(
    type='ADCLR',
    backbone=dict(type='QueryVisionTransformer', query_attend_queries=False,
                  query_pos_embed=False),
    query_loss_weight=1.0,
    query_teacher_temp=0.02)

# train_pipeline = [LoadRGBImage, MultiCropWithGeometry, PackMultiViewInputs]
train_pipeline = _base_.train_pipeline
train_pipeline[1].update(
    type='MultiCropWithQueries',
    query_crops=dict(num=10, size=16, scale=(0.05, 0.25)),
    query_pipeline=_base_.color_distortion)
train_pipeline[2].algorithm_keys = ['crop_boxes', 'flips', 'num_queries']
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
