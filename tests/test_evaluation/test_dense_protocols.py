"""Dense evaluation protocols on synthetic features where the answer is known."""
import pytest
import torch

from mmdense.evaluation import (Clustering, Dispersion, KNNRetrieval, LinearProbe,
                                MemoryFeatureStore, coco_stuff_171_to_27, dense_features,
                                grid_majority_scores, match_clusters, patch_labels,
                                segmentation_scores)

NUM_CLASSES, PATCH = 5, 4


def synthetic(separable: bool, num_images=8, grid=8, dims=32, seed=0):
    """Patch features (N, C, g, g) and pixel labels (N, 4g, 4g) constant on each patch."""
    g = torch.Generator().manual_seed(seed)
    patch_y = torch.randint(0, NUM_CLASSES, (num_images, grid, grid), generator=g)
    if separable:
        means = torch.randn(NUM_CLASSES, dims, generator=g) * 3
        feats = means[patch_y].permute(0, 3, 1, 2) + 0.1 * torch.randn(
            num_images, dims, grid, grid, generator=g)
    else:
        feats = torch.randn(num_images, dims, grid, grid, generator=g)
    labels = patch_y.repeat_interleave(PATCH, 1).repeat_interleave(PATCH, 2)
    return feats, labels


def ram(feats, labels, instances=None):
    return MemoryFeatureStore.from_tensors(feats, labels, instances)


def split_stores(feats, labels):
    """Images 0-3 train, the others val."""
    return ram(feats[:4], labels[:4]), ram(feats[4:], labels[4:])


def test_scores_from_a_known_confusion():
    target = torch.tensor([0, 0, 1, 1, 255])
    pred = torch.tensor([0, 1, 1, 1, 0])
    scores = segmentation_scores(pred, target, num_classes=2)
    # IoU_0 = 1 / (1 + 0 + 1) = 0.5; IoU_1 = 2 / (2 + 1 + 0) = 2/3; the ignored pixel is skipped
    assert scores['mIoU'] == pytest.approx((0.5 + 2 / 3) / 2)
    assert scores['pAcc'] == pytest.approx(3 / 4)


def test_separable_features_are_solved_exactly():
    feats, labels = synthetic(separable=True)
    assert Clustering()(None, ram(feats, labels), NUM_CLASSES)['mIoU'] == 1.0
    over = Clustering(num_clusters=20, matching='majority')(None, ram(feats, labels),
                                                           NUM_CLASSES)
    assert over['mIoU'] == 1.0
    knn = KNNRetrieval(query_points=7)(*split_stores(feats, labels), NUM_CLASSES)
    assert knn == dict(mIoU=1.0, pAcc=1.0, grid_mIoU=1.0)
    # bilinear logits blur the patch borders a little
    assert LinearProbe(epochs=20)(*split_stores(feats, labels), NUM_CLASSES)['mIoU'] > 0.85
    stats = Dispersion()(None, ram(feats, labels), NUM_CLASSES)
    assert stats['intra_class'] > 0.99 and abs(stats['inter_class']) < 0.3


def test_random_features_score_near_chance():
    # chance for 5 balanced classes: pAcc ≈ 0.2, mIoU ≈ 1/9
    feats, labels = synthetic(separable=False)
    results = [
        Clustering()(None, ram(feats, labels), NUM_CLASSES),
        KNNRetrieval()(*split_stores(feats, labels), NUM_CLASSES),
        LinearProbe(epochs=20)(*split_stores(feats, labels), NUM_CLASSES),
    ]
    for scores in results:
        assert scores['mIoU'] < 0.2 and scores['pAcc'] < 0.32, scores
    stats = Dispersion()(None, ram(feats, labels), NUM_CLASSES)
    assert abs(stats['class_gap']) < 0.05


