"""Streaming dense evaluation equals the in-memory protocols, in chunks and on 2 processes."""
import tempfile

import pytest
import torch
import torch.nn.functional as F
from distributed import run_on_ranks

from mmdense.evaluation import (cluster_segmentation, dispersion_stats, extract_features,
                                grid_majority_scores, knn_segmentation, linear_probe)
from mmdense.evaluation.protocols import fit_linear_probe, flatten_features
from mmdense.evaluation.feature_store import FeatureStore
from mmdense.evaluation.streaming import (_LloydPass, _points, run_stream_protocol,
                                          stream_cluster_segmentation, stream_dispersion,
                                          stream_fit_linear_probe, stream_grid_ceiling,
                                          stream_knn, stream_linear_probe,
                                          stream_spherical_kmeans)
from mmdense.models.utils import spherical_kmeans

NUM_CLASSES, PATCH, GRID, DIMS = 5, 4, 6, 16
NUM_TRAIN, NUM_VAL = 10, 6


def synthetic(num_images, seed, noise=1.2):
    """Overlapping classes (a known but imperfect answer): patch features ``(N, C, g, g)`` around
    class means, pixel labels ``(N, 4g, 4g)`` with an ignored corner, and instance maps (each
    labelled patch row of a class is one instance)."""
    g = torch.Generator().manual_seed(seed)
    patch_y = torch.randint(0, NUM_CLASSES, (num_images, GRID, GRID), generator=g)
    means = torch.randn(NUM_CLASSES, DIMS, generator=torch.Generator().manual_seed(99))
    feats = means[patch_y].permute(0, 3, 1, 2) + noise * torch.randn(
        num_images, DIMS, GRID, GRID, generator=g)
    labels = patch_y.repeat_interleave(PATCH, 1).repeat_interleave(PATCH, 2)
    labels[:, :6, :6] = 255
    rows = torch.arange(GRID).view(1, GRID, 1).expand(num_images, GRID, GRID)
    instances = (rows * NUM_CLASSES + patch_y + 1).repeat_interleave(PATCH, 1)
    instances = instances.repeat_interleave(PATCH, 2)
    return feats, labels, instances


TRAIN = synthetic(NUM_TRAIN, seed=1)
VAL = synthetic(NUM_VAL, seed=2)


def make_store(data, folder, rank=0, world_size=1, batch=3, dtype='float32'):
    """The store of rank ``rank``: images ``rank, rank + W, ...`` appended ``batch`` at a time."""
    feats, labels, instances = data
    store = FeatureStore(folder, dtype)
    for part in torch.arange(rank, len(feats), world_size).split(batch):
        store.append(feats[part], labels[part], part, instances[part])
    return store


@pytest.fixture
def stores(tmp_path):
    return make_store(TRAIN, str(tmp_path / 'train')), make_store(VAL, str(tmp_path / 'val'))


def test_store_reads_back_what_was_appended(tmp_path):
    feats, labels, instances = TRAIN
    store = make_store(TRAIN, str(tmp_path / 'exact'), rank=1, world_size=2)
    assert len(store) == NUM_TRAIN // 2 and store.indices == [1, 3, 5, 7, 9]
    chunk = store.read([0, 1, 4])  # two runs of rows
    assert torch.equal(chunk['indices'], torch.tensor([1, 3, 9]))
    assert torch.equal(chunk['feats'], feats[[1, 3, 9]])
    assert torch.equal(chunk['labels'], labels[[1, 3, 9]])
    assert torch.equal(chunk['instances'], instances[[1, 3, 9]])
    assert [len(c['indices']) for c in store.chunks(2)] == [2, 2, 1]
    half = make_store(TRAIN, str(tmp_path / 'half'), dtype='float16')
    assert torch.allclose(half.read(range(NUM_TRAIN))['feats'], feats, atol=4e-3)
    with pytest.raises(ValueError, match=r'feats of shape \(16, 3, 3\) after \(16, 6, 6\)'):
        store.append(feats[:1, :, :3, :3], labels[:1], [0])
    store.remove()
    assert not (tmp_path / 'exact').exists()


@pytest.mark.parametrize('optim_cfg', [dict(), dict(optimizer='sgd', lr=0.05, momentum=0.9,
                                                    weight_decay=1e-4, lr_step=2)])
