# DINO's schedule as main_dino.py runs it with its default arguments (the README's vanilla
# 100-epoch ViT-S/16 run): AdamW, lr 5e-4 x total_batch/256 (here 8 GPUs x 64 = 512), 10 warm-up
# epochs, cosine to 1e-6; weight decay cosine 0.04 -> 0.4 (none on biases and 1-D parameters:
# norms); each parameter's gradient clipped to norm 3.0 on its own (utils.clip_gradients:
# PerParamClipOptimWrapperConstructor); prototype layer frozen during epoch 1; constant τ_t
# (no warm-up hook; ./dino_adamw_300e.py adds the boost run's). fp16 with a dynamic loss scale
# (main_dino.py --use_fp16 true, its default; fp32 on the CPU).
max_epochs = 100
warmup_epochs = 10
optim_wrapper = dict(
    type='AmpOptimWrapper',
    constructor='PerParamClipOptimWrapperConstructor',
    # foreach: one fused update over all parameters (torch's default on CUDA; on the CPU too)
    optimizer=dict(type='AdamW', lr=5e-4 * 512 / 256, betas=(0.9, 0.999), weight_decay=0.04,
                   foreach=True),
    clip_grad=dict(type='per_param', max_norm=3.0),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=1e-6, by_epoch=True,
         begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingWeightDecay', eta_min=0.4, T_max=max_epochs, by_epoch=True, begin=0,
         end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)
custom_hooks = [
    dict(type='FreezeLastLayerHook', module_prefixes=('head.last_layer', ), freeze_epochs=1),
]
# `tools/train.py --auto-scale-lr` rescales the lr when the total batch differs from 512.
auto_scale_lr = dict(base_batch_size=512)
