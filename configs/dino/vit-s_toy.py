# DINO ViT-S/16 sized for the 2-core CPU demo on the toy scenes: the same backbone, head
# structure, losses and schedules as vit-s_in1k-300e.py, with 2 x 96 px global + 4 x 48 px local
# crops, batch 8 and the 1-epoch (75-iteration) schedule of ../_base_/schedules/dino_adamw_toy.py.
# Changed for such a short run (a sweep on the toy set is in configs/dino/README.md): 256
# prototypes and a constant teacher temperature of 0.02 (sharper targets; with 0.04 -> 0.07 the
# loss drifts to the uniform solution ln K within 75 iterations), lr 3e-4, prototype layer frozen
# for 0.1 epoch.
_base_ = [
    '../_base_/datasets/toy_scenes_unlabeled.py',
    '../_base_/pipelines/byol_photometric.py',
    '../_base_/models/dino_vit-s16.py',
    '../_base_/schedules/dino_adamw_toy.py',
    '../_base_/default_runtime.py',
]
train_pipeline = [
    dict(type='LoadRGBImage'),
    dict(
        type='MultiCropWithGeometry',
        global_crops=dict(num=2, size=96, scale=(0.25, 1.0)),
        local_crops=dict(num=4, size=48, scale=(0.05, 0.25)),
        global_pipelines=[{{_base_.photometric_view1}}, {{_base_.photometric_view2}}],
        local_pipeline={{_base_.photometric_local}}),
    dict(type='PackMultiViewInputs', algorithm_keys=['crop_boxes', 'flips']),
]
train_dataloader = dict(batch_size=8, num_workers=2, dataset=dict(pipeline=train_pipeline))

model = dict(head=dict(out_channels=256), loss=dict(out_channels=256), teacher_temp=0.02)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=1))
