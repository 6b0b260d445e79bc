# CoTAP ViT-S/16 on COCO train2017 pairs, initialised from DINO ViT-S/16 (the paper's setting):
# 8 GPUs x 32 pairs, 240k iterations. Before training:
#   1. convert the DINO weights: tools/model_converters/import_weights.py SRC OUT --from dino (see
#      configs/cotap/README.md) -> checkpoints/dino_vit-s16_mmdense.pth
#   2. neighbours: python tools/misc/build_nn_pairs.py configs/cotap/vit-s_coco.py \
#        checkpoints/dino_vit-s16_mmdense.pth --out data/coco/meta/nn_dino_vit-s16_top20.json
_base_ = [
    '../_base_/datasets/coco_unlabeled.py',
    '../_base_/pipelines/cotap_multicrop.py',
    '../_base_/models/cotap_vit-s16.py',
    '../_base_/schedules/cotap_adamw.py',
    '../_base_/default_runtime.py',
]
train_dataloader = dict(
    batch_size=32,
    dataset=dict(
        _delete_=True,
        type='NeighbourPairDataset',
        neighbours_file='data/coco/meta/nn_dino_vit-s16_top20.json',
        dataset=dict(type='UnlabeledImageDataset', data_root='data/coco/',
                     data_prefix='train2017/', pipeline={{_base_.train_pipeline}})))
model = dict(backbone_checkpoint=dict(path='checkpoints/dino_vit-s16_mmdense.pth',
                                      prefix='teacher.module.backbone.'))
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=10000))
log_processor = dict(by_epoch=False)
