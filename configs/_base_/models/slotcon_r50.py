# SlotCon with a ResNet-50, and the two-view pipeline it needs (../pipelines/two_view_geometry.py):
# two overlapping 224 px crops with BYOL photometric augmentation, plus each view's crop box and
# flip for the inverse augmentation.
_base_ = ['../pipelines/two_view_geometry.py']

model = dict(
    type='SlotCon',
    data_preprocessor=dict(
        type='SelfSupDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    # torchvision layout and initialisation (no zero-init of the last BN of each block).
    backbone=dict(type='ResNet', depth=50, out_indices=(3, ), style='pytorch',
                  zero_init_residual=False),
    neck=dict(type='ConvMLPProjector', in_channels=2048, hidden_channels=4096, out_channels=256),
    head=dict(type='SemanticGrouping', num_prototypes=256, dim=256, temp=0.07),
    predictor=dict(type='SlotPredictor', in_channels=256, hidden_channels=4096, out_channels=256),
    group_loss_weight=0.5,
    student_temp=0.1,
    teacher_temp=0.07,
    slot_temp=0.2,
    center_momentum=0.9,
    teacher_momentum=0.99,
    end_teacher_momentum=1.0,
    teacher_update_buffers=True,
    feat_branch='teacher',
)
