# CoTAP ViT-S/16 as in the paper's main setting: the patch losses on COCO pairs, the CLS losses on
# ImageNet-1K pairs. Every batch comes from one source (SourceGroupedBatchSampler, the same source
# on all ranks at each step), in equal proportion; each source's NeighbourPairDataset names the
# loss terms it feeds. Build both neighbour files with tools/misc/build_nn_pairs.py first (for
# ImageNet, use a config whose train_dataloader lists ImageNet, e.g.
# configs/dino/vit-s_in1k-300e.py).
_base_ = ['./vit-s_coco.py']
coco_pairs = dict(
    type='NeighbourPairDataset',
    neighbours_file='data/coco/meta/nn_dino_vit-s16_top20.json',
    loss_terms=['patch', 'cross_patch'],
    dataset=dict(type='UnlabeledImageDataset', data_root='data/coco/', data_prefix='train2017/',
                 pipeline={{_base_.train_pipeline}}))
imagenet_pairs = dict(
    type='NeighbourPairDataset',
    neighbours_file='data/imagenet/meta/nn_dino_vit-s16_top20.json',
    loss_terms=['cls', 'cross_cls'],
    dataset=dict(type='UnlabeledImageDataset', data_root='data/imagenet/', data_prefix='train/',
                 check_files=False, pipeline={{_base_.train_pipeline}}))
train_dataloader = dict(
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='SourceGroupedBatchSampler', source_ratios=(1, 1)),
    dataset=dict(_delete_=True, type='ConcatDataset', datasets=[coco_pairs, imagenet_pairs]))
# a step feeds either the patch or the CLS head: the other gets no gradient that step
model_wrapper_cfg = dict(type='MMDistributedDataParallel', find_unused_parameters=True)
