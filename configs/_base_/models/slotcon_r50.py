# SlotCon with a ResNet-50. It trains on two views with their crop boxes and flips (for the
# inverse augmentation): its configs also inherit ../pipelines/two_view_geometry.py.
model = dict(
    type='SlotCon',
    data_preprocessor=dict(
        type='SelfSupDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    # The official ResNet's initialisation: convs kaiming-normal fan-out (mmpretrain's default
    # init_cfg) and the last BN weight of every residual block zero.
    backbone=dict(type='ResNet', depth=50, out_indices=(3, ), style='pytorch',
                  zero_init_residual=True),
    neck=dict(type='ConvMLPProjector', in_channels=2048, hidden_channels=4096, out_channels=256),
    # 256 prototypes: the official COCO recipes (the ImageNet-1K ones use 2048)
    head=dict(type='SemanticGrouping', num_prototypes=256, dim=256, temp=0.07),
    predictor=dict(type='SlotPredictor', in_channels=256, hidden_channels=4096, out_channels=256),
    loss_group=dict(type='SlotConGroupLoss', student_temp=0.1, teacher_temp=0.07,
                    center_momentum=0.9),
    loss_slot=dict(type='SlotContrastLoss', temp=0.2),
    group_loss_weight=0.5,
    teacher_momentum=0.99,
    end_teacher_momentum=1.0,
    teacher_buffers='own',  # official: only parameters are EMA'd
    feat_branch='teacher',
)