def test_hungarian_leaves_extra_clusters_unmatched_and_majority_merges_them():
    counts = torch.tensor([[10, 8, 0], [0, 0, 5]])  # classes x clusters
    assert match_clusters(counts, 'hungarian').tolist() == [0, -1, 1]
    assert match_clusters(counts, 'majority').tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match='matching'):
        match_clusters(counts, 'greedy')


def test_dispersion_of_orthogonal_classes_and_instances():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[:, :, 4:] = 1
    instances = torch.ones(1, 8, 8, dtype=torch.long)
    instances[:, 4:, :4] = 2  # class 0 is two instances
    instances[:, :, 4:] = 3
    feats = torch.zeros(1, 3, 8, 8)
    feats[:, 0, :4, :4] = 1  # instance 1
    feats[:, 1, 4:, :4] = 1  # instance 2: same class, orthogonal direction
    feats[:, 2, :, 4:] = 1  # class 1
    stats = Dispersion()(None, ram(feats, labels, instances), 2)
    assert stats['intra_instance'] == pytest.approx(1.0)
    # class 0: 32 patches, half/half orthogonal → (2·16² − 32) / (32·31)
    assert stats['intra_class'] == pytest.approx(((2 * 16**2 - 32) / (32 * 31) + 1) / 2)
    assert stats['inter_class'] == pytest.approx(0.0)


def test_patch_labels_take_the_majority_and_ignore_mostly_unlabelled_cells():
    labels = torch.tensor([[[1, 1, 255, 255], [1, 2, 255, 2]]])  # (1, 2, 4)
    assert patch_labels(labels, (1, 2), num_classes=3).tolist() == [[[1, 255]]]


def test_grid_majority_ceiling():
    # labels constant on the cells of the grid: the ceiling is perfect
    feats, labels = synthetic(separable=True)
    assert grid_majority_scores(labels, (8, 8), NUM_CLASSES) == dict(mIoU=1.0, pAcc=1.0)
    # one 2x2 cell holding 3 pixels of class 0 and 1 of class 1, plus an all-ignored cell:
    # the cell predicts 0 → IoU_0 = 3/4, IoU_1 = 0, pAcc = 3/4; ignored pixels do not count
    cell = torch.tensor([[[0, 0, 255, 255], [0, 1, 255, 255]]])
    scores = grid_majority_scores(cell, (1, 2), num_classes=2)
    assert scores['mIoU'] == pytest.approx(3 / 8) and scores['pAcc'] == pytest.approx(3 / 4)
    # on a grid coarser than the labels, kNN (one label per cell) cannot pass the ceiling's pAcc
    coarse = torch.nn.functional.avg_pool2d(feats, 2)
    knn = KNNRetrieval()(ram(coarse[:4], labels[:4]), ram(coarse[4:], labels[4:]), NUM_CLASSES)
    ceiling = grid_majority_scores(labels[4:], (4, 4), NUM_CLASSES)
    assert knn['pAcc'] <= ceiling['pAcc'] < 1.0


def test_dense_features_of_vit_and_resnet_models():
    from mmpretrain.models import ResNet, VisionTransformer
    vit = VisionTransformer(arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                                      feedforward_channels=64), img_size=64, patch_size=16)
    vit.train()
    assert dense_features(vit, torch.randn(2, 3, 64, 64)).shape == (2, 32, 4, 4)
    assert vit.out_type == 'cls_token' and vit.training

    class WithTeacher(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Identity()  # not used: the transfer backbone wins
            self.teacher = {'backbone': ResNet(depth=18, out_indices=(3, ))}

        def transfer_backbone(self):
            return self.teacher['backbone']

    assert dense_features(WithTeacher(), torch.randn(1, 3, 64, 64)).shape == (1, 512, 2, 2)


def test_coco_stuff_171_classes_map_onto_all_27_coarse_classes():
    lut = coco_stuff_171_to_27()
    assert sorted(set(lut[:171].tolist())) == list(range(27))
    assert lut[255] == 255 and lut[0] == 9  # person
