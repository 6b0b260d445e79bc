# iBOT on the toy scenes, for the 2-core CPU: the toy DINO of ../dino/vit-s_toy.py (2 x 96 px
# global + 4 x 48 px local crops, batch 8, the 1-epoch schedule, 256 prototypes, constant
# teacher temperature 0.02) with iBOT's block masks on the 6 x 6 patches of each global view and
# its masked-image term, whose teacher temperature τ_p is the same constant 0.02.
_base_ = [
    '../_base_/datasets/toy_scenes_unlabeled.py',
    '../_base_/pipelines/ibot_multicrop.py',
    '../_base_/models/ibot_vit-s16.py',
    '../_base_/schedules/dino_adamw_toy.py',
    '../_base_/default_runtime.py',
]
# train_pipeline = [LoadRGBImage, MultiCropWithGeometry, BlockwisePatchMasks, PackMultiViewInputs]
train_pipeline = _base_.train_pipeline
train_pipeline[1].global_crops.update(size=96)
train_pipeline[1].local_crops.update(num=4, size=48)
train_dataloader = dict(batch_size=8, num_workers=2, dataset=dict(pipeline=train_pipeline))

model = dict(head=dict(out_channels=256), loss=dict(out_channels=256),
             patch_loss=dict(out_channels=256), teacher_temp=0.02, teacher_patch_temp=0.02)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=1))
