# ADCLR views: DINO's 2 global crops of 224 px (./dino_multicrop.py) whose 10 local views give way
# to 4 query crops of 96 px (6 x 6 = 36 tokens each), 5-25 % of the image, not flipped, with the
# local views' photometric pipeline; num_queries is packed with the crop geometry.
_base_ = ['./byol_photometric.py']

train_pipeline = [
    dict(type='LoadRGBImage'),
    dict(
        type='MultiCropWithQueries',
        global_crops=dict(num=2, size=224, scale=(0.25, 1.0)),
        local_crops=dict(num=0),
        query_crops=dict(num=4, size=96, scale=(0.05, 0.25), flip_prob=0.0),
        global_pipelines=[{{_base_.photometric_view1}}, {{_base_.photometric_view2}}],
        query_pipeline={{_base_.photometric_local}}),
    dict(type='PackMultiViewInputs', algorithm_keys=['crop_boxes', 'flips', 'num_queries']),
]
