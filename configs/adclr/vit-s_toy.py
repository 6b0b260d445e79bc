# ADCLR on the toy scenes, for the 2-core CPU: the toy DINO of ../dino/vit-s_toy.py (2 x 96 px
# global crops, batch 8, the 1-epoch schedule, 256 prototypes, constant teacher temperature
# 0.02) with 4 query crops of 48 px (3 x 3 = 9 tokens each), the query term's teacher
# temperature the same constant 0.02. The backbone's native grid is the 96 px views' 6 x 6, so
# the image tokens carry the sin-cos positions unresized and the query positions are in the
# same units.
_base_ = [
    '../_base_/datasets/toy_scenes_unlabeled.py',
    '../_base_/pipelines/adclr_query_crops.py',
    '../_base_/models/adclr_vit-s16.py',
    '../_base_/schedules/dino_adamw_toy.py',
    '../_base_/default_runtime.py',
]
# train_pipeline = [LoadRGBImage, MultiCropWithQueries, PackMultiViewInputs]
train_pipeline = _base_.train_pipeline
train_pipeline[1].global_crops.update(size=96)
train_pipeline[1].query_crops.update(num=4, size=48)
train_dataloader = dict(batch_size=8, num_workers=2, dataset=dict(pipeline=train_pipeline))

model = dict(backbone=dict(img_size=96), head=dict(out_channels=256),
             loss=dict(out_channels=256), teacher_temp=0.02, query_teacher_temp=0.02)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=1))
