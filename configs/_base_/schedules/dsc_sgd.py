# DSC recipe (MoCo v2 / DenseCL style): SGD (momentum 0.9, weight decay 1e-4), lr 0.03 x
# total_batch/256 (here 8 GPUs x 32 = 256), cosine to 0 without warm-up, fp16 (dynamic loss scale).
max_epochs = 200
optim_wrapper = dict(
    type='AmpOptimWrapper',
    constructor='FrozenAwareOptimWrapperConstructor',
    # foreach: one fused update over all parameters (torch's default on CUDA; on the CPU too)
    optimizer=dict(type='SGD', lr=0.03 * 256 / 256, momentum=0.9, weight_decay=1e-4, foreach=True),
)
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min=0.0, by_epoch=True, begin=0,
         end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)
# SyncBN across GPUs when launched distributed (the runner converts every BatchNorm); it also
# keeps the momentum encoder from reading the batch through per-GPU BN statistics.
sync_bn = 'torch'
# `tools/train.py --auto-scale-lr` rescales the lr when the total batch differs from 256.
auto_scale_lr = dict(base_batch_size=256)
