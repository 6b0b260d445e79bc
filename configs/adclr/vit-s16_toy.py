# ADCLR on the toy scenes, for the 2-core CPU: ../dino/vit-s16_toy.py (2 x 96 px global crops,
# batch 8, 1 epoch, 256 prototypes, constant teacher temperature 0.02) whose 4 local crops of
# 48 px become the query crops (3 x 3 = 9 tokens each), with the query term's teacher
# temperature the same constant 0.02.
_base_ = ['../dino/vit-s16_toy.py', '../_base_/models/adclr_vit-s16.py']

model = _base_.adclr_model
model.update(query_teacher_temp=0.02)

# train_pipeline = [LoadRGBImage, MultiCropWithGeometry, PackMultiViewInputs]
train_pipeline = _base_.train_pipeline
train_pipeline[1].update(
    type='MultiCropWithQueries',
    local_crops=dict(num=0),
    query_crops=dict(_base_.adclr_query_crops, size=48),
    query_pipeline=_base_.photometric_local)
train_pipeline[2].algorithm_keys = ['crop_boxes', 'flips', 'num_queries']
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