def test_streaming_linear_probe_trains_the_in_memory_probe(stores, optim_cfg):
    train, val = stores
    options = dict(epochs=3, batch_size=4, seed=3, **optim_cfg)
    probe, mean, std = fit_linear_probe(TRAIN[0], TRAIN[1], NUM_CLASSES, **options)
    streamed, stream_mean, stream_std = stream_fit_linear_probe(train, NUM_CLASSES,
                                                                chunk_images=3, **options)
    assert torch.allclose(stream_mean, mean, atol=1e-5)
    assert torch.allclose(stream_std, std, rtol=1e-5)
    for name, weight in probe.state_dict().items():
        assert torch.allclose(streamed.state_dict()[name], weight, atol=1e-5), name
    expected = linear_probe(*TRAIN[:2], *VAL[:2], NUM_CLASSES, **options)
    assert 0.2 < expected['mIoU'] < 0.95  # neither chance nor solved: the comparison means sth
    assert stream_linear_probe(train, val, NUM_CLASSES, chunk_images=4,
                               **options) == pytest.approx(expected, abs=1e-6)


def test_streaming_knn_equals_in_memory_knn(stores):
    train, val = stores
    expected = knn_segmentation(*TRAIN[:2], *VAL[:2], NUM_CLASSES, k=7)
    assert 0.2 < expected['mIoU'] < 0.95
    for chunk_images, query_images in ((1, 1), (4, 5)):
        assert stream_knn(train, val, NUM_CLASSES, k=7, chunk_images=chunk_images,
                          query_images=query_images) == pytest.approx(expected, abs=1e-9)


def test_streaming_knn_with_a_bank_smaller_than_k(tmp_path):
    one = tuple(t[:1] for t in TRAIN)
    train, val = make_store(one, str(tmp_path / 't')), make_store(VAL, str(tmp_path / 'v'))
    expected = knn_segmentation(*one[:2], *VAL[:2], NUM_CLASSES, k=100)  # 30 labelled patches
    assert stream_knn(train, val, NUM_CLASSES, k=100) == pytest.approx(expected, abs=1e-9)


def test_streaming_kmeans_equals_spherical_kmeans(stores):
    _, val = stores
    expected, _ = spherical_kmeans(flatten_features(VAL[0]), 20, 6,
                                   torch.Generator().manual_seed(5))
    streamed = stream_spherical_kmeans(val, 20, 6, torch.Generator().manual_seed(5),
                                       chunk_images=2)
    assert torch.allclose(streamed, expected, atol=1e-5)


def lifted_points_and_centroids():
    """Val features lifted along channel 0 (every point has ``x_0 > 0``), and 10 centroids: 6
    of the points, then 4 with ``c_0 < 0`` that no point is nearest to (empty clusters)."""
    feats = VAL[0].clone()
    feats[:, 0] += 6
    points = flatten_features(feats)
    away = torch.randn(4, DIMS, generator=torch.Generator().manual_seed(8)) * 0.1
    away[:, 0] = -1
    centroids = torch.cat([points[[0, 40, 80, 120, 160, 200]], F.normalize(away, dim=1)])
    return feats, points, centroids


def lloyd_step(store, centroids):
    lloyd = _LloydPass(centroids)
    for x, index, _ in _points(store, 2, 'cpu'):
        lloyd.add(x, index)
    lloyd.reduce()
    lloyd.reseed_empty()
    return lloyd.centroids_update()


def test_lloyd_pass_reseeds_empty_clusters_as_spherical_kmeans(tmp_path):
    from mmdense.models.utils.kmeans import _nearest_centroid, _reseed_empty_clusters
    feats, points, centroids = lifted_points_and_centroids()
    similarity, assignments = _nearest_centroid(points, centroids)
    assert (torch.bincount(assignments, minlength=10)[6:] == 0).all()
    assignments = _reseed_empty_clusters(assignments, similarity, 10)
    sums = torch.zeros_like(centroids).index_add_(0, assignments, points)
    expected = F.normalize(sums, dim=1)
    store = make_store((feats, *VAL[1:]), str(tmp_path / 'val'))
    assert torch.allclose(lloyd_step(store, centroids), expected, atol=1e-6)


def test_streaming_kmeans_seeds_from_a_sample_when_there_are_many_points(stores):
    _, val = stores
    centroids = [
        stream_spherical_kmeans(val, 5, 5, torch.Generator().manual_seed(0), max_seed_points=60,
                                sample_seed=seed) for seed in (0, 0, 1)
    ]
    assert torch.equal(centroids[0], centroids[1])  # deterministic
    assert not torch.equal(centroids[0], centroids[2])  # another sample, other seeds
    assert torch.allclose(centroids[0].norm(dim=1), torch.ones(5))


