# CoTAP post-training recipe: AdamW lr 3e-5 for the backbone and 10x for the new parts (heads,
# object prototypes, filter output norm), cosine to 3e-6 (1e-1 of the start), weight decay
# cosine 0.04 -> 0.4, gradient clipping 3.0; iteration-based.
max_iters = 240000
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='FrozenAwareOptimWrapperConstructor',
    # foreach: one fused update over all parameters (torch's default on CUDA; on the CPU too)
    optimizer=dict(type='AdamW', lr=3e-5, betas=(0.9, 0.999), weight_decay=0.04, foreach=True),
    clip_grad=dict(max_norm=3.0),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0,
        custom_keys={
            'patch_head': dict(lr_mult=10.0),
            'cls_head': dict(lr_mult=10.0),
            '.prototypes': dict(lr_mult=10.0, decay_mult=0.0),
            '.out_norm': dict(lr_mult=10.0, decay_mult=0.0),
        }),
)
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=max_iters, eta_min_ratio=0.1, by_epoch=False, begin=0,
         end=max_iters),
    dict(type='CosineAnnealingWeightDecay', eta_min=0.4, T_max=max_iters, by_epoch=False,
         begin=0, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)
custom_hooks = [dict(type='PrototypeInitHook', num_images=1024, windows_per_image=16)]
# `tools/train.py --auto-scale-lr` rescales the lr when the total batch differs from 8 x 32.
auto_scale_lr = dict(base_batch_size=256)
