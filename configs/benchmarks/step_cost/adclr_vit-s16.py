# Step cost, ViT-S/16 group: ADCLR (target: at most 1.15 x DINO's time per image). The COCO
# recipe of ../../adclr/vit-s_coco.py with the group's views and batch (2 x 96 px global
# crops, 8 images per step, toy scenes). ADCLR's local crops are its query crops (the recipe's
# one 96 px crop, one patch token each per 16 px): here the group's 4 x 48 px local crops become
# its 4 queries of 3 x 3 tokens, so its step sees the same pixels as DINO's.
_base_ = ['../../adclr/vit-s_coco.py']

# train_pipeline = [LoadRGBImage, MultiCropWithQueries, PackMultiViewInputs]
train_pipeline = _base_.train_pipeline
train_pipeline[1].global_crops.update(num=2, size=96)
train_pipeline[1].query_crops.update(num=4, size=48)
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=False,
    dataset=dict(data_root='data/toy_scenes/', data_prefix='', ann_file='meta/train.txt',
                 pipeline=train_pipeline))
