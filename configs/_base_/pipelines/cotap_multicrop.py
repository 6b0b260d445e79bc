# CoTAP views: 2 global 224 + 10 local 96 crops for the student, with strong colour jitter;
# the teacher sees clean copies of the two global crops (same boxes and flips, no jitter).
student_photometric = [
    dict(
        type='RandomApply',
        transforms=[
            dict(type='ColorJitter', brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2)
        ],
        prob=0.8),
    dict(type='RandomGrayscale', prob=0.2, keep_channels=True,
         channel_weights=(0.114, 0.587, 0.2989)),
    dict(type='GaussianBlur', magnitude_range=(0.1, 2.0), magnitude_std='inf', prob=0.5),
]
train_pipeline = [
    dict(type='LoadRGBImage'),
    dict(
        type='MultiCropWithGeometry',
        global_crops=dict(num=2, size=224, scale=(0.25, 1.0)),
        local_crops=dict(num=10, size=96, scale=(0.05, 0.25)),
        require_overlap=True,
        clean_global_copies=True,
        global_pipelines=[student_photometric],
        local_pipeline=student_photometric),
    dict(type='PackMultiViewInputs', algorithm_keys=['crop_boxes', 'flips']),
]
