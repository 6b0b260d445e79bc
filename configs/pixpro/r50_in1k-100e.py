# PixPro ResNet-50 on ImageNet-1K, 100 epochs, 8 GPUs x 128 images: the authors' published
# recipe, tools/pixpro_base_r50_100ep.sh of zdaxie/PixPro (PixPro base: no instance branch, the
# --pixpro-ins-loss-weight 0 of the script). Every value below and where it is read: the record,
# configs/pixpro/metafile.yml, and tests/test_models/test_pixpro.py's recipe test.
_base_ = [
    '../_base_/datasets/imagenet_unlabeled.py',
    '../_base_/pipelines/two_view_geometry.py',
    '../_base_/schedules/slotcon_lars.py',
    '../_base_/default_runtime.py',
]
# The official views (contrast/data/transform.py 'BYOL', transform_coord.py): two independent
# 224 px RandomResizedCrops (scale 0.08-1, --crop 0.08), no overlap required, PIL bilinear, BYOL
# photometric augmentation (the pipeline base's).
train_pipeline = _base_.train_pipeline
train_pipeline[1].update(require_overlap=False, interpolation='bilinear')
train_dataloader = dict(batch_size=128, dataset=dict(pipeline=train_pipeline))

model = dict(
    type='PixPro',
    data_preprocessor=dict(
        type='SelfSupDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    # contrast/resnet.py: convs normal(0, sqrt(2 / fan_out)) (mmpretrain's Kaiming init_cfg) and
    # the last BN weight of every residual block zero; the 7x7 stage-4 map ('early_return')
    backbone=dict(type='ResNet', depth=50, out_indices=(3, ), style='pytorch',
                  zero_init_residual=True),
    neck=dict(type='PixelMLP', in_channels=2048, hidden_channels=4096, out_channels=256),
    # --pixpro-transform-layer 1, --pixpro-p 2
    propagation=dict(type='PixelPropagation', num_transform_layers=1, gamma=2.0),
    # --pixpro-pos-ratio 0.7
    loss_pixel=dict(type='PixProConsistencyLoss', threshold=0.7),
    instance_loss_weight=0.0,
    # --pixpro-momentum 0.99, cosine to 1 over the run; the momentum encoder keeps its own BN
    # statistics
    teacher_momentum=0.99,
    end_teacher_momentum=1.0,
    teacher_buffers='own',
    feat_branch='student',
)

# --optimizer lars --base-lr 1.0 --weight-decay 1e-5 --warmup-epoch 5 --epochs 100: the lr is
# base-lr x total batch / 256 = 1.0 x 1024 / 256; apex O1 (--amp-opt-level O1) is fp16 with a
# dynamic loss scale (the schedule base's AmpOptimWrapper).
optim_wrapper = dict(optimizer=dict(lr=1.0 * 1024 / 256))
auto_scale_lr = dict(base_batch_size=1024)
default_hooks = dict(checkpoint=dict(interval=10))  # --save-freq 10
