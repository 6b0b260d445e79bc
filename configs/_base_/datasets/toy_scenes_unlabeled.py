# The embedded toy scene set (tools/misc/make_toy_scenes.py writes it; `make demo` does too).
data_root = 'data/toy_scenes/'
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    drop_last=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='UnlabeledImageDataset', data_root=data_root, ann_file='meta/train.txt'),
)
