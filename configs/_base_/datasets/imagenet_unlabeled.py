# ImageNet-1K train images without labels (folder of class sub-folders, or a list file).
data_root = 'data/imagenet/'
train_dataloader = dict(
    batch_size=64,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    drop_last=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='UnlabeledImageDataset', data_root=data_root, data_prefix='train/'),
)
