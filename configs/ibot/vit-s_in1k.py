# iBOT ViT-S/16 on ImageNet-1K, 800 epochs, 16 GPUs x 64 images (the README's "two nodes with 8
# GPUs" run: 75.2 % k-NN, 77.9 % linear): the model of ../_base_/models/ibot_vit-s16.py, the views
# and masks of ../_base_/pipelines/ibot_multicrop.py, DINO's AdamW schedule for 800 epochs (lr
# 5e-4 x 1024/256, 10 warm-up epochs, cosine to 1e-6, weight decay 0.04 -> 0.4, each parameter's
# gradient clipped at 3.0, prototype layer frozen in epoch 1), τ_t and τ_p warmed up 0.04 -> 0.07
# over 30 epochs. Every argument and its source: README.md, "Recipe arguments".
_base_ = [
    '../_base_/datasets/imagenet_unlabeled.py',
    '../_base_/pipelines/ibot_multicrop.py',
    '../_base_/models/ibot_vit-s16.py',
    '../_base_/schedules/dino_adamw_800e.py',
    '../_base_/default_runtime.py',
]
train_dataloader = dict(batch_size=64, dataset=dict(pipeline={{_base_.train_pipeline}}))
optim_wrapper = dict(optimizer=dict(lr=5e-4 * 1024 / 256))
auto_scale_lr = dict(base_batch_size=1024)
# main_ibot.py's np.linspace(0.04, 0.07, 30)[epoch] reaches 0.07 in epoch 29, for τ_t and τ_p
custom_hooks = [
    dict(type='TeacherTempWarmupHook', start=0.04, end=0.07, warmup_epochs=29,
         attributes=('teacher_temp', 'teacher_patch_temp')),
    dict(type='FreezeLastLayerHook', module_prefixes=('head.last_layer', ), freeze_epochs=1),
]
