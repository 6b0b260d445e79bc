# CoTAP ViT-B/16 on COCO pairs from DINO ViT-B/16: 8 GPUs x 16 pairs, 210k iterations.
_base_ = ['./vit-s_coco.py']
model = dict(
    backbone=dict(arch='base'),
    patch_head=dict(in_channels=1536),
    cls_head=dict(in_channels=1536),
    backbone_checkpoint=dict(path='checkpoints/dino_vit-b16_mmdense.pth'))
train_dataloader = dict(
    batch_size=16,
    dataset=dict(neighbours_file='data/coco/meta/nn_dino_vit-b16_top20.json'))
max_iters = 210000
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=max_iters, eta_min_ratio=0.1, by_epoch=False, begin=0,
         end=max_iters),
    dict(type='CosineAnnealingWeightDecay', eta_min=0.4, T_max=max_iters, by_epoch=False,
         begin=0, end=max_iters),
]
train_cfg = dict(max_iters=max_iters)
auto_scale_lr = dict(base_batch_size=128)
