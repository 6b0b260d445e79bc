# Step cost, ViT-S/16 group: CoTAP (target: at most 1.25 x DINO's time per image). The COCO
# recipe of ../../cotap/vit-s_coco.py with the group's views and batch: 2 x 96 px global +
# 4 x 48 px local crops per image (plus the teacher's clean copies of the global crops, which
# the recipe has), 4 pairs = 8 images per step, toy scenes. Two settings follow the crop size:
# the cross-image pooling grid is 3 (the recipe's 7 is half the 14 x 14 patch grid of 224 px
# crops; 96 px crops give 6 x 6), and the pairs come from a ring neighbour file (image i with
# i + 1, i + 2) that benchmark.py writes first (ring_neighbours), since the pairing does not
# change the step's cost.
# No DINO initialisation (backbone_checkpoint): it does not change the cost either.
_base_ = ['../../cotap/vit-s_coco.py']

# train_pipeline = [LoadRGBImage, MultiCropWithGeometry, PackMultiViewInputs]
train_pipeline = _base_.train_pipeline
train_pipeline[1].global_crops.update(num=2, size=96)
train_pipeline[1].local_crops.update(num=4, size=48)
train_dataloader = dict(
    batch_size=4,  # pairs
    num_workers=2,
    persistent_workers=False,
    dataset=dict(
        neighbours_file='work_dirs/step_cost/ring_neighbours.json',
        dataset=dict(data_root='data/toy_scenes/', data_prefix='', ann_file='meta/train.txt',
                     pipeline=train_pipeline)))
ring_neighbours = 2
model = dict(cross_pool_sizes=(3, ), backbone_checkpoint=None)
