# Step cost, ResNet-50 group: SlotCon (target: at most 1.2 x the time per image of DenseCL and
# of BYOL). The COCO recipe of ../../slotcon/r50_coco-800e.py with the group's views and batch:
# 2 overlapping views of 128 px (4 x 4 feature maps), 8 images per step, toy scenes; fp32 like
# every step-cost config (the recipe's fp16 AmpOptimWrapper needs CUDA: use --amp instead).
_base_ = ['../../slotcon/r50_coco-800e.py']

# train_pipeline = [LoadRGBImage, MultiCropWithGeometry, PackMultiViewInputs]
train_pipeline = _base_.train_pipeline
train_pipeline[1].global_crops.update(num=2, size=128)
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=False,
    dataset=dict(data_root='data/toy_scenes/', data_prefix='', ann_file='meta/train.txt',
                 pipeline=train_pipeline))
optim_wrapper = dict(type='OptimWrapper')
