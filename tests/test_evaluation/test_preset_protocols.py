"""Each preset's protocol against its reference, on tiny cases worked out by hand (numbers in the
comments), or against numpy. configs/dense_eval/README.md lists which point each test pins."""
import ast
import dataclasses
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmdense.evaluation.feature_store import FeatureStore
from mmdense.evaluation.preset_eval import evaluate_preset
from mmdense.evaluation.presets import PRESETS, format_preset, get_preset
from mmdense.evaluation.protocols import (Clustering, LinearProbe, PointTransform,
                                          cluster_scores, evaluate_protocol, match_clusters)
from helpers import ROOT
from official_layouts import tiny_preset


def store_of(folder, feats, labels):
    store = FeatureStore(str(folder))
    store.append(feats, labels, torch.arange(len(feats)))
    return store


def cluster_options(preset_name, index, **overrides):
    """The options of the ``index``-th protocol of a preset (a cluster protocol), changed."""
    protocol, options = get_preset(preset_name).protocols[index]
    assert protocol == 'cluster'
    return dict(options, **overrides)


def test_coco_stuff27_assigns_val_to_centroids_fit_on_train(tmp_path):
    """Train points lie on e1 = (1, 0) and e2 = (0, 1): the K=2 centroids are e1 and e2. Each
    val row is [a, b] with a = e1 and b = (0.6, 0.8) (cosines: a·e1 = 1, a·e2 = 0, b·e1 = 0.6,
    b·e2 = 0.8). PiCIE upsamples the similarity maps bilinearly from width 2 to 4 (sample
    points -0.25 → a, 0.25, 0.75, 1.25 → b): e1 [1, .9, .7, .6], e2 [0, .2, .6, .8], argmax
    [e1, e1, e1, e2], which matches the labels [0, 0, 0, 1] exactly: mIoU = pAcc = 1. (Fitted
    on val, the centroids are a and b themselves: a map [a, a, b, b], pAcc 0.75.)"""
    e1, e2, b = torch.tensor([1., 0.]), torch.tensor([0., 1.]), torch.tensor([.6, .8])
    train = torch.stack([e1, e2, e2, e1]).T.reshape(1, 2, 2, 2).repeat(3, 1, 1, 1)
    val = torch.stack([e1, b, e1, b]).T.reshape(1, 2, 2, 2)
    labels = torch.tensor([0, 0, 0, 1]).repeat(4, 1)[None]
    train_store = store_of(tmp_path / 'train', train, torch.zeros(3, 4, 4, dtype=torch.long))
    val_store = store_of(tmp_path / 'val', val, labels)
    options = cluster_options('coco_stuff27', 1, num_clusters=2)
    metrics = evaluate_protocol('cluster', train_store, val_store, 2, **options)
    assert metrics['mIoU'] == 1.0 and metrics['pAcc'] == 1.0


@pytest.mark.parametrize('backbone', ['vit/8', 'resnet os8'])
def test_features_are_taken_at_the_native_stride(backbone, toy_root):
    """A ViT/8 and a dilated ResNet-18 of output stride 8 at 64 px: both give 8 x 8 feature
    maps, and every preset evaluates them on that grid (not resampled to stride 16: 4 x 4)."""
    from mmpretrain.models import ResNetV1c, VisionTransformer
    torch.manual_seed(0)
    if backbone == 'vit/8':
        model = VisionTransformer(arch=dict(embed_dims=32, num_layers=1, num_heads=2,
                                            feedforward_channels=32), img_size=64, patch_size=8,
                                  out_type='featmap')
    else:
        model = ResNetV1c(depth=18, strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4),
                          out_indices=(3, ))
    model.eval()
    own = model(torch.zeros(1, 3, 64, 64))[-1]
    assert tuple(own.shape[-2:]) == (8, 8)
    for name in PRESETS:
        assert get_preset(name).grid is None
    preset = dataclasses.replace(tiny_preset(get_preset('toy')),
                                 protocols=(('dispersion', {}), ))
    record = evaluate_preset(model, preset, toy_root, num_workers=0, batch_size=4,
                             progress=False, log=lambda *_: None)
    assert record['feature_grid'] == [8, 8]


