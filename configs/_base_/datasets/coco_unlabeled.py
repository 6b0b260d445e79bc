# COCO train2017 images without annotations (scene-centric pretraining).
data_root = 'data/coco/'
train_dataloader = dict(
    batch_size=64,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    drop_last=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='UnlabeledImageDataset', data_root=data_root, data_prefix='train2017/'),
)