@pytest.mark.parametrize('num_clusters,matching', [(5, 'hungarian'), (12, 'majority')])
def test_streaming_cluster_segmentation_equals_in_memory(stores, num_clusters, matching):
    _, val = stores
    options = dict(num_clusters=num_clusters, matching=matching, seed=1, num_iters=10,
                   num_init=2)
    expected = cluster_segmentation(*VAL[:2], NUM_CLASSES, **options)
    assert 0.2 < expected['mIoU'] < 0.99
    assert stream_cluster_segmentation(val, NUM_CLASSES, chunk_images=4,
                                       **options) == pytest.approx(expected, abs=1e-9)


def test_streaming_dispersion_and_grid_ceiling_equal_in_memory(stores):
    _, val = stores
    expected = dispersion_stats(VAL[0], VAL[1], NUM_CLASSES, instances=VAL[2])
    assert set(expected) == {'intra_class', 'inter_class', 'class_gap', 'intra_instance'}
    assert stream_dispersion(val, NUM_CLASSES, chunk_images=4) == pytest.approx(expected,
                                                                                 abs=1e-6)
    ceiling = grid_majority_scores(VAL[1], (GRID, GRID), NUM_CLASSES)
    assert stream_grid_ceiling(val, NUM_CLASSES, chunk_images=4) == ceiling


SETTINGS = dict(
    linear=dict(epochs=2, batch_size=4, seed=3),
    knn=dict(k=7, query_images=2, chunk_images=2),
    cluster_hungarian=dict(num_clusters=5, matching='hungarian', num_iters=5, num_init=2),
    cluster_majority=dict(num_clusters=12, matching='majority', num_iters=5, num_init=2,
                          max_seed_points=100),
    dispersion=dict(),
)


def all_protocols(rows):
    """Every protocol on this process's shard (the ``rows`` of the helper are not used: the
    stores shard by rank, as the streaming extraction does)."""
    from mmdense.utils.dist import get_rank, get_world_size
    folder = tempfile.mkdtemp()
    rank, world_size = get_rank(), get_world_size()
    train = make_store(TRAIN, f'{folder}/train', rank, world_size, batch=2)
    val = make_store(VAL, f'{folder}/val', rank, world_size, batch=2)
    results = {
        name: run_stream_protocol(name.split('_')[0], train, val, NUM_CLASSES, **options)
        for name, options in SETTINGS.items()
    }
    feats, _, centroids = lifted_points_and_centroids()
    lifted = make_store((feats, *VAL[1:]), f'{folder}/lifted', rank, world_size, batch=2)
    results['lloyd_step_with_empty_clusters'] = lloyd_step(lifted, centroids)
    return results


def test_two_processes_give_the_single_process_results(tmp_path):
    ranks = run_on_ranks(all_protocols, NUM_TRAIN, tmp_path, world_size=2)
    single = all_protocols(slice(None))
    assert 0.2 < single['cluster_majority']['mIoU'] < 1.0  # on a sample of the points
    for rank in ranks:
        assert rank.keys() == single.keys()
        assert torch.allclose(rank.pop('lloyd_step_with_empty_clusters'),
                              single['lloyd_step_with_empty_clusters'], atol=1e-6)
        for name, metrics in rank.items():
            assert metrics == pytest.approx(single[name], abs=1e-6), name


def test_streaming_extraction_from_a_data_loader_equals_in_memory_features(toy_root, tmp_path):
    from mmpretrain.models import VisionTransformer

    from mmdense.evaluation import DenseEvalDataset, load_dataset_config, load_split
    from mmdense.evaluation.feature_store import build_loader, extract_to_store
    data_cfg = dict(load_dataset_config('toy', toy_root), img_size=64)
    torch.manual_seed(0)
    vit = VisionTransformer(arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                                      feedforward_channels=64), img_size=64, patch_size=16)
    split = load_split(data_cfg, 'val', 5)
    store = FeatureStore(str(tmp_path / 'store'))
    loader = build_loader(DenseEvalDataset(data_cfg, 'val', 5), batch_size=2, num_workers=1)
    extract_to_store(vit, loader, store, channel_order='rgb')
    stored = store.read(range(5))
    expected = extract_features(vit, split['images'], channel_order='rgb')
    assert torch.allclose(stored['feats'], expected, atol=1e-5)
    assert torch.equal(stored['labels'], split['labels'])
    assert torch.equal(stored['instances'], split['instances'])
    # a coarser preset grid resamples the features
    coarse = FeatureStore(str(tmp_path / 'coarse'))
    extract_to_store(vit, loader, coarse, channel_order='rgb', grid=(2, 2))
    assert coarse.feat_shape == (32, 2, 2)
