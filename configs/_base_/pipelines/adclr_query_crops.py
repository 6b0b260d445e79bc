# ADCLR views as the authors' script builds them (Sherrylone/PQCL augmentation.py
# DataAugmentation, with the README command's crop arguments): 2 global crops of 224 px, area
# scale (0.25, 1), both with the first global view's photometric pipeline (flip, colour jitter,
# greyscale, blur always; no solarisation), and 1 query crop of 96 px (6 x 6 = 36 tokens),
# scale (0.05, 0.25), not flipped, with colour jitter, greyscale and blur p 0.5; no DINO local
# views. Bicubic resize, antialiased as PIL's. num_queries and the crop boxes (which place the
# query cells in each global view) are packed.
_base_ = ['./byol_photometric.py']

train_pipeline = [
    dict(type='LoadRGBImage'),
    dict(
        type='MultiCropWithQueries',
        global_crops=dict(num=2, size=224, scale=(0.25, 1.0)),
        local_crops=dict(num=0),
        query_crops=dict(num=1, size=96, scale=(0.05, 0.25), flip_prob=0.0),
        interpolation='bicubic',
        global_pipelines=[{{_base_.photometric_view1}}, {{_base_.photometric_view1}}],
        query_pipeline={{_base_.photometric_local}}),
    dict(type='PackMultiViewInputs', algorithm_keys=['crop_boxes', 'flips', 'num_queries']),
]
