# Step cost, ResNet-50 group: DSC (target: at most 1.3 x the time per image of DenseCL and of
# BYOL). The COCO recipe of ../../dsc/r50_coco-800e.py (k-means semantic classes) with the
# group's views and batch: 2 overlapping views of 128 px (4 x 4 pixel grids), 8 images per step,
# toy scenes; fp32 like every step-cost config (use --amp for mixed precision).
_base_ = ['../../dsc/r50_coco-800e.py']

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
