_base_ = ['./byol_photometric.py']

# 2 global crops of 224 (teacher + student) and 10 local crops of 96 (student only).
train_pipeline = [
    dict(type='LoadRGBImage'),
    dict(
        type='MultiCropWithGeometry',
        global_crops=dict(num=2, size=224, scale=(0.25, 1.0)),
        local_crops=dict(num=10, size=96, scale=(0.05, 0.25)),
        global_pipelines=[{{_base_.photometric_view1}}, {{_base_.photometric_view2}}],
        local_pipeline={{_base_.photometric_local}}),
    dict(type='PackMultiViewInputs', algorithm_keys=['crop_boxes', 'flips']),
]