def test_hungarian_on_iou_and_on_pixels_pick_differently():
    """Class 0 has 85 pixels (30 in cluster 0, 55 in cluster 1), class 1 has 20 (all in
    cluster 1). Pixels: identity 30 + 20 = 50 < swap 55 + 0 = 55, so pixel matching (PiCIE)
    maps cluster 1 → class 0. IoU (Leopart): identity 30/85 + 20/75 = 0.620 > swap
    55/105 + 0 = 0.524, so cluster k → class k, and mIoU = (30/85 + 20/75) / 2."""
    matrix = torch.tensor([[30, 55], [0, 20]])
    assert match_clusters(matrix, 'hungarian').tolist() == [1, 0]
    assert match_clusters(matrix, 'hungarian_iou').tolist() == [0, 1]
    scores = cluster_scores(matrix, 'hungarian_iou')
    assert scores['mIoU'] == pytest.approx((30 / 85 + 20 / 75) / 2)
    assert scores['pAcc'] == pytest.approx(50 / 105)
    assert get_preset('voc12_leopart').protocols[1][1]['matching'] == 'hungarian_iou'
    assert get_preset('coco_stuff27').protocols[1][1]['matching'] == 'hungarian'


def test_standardised_pca_equals_numpy(tmp_path):
    """Leopart's clustering input: per-channel standardisation (population std; a constant
    channel is left at 0, as scikit-learn does) then the top principal components, here
    against numpy's SVD of the standardised rows (each component up to its sign)."""
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(6 * 9, 8)) * np.array([1, 5, .2, 3, 1, 1, 2, 0]) + 4
    rows[:, 1] += 2 * rows[:, 0]  # correlated channels
    feats = torch.tensor(rows, dtype=torch.float32).reshape(6, 3, 3, 8).permute(0, 3, 1, 2)
    store = store_of(tmp_path / 'store', feats, torch.zeros(6, 3, 3, dtype=torch.long))
    transform = PointTransform(store, 'euclidean', pca_dim=3, chunk_images=4)
    std = rows.std(0)
    z = (rows - rows.mean(0)) / np.where(std > 0, std, 1)
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    expected = z @ vt[:3].T
    got = transform(feats).double().numpy()
    signs = np.sign((got * expected).sum(0))
    np.testing.assert_allclose(got * signs, expected, atol=1e-4)


def test_euclidean_kmeans_keeps_the_restart_of_lowest_inertia():
    """Euclidean k-means of (0, 0), (0, 2), (10, 0), (10, 2) with K=2: centroids are the
    means (0, 1) and (10, 1) (not unit vectors), inertia 4. With restarts, the returned run is
    the one of lowest inertia among the runs drawn one after the other from the generator."""
    from mmdense.models.utils.kmeans import kmeans
    points = torch.tensor([[0., 0.], [0., 2.], [10., 0.], [10., 2.]])
    centroids, assign = kmeans(points, 2, 10, torch.Generator().manual_seed(0), 'euclidean', 5)
    assert sorted(centroids.tolist()) == [[0., 1.], [10., 1.]]
    assert assign[0] == assign[1] != assign[2] == assign[3]
    # points where single runs land in different minima: the best of 5 has the least inertia
    cloud = torch.randn(300, 2, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(3)

    def inertia(c, a):
        return float(((cloud - c[a])**2).sum())

    singles = [inertia(*kmeans(cloud, 7, 2, generator, 'euclidean')) for _ in range(5)]
    best = inertia(*kmeans(cloud, 7, 2, torch.Generator().manual_seed(3), 'euclidean', 5))
    assert len(set(singles)) > 1 and best == min(singles)


def test_leopart_clustering_reports_mean_and_std_over_seeds(tmp_path):
    """Two feature groups (left and right halves of a 2 x 2 grid); labels 8 x 8: class 0 on
    columns 0-3 and 7, class 1 on columns 4-6. Leopart scores clusters at 100 px: here at 4 px
    (nearest keeps columns 0, 2, 4, 6), where the clustering is exact (mIoU = pAcc = 1 for
    every seed: std 0); at 8 px, column 7 would be wrong (pAcc 56/64)."""
    a, b = torch.tensor([3., 1., 0.]), torch.tensor([-1., 2., 5.])
    feats = torch.stack([a, b, a, b]).T.reshape(1, 3, 2, 2).repeat(2, 1, 1, 1)
    feats = feats + 0.01 * torch.randn(feats.shape, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 0]).repeat(8, 1)[None].repeat(2, 1, 1)
    store = store_of(tmp_path / 'val', feats, labels)
    options = cluster_options('voc12_leopart', 1, num_clusters=2, pca_dim=2, score_size=4)
    assert options['num_seeds'] == 5 and options['num_init'] == 5
    metrics = Clustering(**options).evaluate(None, store, 2, 255, 'cpu')
    assert metrics == dict(mIoU=1.0, mIoU_std=0.0, pAcc=1.0, pAcc_std=0.0)
    unscored = Clustering(**dict(options, score_size=None))(None, store, 2)
    assert unscored['pAcc'] == pytest.approx(56 / 64)
    # on features where seeds disagree: the mean and population std of the single-seed runs
    noise = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    random_labels = torch.randint(0, 3, (4, 4, 4), generator=torch.Generator().manual_seed(2))
    noisy = store_of(tmp_path / 'noisy', noise, random_labels)
    options = dict(options, num_clusters=3, num_seeds=3, num_iters=2, num_init=1, score_size=None)
    runs = [Clustering(**dict(options, seed=s, num_seeds=1))(None, noisy, 3)
            for s in range(3)]
    metrics = Clustering(**options)(None, noisy, 3)
    miou = np.array([run['mIoU'] for run in runs])
    assert len(set(miou)) > 1
    assert metrics['mIoU'] == pytest.approx(miou.mean())
    assert metrics['mIoU_std'] == pytest.approx(miou.std())


