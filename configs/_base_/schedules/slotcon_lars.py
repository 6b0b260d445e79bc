# SlotCon recipe: LARS (eta 0.001, momentum 0.9, weight decay 1e-5), lr 1.0 x total_batch/256
# (here 8 GPUs x 64 = 512), fp16 (dynamic loss scale), 5 warm-up epochs linear from lr/100,
# then cosine.
# SyncFreeLARS is mmpretrain's LARS update without its per-parameter host read-backs. Like LARS,
# it skips the trust ratio for param groups with `lars_exclude=True`; the custom keys below
# select exactly the 1-D parameters (BN weights and biases, all biases) and give them neither
# adaptation nor weight decay.
max_epochs = 100
warmup_epochs = 5
one_dim_params = dict(decay_mult=0.0, lars_exclude=True)
optim_wrapper = dict(
    type='AmpOptimWrapper',
    constructor='FrozenAwareOptimWrapperConstructor',
    optimizer=dict(type='SyncFreeLARS', lr=1.0 * 512 / 256, momentum=0.9, weight_decay=1e-5,
                   eta=0.001),
    paramwise_cfg=dict(custom_keys={
        '.bias': one_dim_params,
        'bn': one_dim_params,
        'downsample.1': one_dim_params,
    }),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=0.0, by_epoch=True,
         begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)
# SyncBN across GPUs when launched distributed (the runner converts every BatchNorm).
sync_bn = 'torch'
# `tools/train.py --auto-scale-lr` rescales the lr when the total batch differs from 512.
auto_scale_lr = dict(base_batch_size=512)
