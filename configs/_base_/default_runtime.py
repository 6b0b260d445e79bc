default_scope = 'mmdense'

default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # atomic saves; the oldest checkpoint is removed only after the new one is written
    checkpoint=dict(type='AtomicCheckpointHook', interval=10, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # stop with the term's name and the iteration when a loss becomes NaN/Inf
    nan_guard=dict(type='NonFiniteLossHook'),
    # RNG states saved in checkpoints and restored on resume (bit-exact resume)
    rng_state=dict(type='RNGStateHook'),
    # per-epoch count of the images a SkipCorruptImages dataset skipped (no-op without one)
    skipped_images=dict(type='SkippedImagesHook'),
    # the EMA teacher's momentum schedule spans max_iters (no-op for models without a teacher)
    teacher_schedule=dict(type='TeacherScheduleHook'),
)

# cuDNN picks the fastest convolution algorithm per input shape; the recipes' crops have fixed
# sizes, so it searches once per shape. Set False for variable input sizes.
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)

# TensorBoard is used when installed (tools/train.py drops it with a warning otherwise).
vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)

log_processor = dict(window_size=10)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, diff_rank_seed=True)

# The fast path of tools/train.py (mmdense/engine/fast_path.py), e.g. --cfg-options
# fast_path.bf16=True fast_path.channels_last=False. A recipe trains in the precision of its
# optim wrapper (AmpOptimWrapper: fp16 with a dynamic loss scale; OptimWrapper: fp32; fp32 on the
# CPU): the authors' precision where their code says it (each method's README). bf16 moved every
# method's gradient further from fp32 than fp16 did (tools/analysis_tools/precision_check.py,
# benchmarks/README.md "Precision").
fast_path = dict(
    bf16=False,  # opt-in: bf16 autocast on a CUDA GPU with bf16, in place of fp32 or fp16 AMP
    channels_last=True,  # ChannelsLastHook for ResNet backbones
    compile=False,  # opt-in: True or torch.compile kwargs, compiles the student backbone
)
