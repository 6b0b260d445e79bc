# DINO's views as main_dino.py builds them with its default arguments (DataAugmentationDINO, the
# crops of both README-documented ViT-S/16 runs): 2 global crops of 224 px, area scale (0.4, 1)
# (teacher + student), 8 local crops of 96 px, scale (0.05, 0.4) (student only); aspect ratio
# (3/4, 4/3), bicubic resize antialiased as torchvision resizes PIL images, flip p 0.5, then
# DINO's photometric pipelines (./byol_photometric.py). Configs change the crops with
# `train_pipeline = _base_.train_pipeline; train_pipeline[1].local_crops.update(num=...)`.
_base_ = ['./byol_photometric.py']

train_pipeline = [
    dict(type='LoadRGBImage'),
    dict(
        type='MultiCropWithGeometry',
        global_crops=dict(num=2, size=224, scale=(0.4, 1.0)),
        local_crops=dict(num=8, size=96, scale=(0.05, 0.4)),
        interpolation='bicubic',
        global_pipelines=[{{_base_.photometric_view1}}, {{_base_.photometric_view2}}],
        local_pipeline={{_base_.photometric_local}}),
    dict(type='PackMultiViewInputs', algorithm_keys=['crop_boxes', 'flips']),
]
