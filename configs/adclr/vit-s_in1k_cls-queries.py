# ADCLR ViT-S/16 on ImageNet-1K, single-token variant (the project's earlier reading of the
# paper, kept as an option): DINO ViT-S/16 (2 x 224 + 10 x 96 px DINO views,
# 65536 prototypes) plus 10 query crops of 16 px, one token each, that see the image tokens and
# themselves only; a crop's target is the teacher's CLS output on the crop encoded alone.
_base_ = ['./vit-s_in1k.py']

model = dict(
    backbone=dict(query_attend_queries=False, query_pos_embed=None,
                  sincos_pos_embed=False),
    head=dict(out_channels=65536),
    loss=dict(out_channels=65536),
    query_target='cls_token')

# train_pipeline = [LoadRGBImage, MultiCropWithQueries, PackMultiViewInputs]: DINO's 10 local
# views come back, next to the queries
train_pipeline = _base_.train_pipeline
train_pipeline[1].update(
    local_crops=dict(num=10, size=96, scale=(0.05, 0.25)),
    local_pipeline=_base_.photometric_local,
    global_pipelines=[_base_.photometric_view1, _base_.photometric_view2],
    query_crops=dict(num=10, size=16, scale=(0.05, 0.25), flip_prob=0.5),
    query_pipeline=_base_.color_distortion)
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
