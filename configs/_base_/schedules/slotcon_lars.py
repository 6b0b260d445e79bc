# SlotCon recipe, as the official scripts: LARS (eta 0.001, momentum 0.9, weight decay 1e-5) with
# lr 1.0 x total_batch/256 (here 8 GPUs x 64 = 512), fp16 (dynamic loss scale), 5 warm-up epochs
# linear from lr/100, then cosine to 1e-6, all stepped every iteration.
# BarlowTwinsLARS is the LARS form of the official code: the lr multiplies the momentum buffer
# at each step, trust ratio eta*|w|/|g + wd*w|, and 1-D parameters (BN weights and biases, all
# biases) get neither weight decay nor adaptation (it tells them by their shape, no paramwise_cfg).
# Like the official code, the optimiser holds all the model's parameters; the EMA teacher's have
# no gradient and are passed over.
max_epochs = 100
warmup_epochs = 5
optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(type='BarlowTwinsLARS', lr=1.0 * 512 / 256, momentum=0.9, weight_decay=1e-5,
                   eta=0.001),
)
# Configs with another length: `param_scheduler = _base_.param_scheduler`, then
# `param_scheduler[1].update(T_max=max_epochs - warmup_epochs, end=max_epochs)`.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=1e-6, by_epoch=True,
         begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)
# SyncBN across GPUs when launched distributed (the runner converts every BatchNorm).
sync_bn = 'torch'
# `tools/train.py --auto-scale-lr` rescales the lr when the total batch differs from 512.
auto_scale_lr = dict(base_batch_size=512)
