import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import default_collate
from mmengine.registry import init_default_scope

from mmdense.datasets.transforms import (MultiCropWithGeometry, MultiCropWithQueries,
                                         PackMultiViewInputs)
from mmdense.models.backbones import QueryVisionTransformer
from mmdense.registry import MODELS
from mmdense.utils import register_all_modules
from test_train_resume import ROOT

TINY_ARCH = dict(embed_dims=48, num_layers=2, num_heads=3, feedforward_channels=96)


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """Tiny models run much faster on one thread than on a busy multi-core CPU."""
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(num_threads)


def tiny_vit(training=True, **kwargs):
    torch.manual_seed(0)
    vit = QueryVisionTransformer(img_size=32, patch_size=16, arch=TINY_ARCH, **kwargs)
    vit.init_weights()
    vit.train(training)
    return vit


def tiny_model_cfg(algorithm='ADCLR', **kwargs):
    backbone_type = 'QueryVisionTransformer' if algorithm == 'ADCLR' else 'VisionTransformer'
    return dict(
        type=algorithm,
        backbone=dict(type=backbone_type, img_size=32, patch_size=16, drop_path_rate=0.1,
                      arch=TINY_ARCH),
        head=dict(type='DINOHead', in_channels=48, out_channels=64, hidden_channels=48,
                  bottleneck_channels=16, norm_last_layer=False),
        loss=dict(type='DINOLoss', out_channels=64),
        teacher_momentum=0.9,
        **kwargs)


def build(cfg):
    register_all_modules(init_default_scope=False)
    init_default_scope('mmdense')
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def batch(batch_size=3, num_queries=4, query_size=16, seed=0):
    """2 global (32 px) + 2 local (16 px) views and ``num_queries`` query crops per image."""
    g = torch.Generator().manual_seed(seed)
    views = [torch.randn(batch_size, 3, 32, 32, generator=g) for _ in range(2)]
    views += [torch.randn(batch_size, 3, 16, 16, generator=g) for _ in range(2)]
    queries = [torch.randn(batch_size, 3, query_size, query_size, generator=g)
               for _ in range(num_queries)]
    return views, queries


def samples(batch_size=3, num_queries=4):
    from mmpretrain.structures import DataSample
    return [DataSample(num_queries=num_queries) for _ in range(batch_size)]


@pytest.mark.parametrize('kwargs,query_size', [
    (dict(), 16), (dict(query_attend_queries=True), 16), (dict(query_pos_embed=True), 32)
])
def test_image_tokens_are_bit_identical_with_and_without_queries(kwargs, query_size):
    vit = tiny_vit(out_type='raw', drop_path_rate=0.5, **kwargs)
    images = torch.randn(2, 3, 48, 64)
    queries = torch.randn(2, 5, 3, query_size, query_size)
    vit.eval()
    plain = vit(images)[0]
    assert torch.equal(vit.forward_with_queries(images, queries)[0][0], plain)
    assert torch.equal(vit.forward_with_queries(images, queries.flip(1) * 3)[0][0], plain)
    vit.train()  # drop-path draws are shared by both streams: same seed, same image outputs
    torch.manual_seed(1)
    plain = vit(images)[0]
    torch.manual_seed(1)
    assert torch.equal(vit.forward_with_queries(images, queries)[0][0], plain)


@pytest.mark.parametrize('attend_queries', [False, True])
def test_a_query_output_follows_its_own_crop(attend_queries):
    vit = tiny_vit(training=False, query_attend_queries=attend_queries)
    images, queries = torch.randn(2, 3, 32, 32), torch.randn(2, 4, 3, 16, 16)
    _, feats = vit.forward_with_queries(images, queries)
    assert feats.shape == (2, 4, 48)
    changed = queries.clone()
    changed[:, 1] = torch.randn(2, 3, 16, 16)
    _, new_feats = vit.forward_with_queries(images, changed)
    assert not torch.isclose(new_feats[:, 1], feats[:, 1]).any()
    others = [0, 2, 3]
    # without query↔query attention the other queries do not see the change at all
    assert torch.equal(new_feats[:, others], feats[:, others]) != attend_queries


def test_multi_patch_queries_are_mean_pooled_and_isolated():
    vit = tiny_vit(training=False)
    images, queries = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 3, 32, 32)
    _, feats = vit.forward_with_queries(images, queries)
    assert feats.shape == (2, 3, 48)  # 4 tokens per query, one output per query
    changed = queries.clone()
    changed[:, 0, :, :16, :16] = 0  # one patch of query 0
    _, new_feats = vit.forward_with_queries(images, changed)
    assert not torch.equal(new_feats[:, 0], feats[:, 0])
    assert torch.equal(new_feats[:, 1:], feats[:, 1:])


def test_gradients_reach_the_patch_embedding_through_query_tokens():
    vit = tiny_vit()
    images = torch.randn(2, 3, 32, 32)
    queries = torch.randn(2, 3, 3, 16, 16, requires_grad=True)
    _, feats = vit.forward_with_queries(images, queries)
    feats.pow(2).sum().backward()
    assert queries.grad.abs().sum() > 0
    assert vit.patch_embed.projection.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in vit.layers.parameters())


def test_query_size_must_be_a_multiple_of_the_patch_size():
    vit = tiny_vit()
    with pytest.raises(ValueError, match=r'query crops of \(24, 24\) px.*patch size \(16, 16\)'):
        vit.forward_with_queries(torch.randn(1, 3, 32, 32), torch.randn(1, 2, 3, 24, 24))
    with pytest.raises(ValueError, match='Q >= 1'):
        vit.forward_with_queries(torch.randn(1, 3, 32, 32), torch.randn(1, 0, 3, 16, 16))