def test_leopart_linear_probe_step_by_hand(tmp_path):
    """One epoch of Leopart's probe on 3 stored images at batch 2: the last, incomplete batch is
    dropped, so the probe takes one SGD step, on the features as stored (no standardisation),
    with labels brought (nearest) to the training size. Recomputed with plain torch."""
    options = dict(get_preset('voc12_leopart').protocols[0][1])
    assert (options['batch_size'], options['train_label_size']) == (120, 100)
    assert get_preset('voc12_leopart').label_size == 448  # scored at 448, trained at 100
    generator = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 4, 2, 2, generator=generator) * 3 + 1
    labels = torch.randint(0, 3, (3, 8, 8), generator=generator)
    labels[:, 0] = 255
    store = store_of(tmp_path / 'train', feats, labels)
    options.update(epochs=1, batch_size=2, train_label_size=4)
    probe, mean, std = LinearProbe(**options).fit(store, 3)
    assert (mean == 0).all() and (std == 1).all()
    # by hand: torch.randperm(3) from a generator seeded 0 names the first batch
    batch = torch.randperm(3, generator=torch.Generator().manual_seed(0))[:2].sort().values
    conv = torch.nn.Conv2d(4, 3, 1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        conv.reset_parameters()
    small = labels[batch][:, None].float()
    small = F.interpolate(small, size=(4, 4), mode='nearest')[:, 0].long()
    logits = F.interpolate(conv(feats[batch]), size=(4, 4), mode='bilinear', align_corners=False)
    F.cross_entropy(logits, small, ignore_index=255).backward()
    with torch.no_grad():
        for param in conv.parameters():  # SGD's first step: buffer = grad + wd·w
            param -= 0.01 * (param.grad + 1e-4 * param)
    assert torch.allclose(probe.weight, conv.weight, atol=1e-6)
    assert torch.allclose(probe.bias, conv.bias, atol=1e-6)


def test_every_point_names_an_existing_test_and_is_printed():
    """Each preset's points are printed by --list-presets (format_preset) with the reference,
    and each departure with its reason; the test named for a point exists."""
    defined = {}
    for name in PRESETS:
        preset = get_preset(name)
        text = format_preset(preset)
        assert preset.points
        for point in preset.points:
            assert point.reference in text and point.value in text
            if point.departure:
                assert point.departure in text
            if point.test:
                path, test = point.test.split('::')
                if path not in defined:
                    with open(osp.join(ROOT, path)) as f:
                        defined[path] = {node.name for node in ast.walk(ast.parse(f.read()))
                                         if isinstance(node, ast.FunctionDef)}
                assert test in defined[path], point.test
