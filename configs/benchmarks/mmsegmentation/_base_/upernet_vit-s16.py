# UperNet with a ViT-S/16 and the iBOT fine-tuning recipe, without data (the dataset configs add
# crop size, classes and schedule length): the outputs of blocks 3, 5, 7, 11 become a 4-level
# pyramid (ViTPyramid: x4, x2, x1, x1/2) feeding UperNet with 384 decoder channels and an
# auxiliary FCN head on level 3; AdamW lr 3e-5, wd 0.05 (none on pos_embed, cls_token, norms and
# biases), layer decay 0.9, 1500-iteration warm-up then poly (power 1), 8 GPUs x 2 images.
_base_ = 'mmseg::_base_/models/upernet_r50.py'
custom_imports = dict(imports=['mmdense.transfer'], allow_failed_imports=False)

norm_cfg = dict(type='SyncBN', requires_grad=True)
warmup_iters = 1500
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='ViTPyramid',
        arch='deit-small',
        patch_size=16,
        img_size=512,  # pos_embed is resized to each input
        drop_path_rate=0.1,
        out_indices=(3, 5, 7, 11),
        adapter_norm_cfg=norm_cfg,
        init_cfg=dict(type='Pretrained', checkpoint=None)),
    decode_head=dict(in_channels=[384, 384, 384, 384], channels=384),
    auxiliary_head=dict(in_channels=384))

optim_wrapper = dict(
    type='OptimWrapper',
    constructor='LayerDecayOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=3e-5, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(layer_decay_rate=0.9))
train_cfg = dict(type='IterBasedTrainLoop', max_iters=160000, val_interval=16000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=16000),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
