# Step cost, ViT-S/16 group, baseline: DINO. The COCO recipe of ../../dino/vit-s_coco.py
# (ViT-S/16, 65536-prototype head, AdamW, gradient clipping) with only the views and the batch
# changed to the group's common CPU-affordable setting: 2 global crops of 96 px + 4 local crops
# of 48 px per image, 8 images per step, read from the toy scenes (`make toy-data`), in fp32
# like every step-cost config (the recipe's fp16 wrapper is `benchmark.py --amp`).
# tools/analysis_tools/benchmark_table.py runs it; benchmarks/README.md explains the table.
_base_ = ['../../dino/vit-s_coco.py']

# train_pipeline = [LoadRGBImage, MultiCropWithGeometry, PackMultiViewInputs]
train_pipeline = _base_.train_pipeline
train_pipeline[1].global_crops.update(num=2, size=96)
train_pipeline[1].local_crops.update(num=4, size=48)
optim_wrapper = dict(type='OptimWrapper')
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=False,
    dataset=dict(data_root='data/toy_scenes/', data_prefix='', ann_file='meta/train.txt',
                 pipeline=train_pipeline))
