# DSC with a ResNet-50. It trains on two views with their crop boxes and flips, from which the
# pixel level finds the pixels of both views that cover the same image spot: its configs also
# inherit ../pipelines/two_view_geometry.py.
model = dict(
    type='DSC',
    data_preprocessor=dict(
        type='SelfSupDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(type='ResNet', depth=50, out_indices=(3, ), style='pytorch',
                  zero_init_residual=False),
    # mmpretrain's DenseCL neck: global fc-relu-fc and dense 1x1 conv-relu-conv (7x7 at 224 px)
    neck=dict(type='DenseCLNeck', in_channels=2048, hid_channels=2048, out_channels=128),
    loss_instance=dict(type='InfoNCEWithQueueLoss', temp=0.2),
    loss_pixel=dict(type='MultiPositiveInfoNCELoss', temp=0.2),
    loss_semantic=dict(type='MultiPositiveInfoNCELoss', temp=0.2),
    queue_len=65536,
    pixel_loss_weight=1.0,
    semantic_loss_weight=0.5,
    num_neighbours=4,
    semantic_variant='km',
    num_classes=128,
    kmeans_iters=10,
    # used by semantic_variant='pm' only
    sinkhorn_epsilon=0.05,
    sinkhorn_iters=3,
    loss_prototype=dict(type='PrototypeAssignmentLoss', temp=0.1),
    teacher_momentum=0.999,
    end_teacher_momentum=0.999,
    # MoCo's key encoder: parameters are averaged, BN running statistics are its own
    teacher_buffers='own',
    feat_branch='student',
)
