# Two overlapping crops per image with BYOL photometric augmentation, plus each view's crop box and
# flip: the views SlotCon and DSC (and their step-cost baselines, BYOL and DenseCL) train on. As in
# the official SlotCon code: 224 px, scale 0.08-1, the second crop redrawn up to 10 times until at
# least 1% of its area lies in the first (then drawn once more without condition), antialiased
# bicubic resize (PIL, as torchvision on PIL images; every multi-crop view is resized so).
# Configs change the crop size with
# `train_pipeline = _base_.train_pipeline; train_pipeline[1].global_crops.update(size=...)`.
_base_ = ['./byol_photometric.py']

train_pipeline = [
    dict(type='LoadRGBImage'),
    dict(
        type='MultiCropWithGeometry',
        global_crops=dict(num=2, size=224, scale=(0.08, 1.0)),
        local_crops=dict(num=0),
        require_overlap=True,
        max_tries=10,
        min_overlap=0.01,
        interpolation='bicubic',
        global_pipelines=[{{_base_.photometric_view1}}, {{_base_.photometric_view2}}]),
    dict(type='PackMultiViewInputs', algorithm_keys=['crop_boxes', 'flips']),
]
