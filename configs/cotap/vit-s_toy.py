# CoTAP ViT-S/16 sized for the 2-core CPU demo on the toy scenes, post-training the DINO toy
# checkpoint (configs/dino/vit-s_toy.py) as the paper post-trains DINO. Same crops as the DINO
# toy config (2 x 96 px global + 4 x 48 px local, plus the teacher's clean global copies) and the
# same 8 images per step (4 pairs). `make demo` writes the checkpoint and the neighbour file:
#   python tools/train.py configs/dino/vit-s_toy.py --work-dir work_dirs/demo/pretrain_dino
#   python tools/misc/build_nn_pairs.py configs/cotap/vit-s_toy.py \
#       work_dirs/demo/pretrain_dino/epoch_1.pth --img-size 96 --topk 5 \
#       --out work_dirs/demo/toy_neighbours.json
# Toy choices (runs in configs/cotap/README.md): 16 object prototypes, 64 patch / 256 CLS head
# outputs and Sinkhorn epsilon 0.02 (with 512 / 4096 and 0.05 the student stayed at the uniform
# prediction, loss = ln K, for 30 iterations), ks = 3 on the 6 x 6 patch grid,
# 100 iterations, lr 1e-4 (x10 for the new parts), EMA 0.99 -> 0.999 (a 0.9997 teacher would
# not move in 100 steps).
_base_ = [
    '../_base_/datasets/toy_scenes_unlabeled.py',
    '../_base_/pipelines/cotap_multicrop.py',
    '../_base_/models/cotap_vit-s16.py',
    '../_base_/schedules/cotap_adamw.py',
    '../_base_/default_runtime.py',
]
train_pipeline = [
    dict(type='LoadRGBImage'),
    dict(
        type='MultiCropWithGeometry',
        global_crops=dict(num=2, size=96, scale=(0.25, 1.0)),
        local_crops=dict(num=4, size=48, scale=(0.05, 0.25)),
        require_overlap=True,
        clean_global_copies=True,
        global_pipelines=[{{_base_.student_photometric}}],
        local_pipeline={{_base_.student_photometric}}),
    dict(type='PackMultiViewInputs', algorithm_keys=['crop_boxes', 'flips']),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    dataset=dict(
        _delete_=True,
        type='NeighbourPairDataset',
        neighbours_file='work_dirs/demo/toy_neighbours.json',
        dataset=dict(type='UnlabeledImageDataset', data_root='data/toy_scenes',
                     ann_file='meta/train.txt', pipeline=train_pipeline)))
model = dict(
    backbone=dict(num_prototypes=16),
    patch_head=dict(out_channels=64),
    cls_head=dict(out_channels=256),
    loss_distill=dict(sinkhorn_epsilon=0.02),
    cross_pool_sizes=(3, ),
    teacher_momentum=0.99,
    end_teacher_momentum=0.999,
    backbone_checkpoint=dict(path='work_dirs/demo/pretrain_dino/epoch_1.pth',
                             prefix='teacher.module.backbone.'))
max_iters = 100
optim_wrapper = dict(optimizer=dict(lr=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=False, begin=0, end=15),
    dict(type='CosineAnnealingLR', T_max=max_iters - 15, eta_min_ratio=0.1, by_epoch=False,
         begin=15, end=max_iters),
    dict(type='CosineAnnealingWeightDecay', eta_min=0.4, T_max=max_iters, by_epoch=False,
         begin=0, end=max_iters),
]
train_cfg = dict(max_iters=max_iters)
custom_hooks = [dict(type='PrototypeInitHook', num_images=32, windows_per_image=16)]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(by_epoch=False, interval=max_iters))
log_processor = dict(by_epoch=False)
auto_scale_lr = dict(base_batch_size=4)