def test_query_loss_matches_hand_computation(message_hub_max_iters):
    model = build(tiny_model_cfg(query_loss_weight=0.5, query_teacher_temp=0.05))
    model.eval()  # no drop-path: the student forward can be repeated exactly
    model.query_loss_module.center.fill_(0.1)
    views, queries = batch()
    losses = model.loss(views + queries, samples())
    assert set(losses) == {'loss_dino', 'loss_query'}

    with torch.no_grad():
        crops = torch.stack(queries, 1)  # (B, Q, 3, 16, 16)
        teacher = model.teacher['head'](model.teacher['backbone'](crops.flatten(0, 1))[-1])
        teacher = teacher.view(3, 4, -1)  # (B, Q, K), from each crop encoded on its own
        student = torch.stack([
            model.head(model.backbone.forward_with_queries(view, crops)[1]) for view in views[:2]
        ])  # (V_g, B, Q, K)
    expected, terms = 0.0, 0
    for v in range(2):
        for b in range(3):
            for q in range(4):
                target = F.softmax((teacher[b, q] - 0.1) / 0.05, dim=-1)
                expected += -(target * F.log_softmax(student[v, b, q] / 0.1, dim=-1)).sum()
                terms += 1
    assert math.isclose(losses['loss_query'].item(), 0.5 * expected.item() / terms, rel_tol=1e-5)
    expected_center = 0.9 * 0.1 + 0.1 * teacher.mean(dim=(0, 1))
    assert torch.allclose(model.query_loss_module.center[0], expected_center, atol=1e-6)


def test_dino_term_is_dinos_loss_bit_for_bit(message_hub_max_iters):
    adclr = build(tiny_model_cfg())
    dino = build(tiny_model_cfg('DINO'))
    dino.load_state_dict({k: v for k, v in adclr.state_dict().items()
                          if not k.startswith('query_loss_module')})
    views, queries = batch()
    torch.manual_seed(2)  # training mode: drop-path draws included
    losses = adclr.loss(views + queries, samples())
    torch.manual_seed(2)
    assert torch.equal(losses['loss_dino'], dino.loss(views, None)['loss'])


def test_only_the_student_learns_and_queries_train_it(message_hub_max_iters):
    model = build(tiny_model_cfg())
    views, queries = batch()
    model.loss(views + queries, samples())['loss_query'].backward()
    assert model.backbone.patch_embed.projection.weight.grad.abs().sum() > 0
    assert model.head.last_layer.weight_v.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())


def test_parameter_count_equals_dino():
    register_all_modules(init_default_scope=False)
    init_default_scope('mmdense')
    counts = {}
    for method in ('dino', 'adclr'):
        model = MODELS.build(Config.fromfile(f'{ROOT}/configs/{method}/vit-s16_in1k.py').model)
        counts[method] = (sum(p.numel() for p in model.parameters()),
                          sum(p.numel() for p in model.parameters() if p.requires_grad))
    assert counts['adclr'] == counts['dino']
    assert counts['dino'][1] == 21_665_664 + 22_352_128  # ViT-S/16 + DINO head (K = 65536)
    assert counts['dino'][0] == 2 * counts['dino'][1]  # + the EMA teacher


def test_clear_errors(message_hub_max_iters):
    model = build(tiny_model_cfg())
    views, queries = batch()
    from mmpretrain.structures import DataSample
    with pytest.raises(KeyError, match="'num_queries' is missing"):
        model.loss(views + queries, [DataSample() for _ in range(3)])
    with pytest.raises(ValueError, match="'num_queries'=4 does not leave"):
        model.loss(queries, samples())
    with pytest.raises(ValueError, match='at least 2 views'):
        model.loss(views[:1] + queries, samples())
    cfg = tiny_model_cfg()
    cfg['backbone']['type'] = 'VisionTransformer'
    with pytest.raises(TypeError, match='QueryVisionTransformer'):
        build(cfg)
    with pytest.raises(ValueError, match="query_crops\\['num'\\] must be an int >= 1"):
        MultiCropWithQueries(query_crops=dict(num=0))


def test_query_crops_follow_the_views_and_reach_the_model(message_hub_max_iters):
    img = np.random.default_rng(0).integers(0, 256, (80, 100, 3), dtype=np.uint8)
    crops = dict(global_crops=dict(size=32), local_crops=dict(num=2, size=16))
    np.random.seed(0)
    plain = MultiCropWithGeometry(**crops)(dict(img=img))
    transform = MultiCropWithQueries(query_crops=dict(num=4, size=16), **crops)
    pack = PackMultiViewInputs(algorithm_keys=['crop_boxes', 'flips', 'num_queries'])
    packed = []
    for seed in range(2):
        np.random.seed(seed)
        results = transform(dict(img=img))
        if seed == 0:  # same random state: the same global and local views, then the queries
            assert all(np.array_equal(a, b) for a, b in zip(results['img'], plain['img']))
            np.testing.assert_array_equal(results['crop_boxes'][:4], plain['crop_boxes'])
        assert [v.shape[0] for v in results['img']] == [32, 32, 16, 16, 16, 16, 16, 16]
        assert results['crop_boxes'].shape == (8, 4) and results['flips'].shape == (8, )
        areas = np.prod(results['crop_boxes'][4:, 2:] - results['crop_boxes'][4:, :2], axis=1)
        assert ((areas / (80 * 100) > 0.04) & (areas / (80 * 100) < 0.27)).all()
        packed.append(pack(results))

    model = build(tiny_model_cfg())
    data = model.data_preprocessor(default_collate(packed), training=True)
    assert data['data_samples'][0].num_queries == 4
    losses = model.loss(data['inputs'], data['data_samples'])
    assert all(torch.isfinite(v) for v in losses.values())
