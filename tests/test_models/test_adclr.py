import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmcv.transforms import Compose
from mmengine.config import Config
from mmengine.dataset import default_collate
from mmengine.registry import init_default_scope
from mmpretrain.models import VisionTransformer

from mmdense.datasets.transforms import (MultiCropWithGeometry, MultiCropWithQueries,
                                         PackMultiViewInputs)
from mmdense.models.backbones import QueryVisionTransformer
from mmdense.registry import MODELS, TRANSFORMS
from mmdense.utils import register_all_modules
from helpers import (ROOT, TINY_ARCH, adclr_views, build_seeded, query_samples,
                     tiny_adclr_cfg)

pytestmark = pytest.mark.usefixtures('one_thread')


def tiny_vit(training=True, arch=TINY_ARCH, img_size=32, **kwargs):
    torch.manual_seed(0)
    vit = QueryVisionTransformer(img_size=img_size, patch_size=16, arch=arch, **kwargs)
    vit.init_weights()
    vit.train(training)
    return vit


@pytest.mark.parametrize('kwargs,query_size', [
    (dict(), 16), (dict(query_attend_queries=True), 16), (dict(query_pos_embed=True), 32),
    (dict(query_attend_queries=True, query_pos_embed=True), 48)
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


def changed_tokens(vit, images, queries, new_images, new_queries):
    """Which (image, query) output tokens of the one-layer ``vit`` change between two inputs:
    (B, N) and (B, Q, P) bool."""
    (image, ), query = vit.forward_with_queries(images, queries)
    (new_image, ), new_query = vit.forward_with_queries(new_images, new_queries)
    return (new_image != image).any(-1), (new_query != query).any(-1)


@pytest.mark.parametrize('attend_queries', [False, True, 'recipe'])
def test_attention_mask_image_tokens_never_see_queries_queries_see_image_and_queries(
        attend_queries):
    """One layer, so an output token changes iff it attends to a changed input token: the
    attention mask itself. 2 crops of 32 px = 2 x 4 query tokens next to 1 + 4 image tokens.
    'recipe': the backbone settings of configs/adclr/vit-s_in1k.py, where query tokens see
    the other crops (the authors' public code)."""
    flags = dict(query_attend_queries=attend_queries, query_pos_embed=True)
    if attend_queries == 'recipe':
        backbone = Config.fromfile(f'{ROOT}/configs/adclr/vit-s_in1k.py').model.backbone
        flags['query_attend_queries'] = attend_queries = backbone.query_attend_queries
        assert attend_queries
    vit = tiny_vit(training=False, arch=dict(TINY_ARCH, num_layers=1), out_type='raw', **flags)
    images, queries = torch.randn(1, 3, 32, 32), torch.randn(1, 2, 3, 32, 32)

    patch = queries.clone()
    patch[0, 0, :, :16, 16:] += 1  # patch 1 (top right) of crop 0
    image_changed, query_changed = changed_tokens(vit, images, queries, images, patch)
    assert not image_changed.any()  # image tokens never read query tokens
    assert query_changed[0, 0].all()  # every token of crop 0 reads its patch 1
    assert query_changed[0, 1].all() == attend_queries  # crop 1's tokens iff query<->query
    assert (~query_changed[0, 1]).all() != attend_queries

    image_changed, query_changed = changed_tokens(vit, images, queries, images + 1, queries)
    assert image_changed.all() and query_changed.all()  # query tokens read every image token


def test_query_tokens_come_out_one_per_patch_in_row_major_order():
    vit = tiny_vit(training=False, query_attend_queries=True)  # no positions: equivariant
    images, queries = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 3, 32, 48)
    _, tokens = vit.forward_with_queries(images, queries)
    assert tokens.shape == (2, 3, 6, 48)  # 2 x 3 patches per crop
    swapped_rows = torch.cat([queries[..., 16:, :], queries[..., :16, :]], dim=-2)
    _, new_tokens = vit.forward_with_queries(images, swapped_rows)
    torch.testing.assert_close(new_tokens[:, :, :3], tokens[:, :, 3:], atol=1e-5, rtol=0)
    torch.testing.assert_close(new_tokens[:, :, 3:], tokens[:, :, :3], atol=1e-5, rtol=0)


def test_patch_tokens_are_the_plain_vits_featmap():
    vit = tiny_vit(training=False)
    plain = VisionTransformer(img_size=32, patch_size=16, arch=TINY_ARCH, out_type='featmap')
    plain.load_state_dict(vit.state_dict())
    plain.eval()
    crops = torch.randn(3, 3, 48, 32)
    featmap = plain(crops)[0]  # (B, C, 3, 2)
    torch.testing.assert_close(vit.forward_patch_tokens(crops),
                               featmap.flatten(2).transpose(1, 2), atol=1e-6, rtol=0)


def test_gradients_reach_the_patch_embedding_through_query_tokens():
    vit = tiny_vit()
    images = torch.randn(2, 3, 32, 32)
    queries = torch.randn(2, 3, 3, 16, 16, requires_grad=True)
    _, tokens = vit.forward_with_queries(images, queries)
    tokens.pow(2).sum().backward()
    assert queries.grad.abs().sum() > 0
    assert vit.patch_embed.projection.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in vit.layers.parameters())


def test_query_size_must_be_a_multiple_of_the_patch_size():
    vit = tiny_vit()
    with pytest.raises(ValueError, match=r'query crops of \(24, 24\) px.*patch size \(16, 16\)'):
        vit.forward_with_queries(torch.randn(1, 3, 32, 32), torch.randn(1, 2, 3, 24, 24))
    with pytest.raises(ValueError, match='Q >= 1'):
        vit.forward_with_queries(torch.randn(1, 3, 32, 32), torch.randn(1, 0, 3, 16, 16))


def teacher_reference(model, crops):
    """The teacher's outputs on (n, 3, h, w) crops, each encoded on its own, through a plain
    mmpretrain ViT holding the teacher's weights: (n, K) per CLS token, (n, P, K) per patch."""
    outputs = {}
    for out_type in ('cls_token', 'featmap'):
        vit = VisionTransformer(img_size=32, patch_size=16, arch=TINY_ARCH, out_type=out_type)
        vit.load_state_dict(model.teacher['backbone'].state_dict())
        vit.eval()
        features = vit(crops)[0]
        if out_type == 'featmap':  # (n, C, h, w) -> (n, h·w, C), row-major
            features = features.flatten(2).transpose(1, 2)
        outputs[out_type] = model.teacher['head'](features)
    return outputs['cls_token'], outputs['featmap']


def test_query_targets_are_the_teachers_patch_tokens_one_to_one():
    """Target row (b, q, j) = the teacher's patch token j of crop q of image b encoded alone."""
    model = build_seeded(tiny_adclr_cfg())
    assert model.query_target == 'patch_tokens'  # the default recipe
    _, queries = adclr_views(batch_size=2, num_queries=3)
    crops = torch.stack(queries, 1)  # (B=2, Q=3, 3, 48, 48): P = 9 tokens per crop
    with torch.no_grad():
        targets = model.teacher_query_logits(crops)
        _, patch_outputs = teacher_reference(model, crops.flatten(0, 1))
    assert targets.shape == (1, 2 * 3 * 9, 64)
    targets = targets.view(2, 3, 9, 64)
    for b in range(2):
        for q in range(3):
            for j in range(9):
                torch.testing.assert_close(targets[b, q, j], patch_outputs[3 * b + q, j],
                                           atol=1e-5, rtol=0)


@pytest.mark.parametrize('query_target', ['patch_tokens', 'cls_token'])
def test_query_loss_matches_hand_computation(query_target):
    model = build_seeded(tiny_adclr_cfg(query_target=query_target, query_loss_weight=0.5,
                                 query_teacher_temp=0.05))
    model.eval()  # no drop-path: the student forward can be repeated exactly
    model.query_loss_module.center.fill_(0.1)
    views, queries = adclr_views()  # B = 3 images, Q = 4 crops of P = 9 tokens
    losses = model.loss(views + queries, query_samples())
    assert set(losses) == {'loss_dino', 'loss_query'}

    with torch.no_grad():
        crops = torch.stack(queries, 1)
        cls_outputs, patch_outputs = teacher_reference(model, crops.flatten(0, 1))
        student_tokens = torch.stack([  # (V_g, B, Q, P, C)
            model.backbone.forward_with_queries(view, crops)[1] for view in views[:2]])
    if query_target == 'patch_tokens':  # token j of crop q against the teacher's token j
        teacher = patch_outputs.view(3, 4, 9, -1)
        student = model.head(student_tokens)
    else:  # the crop's mean token against the teacher's CLS output on the crop
        teacher = cls_outputs.view(3, 4, 1, -1)
        student = model.head(student_tokens.mean(dim=3, keepdim=True))
    expected, terms = 0.0, 0
    for v in range(2):
        for b in range(3):
            for q in range(4):
                for j in range(teacher.shape[2]):
                    target = F.softmax((teacher[b, q, j] - 0.1) / 0.05, dim=-1)
                    log_probs = F.log_softmax(student[v, b, q, j] / 0.1, dim=-1)
                    expected += -(target * log_probs).sum()
                    terms += 1
    assert terms == 2 * 3 * 4 * (9 if query_target == 'patch_tokens' else 1)
    assert math.isclose(losses['loss_query'].item(), 0.5 * expected.item() / terms, rel_tol=1e-5)
    expected_center = 0.9 * 0.1 + 0.1 * teacher.mean(dim=(0, 1, 2))
    assert torch.allclose(model.query_loss_module.center[0], expected_center, atol=1e-6)


def test_dino_term_is_dinos_loss_bit_for_bit():
    adclr = build_seeded(tiny_adclr_cfg())
    dino = build_seeded(tiny_adclr_cfg('DINO'))
    dino.load_state_dict({k: v for k, v in adclr.state_dict().items()
                          if not k.startswith('query_loss_module')})
    views, queries = adclr_views()
    torch.manual_seed(2)  # training mode: drop-path draws included
    losses = adclr.loss(views + queries, query_samples())
    torch.manual_seed(2)
    assert torch.equal(losses['loss_dino'], dino.loss(views, None)['loss'])


def test_only_the_student_learns_and_queries_train_it():
    model = build_seeded(tiny_adclr_cfg())
    views, queries = adclr_views()
    model.loss(views + queries, query_samples())['loss_query'].backward()
    assert model.backbone.patch_embed.projection.weight.grad.abs().sum() > 0
    assert model.head.last_layer.weight_v.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())


def test_parameter_count_equals_dino_with_the_same_head():
    register_all_modules(init_default_scope=False)
    init_default_scope('mmdense')
    counts = {}
    for method, recipe in (('dino', 'vit-s_in1k-300e.py'), ('adclr', 'vit-s_in1k.py')):
        cfg = Config.fromfile(f'{ROOT}/configs/{method}/{recipe}').model
        cfg.head.out_channels = cfg.loss.out_channels = 8192  # ADCLR's prototypes
        model = MODELS.build(cfg)
        counts[method] = (sum(p.numel() for p in model.parameters()),
                          sum(p.numel() for p in model.parameters() if p.requires_grad))
    fixed_positions = 197 * 384  # ADCLR's sin-cos positional embedding is not trained
    assert counts['adclr'] == (counts['dino'][0], counts['dino'][1] - fixed_positions)
    assert counts['dino'][1] == 21_665_664 + 7_614_720  # ViT-S/16 + DINO head (K = 8192)
    assert counts['dino'][0] == 2 * counts['dino'][1]  # + the EMA teacher


RECIPES = ['vit-s_in1k.py', 'vit-s_coco.py', 'vit-b_in1k.py']


@pytest.mark.parametrize('config', RECIPES)
def test_recipe_views_are_two_globals_then_the_96px_query_crop(config):
    """The authors' README command: one 96 px local crop (not flipped) is the query, 36 patch
    tokens, seeing all image and query tokens, with one teacher patch token per token and
    sin-cos positions in the global views; there are no other local views."""
    cfg = Config.fromfile(f'{ROOT}/configs/adclr/{config}')
    assert cfg.model.query_target == 'patch_tokens'
    backbone = cfg.model.backbone
    assert backbone.query_attend_queries and backbone.query_pos_embed == 'global_sincos'
    assert backbone.sincos_pos_embed
    assert cfg.model.head.out_channels == cfg.model.loss.out_channels == 8192
    crop_cfg = cfg.train_dataloader.dataset.pipeline[1]
    crop_cfg.update(global_pipelines=[[]], local_pipeline=[], query_pipeline=[])
    register_all_modules(init_default_scope=False)
    transform = TRANSFORMS.build(crop_cfg)
    img = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    np.random.seed(0)
    results = transform(dict(img=img))
    assert [v.shape[:2] for v in results['img']] == [(224, 224)] * 2 + [(96, 96)]
    assert results['num_queries'] == 1 and not results['flips'][2:].any()
    areas = np.prod(results['crop_boxes'][2:, 2:] - results['crop_boxes'][2:, :2], axis=1)
    assert ((areas / (300 * 400) > 0.04) & (areas / (300 * 400) < 0.27)).all()


def test_single_token_variant_config_keeps_the_dino_views_and_16px_queries():
    cfg = Config.fromfile(f'{ROOT}/configs/adclr/vit-s_in1k_cls-queries.py')
    assert cfg.model.query_target == 'cls_token'
    backbone = cfg.model.backbone
    assert not (backbone.query_attend_queries or backbone.query_pos_embed or
                backbone.sincos_pos_embed)
    assert cfg.model.head.out_channels == cfg.model.loss.out_channels == 65536  # DINO's
    crop_cfg = cfg.train_dataloader.dataset.pipeline[1]
    assert (crop_cfg.local_crops.num, crop_cfg.local_crops.size) == (10, 96)
    assert (crop_cfg.query_crops.num, crop_cfg.query_crops.size) == (10, 16)


def toy_recipe_batch_and_model(algorithm):
    """Two images through the toy config's real crop pipeline, and its model shrunk to the tiny
    ViT (``algorithm='DINO'``: the same model as plain DINO)."""
    cfg = Config.fromfile(f'{ROOT}/configs/adclr/vit-s_toy.py')
    register_all_modules(init_default_scope=False)
    pipeline = Compose(cfg.train_dataloader.dataset.pipeline[1:])
    rng = np.random.default_rng(0)
    np.random.seed(0)
    packed = [pipeline(dict(img=rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)))
              for _ in range(2)]
    model_cfg = cfg.model
    model_cfg.backbone.arch = TINY_ARCH
    model_cfg.head.update(in_channels=48, hidden_channels=48, bottleneck_channels=16,
                          out_channels=64)
    model_cfg.loss.out_channels = 64
    if algorithm == 'DINO':
        model_cfg.type = 'DINO'
        model_cfg.backbone.type = 'VisionTransformer'
        for key in ('query_attend_queries', 'query_pos_embed', 'sincos_pos_embed'):
            model_cfg.backbone.pop(key)
        for key in ('query_target', 'query_loss_weight', 'query_teacher_temp'):
            model_cfg.pop(key)
    model = build_seeded(model_cfg)
    return model.data_preprocessor(default_collate(packed), training=True), model


def test_recipe_dino_term_sees_the_two_global_views_only():
    data, adclr = toy_recipe_batch_and_model('ADCLR')
    inputs, data_samples = data['inputs'], data['data_samples']
    assert data_samples[0].num_queries == 4 and len(inputs) == 2 + 4
    _, dino = toy_recipe_batch_and_model('DINO')
    dino.load_state_dict({k: v for k, v in adclr.state_dict().items()
                          if not k.startswith('query_loss_module')})
    torch.manual_seed(2)  # training mode: drop-path draws included
    losses = adclr.loss(inputs, data_samples)
    torch.manual_seed(2)
    assert torch.equal(losses['loss_dino'], dino.loss(inputs[:2], None)['loss'])


def test_clear_errors():
    model = build_seeded(tiny_adclr_cfg())
    views, queries = adclr_views()
    from mmpretrain.structures import DataSample
    with pytest.raises(KeyError, match="'num_queries' is missing"):
        model.loss(views + queries, [DataSample() for _ in range(3)])
    with pytest.raises(ValueError, match="'num_queries'=4 does not leave"):
        model.loss(queries, query_samples())
    with pytest.raises(ValueError, match='at least 2 views'):
        model.loss(views[:1] + queries, query_samples())
    cfg = tiny_adclr_cfg()
    cfg['backbone']['type'] = 'VisionTransformer'
    with pytest.raises(TypeError, match='QueryVisionTransformer'):
        build_seeded(cfg)
    with pytest.raises(ValueError, match="query_crops\\['num'\\] must be an int >= 1"):
        MultiCropWithQueries(query_crops=dict(num=0))
    with pytest.raises(ValueError, match=r"query_target='cls' is not one of \('patch_tokens', "):
        build_seeded(tiny_adclr_cfg(query_target='cls'))


def test_query_crops_follow_the_views_and_reach_the_model():
    img = np.random.default_rng(0).integers(0, 256, (80, 100, 3), dtype=np.uint8)
    crops = dict(global_crops=dict(size=32), local_crops=dict(num=2, size=16))
    np.random.seed(0)
    plain = MultiCropWithGeometry(**crops)(dict(img=img))
    transform = MultiCropWithQueries(query_crops=dict(num=4, size=16, flip_prob=1.0), **crops)
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
        assert results['flips'][4:].all()  # the queries' own flip probability
        areas = np.prod(results['crop_boxes'][4:, 2:] - results['crop_boxes'][4:, :2], axis=1)
        assert ((areas / (80 * 100) > 0.04) & (areas / (80 * 100) < 0.27)).all()
        packed.append(pack(results))

    model = build_seeded(tiny_adclr_cfg())
    data = model.data_preprocessor(default_collate(packed), training=True)
    assert data['data_samples'][0].num_queries == 4
    losses = model.loss(data['inputs'], data['data_samples'])
    assert all(torch.isfinite(v) for v in losses.values())


# ------------------------------------------------------------- sin-cos query positions
def hand_sincos(x, y, dims):
    """The authors' get_2d_sincos_pos_embed_from_grid for one position, written out:
    [sin(x·ω_d)]_d, [cos(x·ω_d)]_d, [sin(y·ω_d)]_d, [cos(y·ω_d)]_d, ω_d = 10000^(-d/(dims/4))."""
    omegas = [10000 ** (-d / (dims // 4)) for d in range(dims // 4)]
    return torch.tensor([math.sin(x * w) for w in omegas] + [math.cos(x * w) for w in omegas] +
                        [math.sin(y * w) for w in omegas] + [math.cos(y * w) for w in omegas])


def test_sincos_positions_of_the_image_tokens_are_the_formula_and_not_trained():
    vit = tiny_vit(img_size=64, sincos_pos_embed=True)  # 4 x 4 patches, 48 channels
    pos_embed = vit.pos_embed[0]
    assert torch.equal(pos_embed[0], torch.zeros(48))  # the CLS token's
    for row, col in [(0, 0), (1, 2), (3, 1)]:
        torch.testing.assert_close(pos_embed[1 + 4 * row + col], hand_sincos(col, row, 48),
                                   atol=1e-6, rtol=0)
    assert not vit.pos_embed.requires_grad
    vit.forward_all_tokens(torch.randn(1, 3, 64, 64)).sum().backward()
    assert vit.pos_embed.grad is None


def test_query_crop_equal_to_the_global_crop_has_exactly_the_global_grid_positions():
    vit = tiny_vit(img_size=64, sincos_pos_embed=True, query_pos_embed='global_sincos')
    box = torch.tensor([10., 20., 138., 148.])  # 128 px: 4 x 4 cells of 32 px
    positions = vit.query_positions(box, box, (4, 4), (4, 4))
    torch.testing.assert_close(positions, vit.pos_embed[0, 1:], atol=1e-6, rtol=0)


def test_one_query_cell_against_the_hand_computation():
    """Global crop (0, 0)-(160, 160) in 10 x 10 cells of 16 px; query crop (40, 24)-(88, 72)
    in 3 x 3 cells of 16 px: cell (row 1, column 2) starts at x = 40/16 + 2 = 4.5 and
    y = 24/16 + 1 = 2.5 global cells (augmentation.py calculate_sin_cos)."""
    vit = tiny_vit(query_pos_embed='global_sincos')
    positions = vit.query_positions(torch.tensor([0., 0., 160., 160.]),
                                    torch.tensor([40., 24., 88., 72.]), (10, 10), (3, 3))
    assert positions.shape == (9, 48)
    torch.testing.assert_close(positions[3 + 2], hand_sincos(4.5, 2.5, 48), atol=1e-6, rtol=0)
    # a crop half the global cell size per cell, offset: x = 1 + 0.5 j, y = 3 + 0.5 i
    positions = vit.query_positions(torch.tensor([0., 0., 160., 160.]),
                                    torch.tensor([16., 48., 40., 72.]), (10, 10), (3, 3))
    torch.testing.assert_close(positions[2 * 3 + 1], hand_sincos(1.5, 4.0, 48), atol=1e-6,
                               rtol=0)


def test_adclr_places_each_query_in_each_global_view_by_the_crop_boxes():
    """The positions added to the query tokens of global view v are those of the query cells
    in view v's grid, from the packed crop boxes (2 global views of 32 px = 2 x 2 cells, 2
    query crops of 32 px): a loop over (v, b, q, cell) with the hand formula."""
    cfg = tiny_adclr_cfg()
    cfg['backbone'].update(sincos_pos_embed=True, query_pos_embed='global_sincos',
                           query_attend_queries=True)
    model = build_seeded(cfg)
    from mmpretrain.structures import DataSample
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(3):
        xy = rng.uniform(0, 50, (4, 2))
        sizes = rng.uniform(20, 60, (4, 1))
        samples.append(DataSample(num_queries=2, flips=torch.zeros(4), crop_boxes=torch.tensor(
            np.concatenate([xy, xy + sizes], axis=1), dtype=torch.float32)))
    views = [torch.randn(3, 3, 32, 32) for _ in range(2)]
    queries = torch.randn(3, 2, 3, 32, 32)
    positions = model.query_positions(samples, views, queries)
    assert positions.shape == (2 * 3, 2, 4, 48)
    for v in range(2):
        for b in range(3):
            gx1, gy1, gx2, gy2 = samples[b].crop_boxes[v].tolist()
            for q in range(2):
                qx1, qy1, qx2, qy2 = samples[b].crop_boxes[2 + q].tolist()
                for i in range(2):
                    for j in range(2):
                        x = (qx1 - gx1) / ((gx2 - gx1) / 2) + j * (qx2 - qx1) / (gx2 - gx1)
                        y = (qy1 - gy1) / ((gy2 - gy1) / 2) + i * (qy2 - qy1) / (gy2 - gy1)
                        torch.testing.assert_close(positions[3 * v + b, q, 2 * i + j],
                                                   hand_sincos(x, y, 48), atol=1e-5, rtol=0)
    losses = model.loss(views + list(queries.unbind(1)), samples)
    assert all(torch.isfinite(value) for value in losses.values())
    with pytest.raises(KeyError, match="'crop_boxes' is missing"):
        model.loss(views + list(queries.unbind(1)), query_samples(3, 2))


def test_query_position_settings_are_checked():
    with pytest.raises(ValueError, match="query_pos_embed='sincos' is not one of"):
        tiny_vit(query_pos_embed='sincos')
    vit = tiny_vit(query_pos_embed='global_sincos')
    with pytest.raises(ValueError, match='query_pos must be given exactly when'):
        vit.forward_with_queries(torch.randn(1, 3, 32, 32), torch.randn(1, 2, 3, 16, 16))


# ------------------------------------------------- the ViT-B recipe: iBOT's masked-image term
def test_vit_b_recipe_adds_ibots_masked_image_term():
    """The authors' README command keeps --lambda2 1.0 with --pred_ratio 0 0.3
    --pred_ratio_var 0 0.2 (block masks); the ViT-S recipe leaves the term out."""
    cfg = Config.fromfile(f'{ROOT}/configs/adclr/vit-b_in1k.py')
    assert cfg.model.backbone.arch == 'base' and cfg.model.backbone.mask_token
    assert cfg.model.patch_loss.type == 'iBOTPatchLoss' and cfg.model.patch_loss_weight == 1.0
    assert not cfg.model.head.norm_last_layer
    pipeline = cfg.train_dataloader.dataset.pipeline
    assert pipeline[2].type == 'BlockwisePatchMasks'
    assert (pipeline[2].pred_ratio, pipeline[2].pred_ratio_var) == ((0.0, 0.3), (0.0, 0.2))
    assert 'masks' in pipeline[3].algorithm_keys
    assert 'teacher_patch_temp' in cfg.custom_hooks[0].attributes
    register_all_modules(init_default_scope=False)
    transform = Compose([TRANSFORMS.build(t) for t in pipeline[1:3]])
    np.random.seed(0)
    results = transform(dict(img=np.zeros((300, 400, 3), np.uint8)))
    assert results['masks'].shape == (2, 14, 14)
    assert 'patch_loss' not in Config.fromfile(f'{ROOT}/configs/adclr/vit-s_in1k.py').model


def test_masked_image_term_equals_ibots_on_the_same_weights():
    """ADCLR with patch_loss: its DINO and masked-image terms are iBOT's (same weights, same
    masks, no local views), whatever the queries."""
    from mmpretrain.structures import DataSample
    cfg = tiny_adclr_cfg(patch_loss=dict(type='iBOTPatchLoss', out_channels=64),
                         teacher_patch_temp=0.05)
    cfg['backbone']['mask_token'] = True
    adclr = build_seeded(cfg)
    ibot_cfg = {k: v for k, v in cfg.items() if not k.startswith('query')}
    ibot = build_seeded(dict(ibot_cfg, type='iBOT'))
    ibot.load_state_dict({k: v for k, v in adclr.state_dict().items()
                          if not k.startswith('query_loss_module')})
    adclr.eval(), ibot.eval()
    views, queries = adclr_views()
    masks = torch.rand(3, 2, 2, 2, generator=torch.Generator().manual_seed(3)) < 0.5
    samples = [DataSample(num_queries=4, masks=m) for m in masks]
    losses = adclr.loss(views[:2] + queries, samples)
    reference = ibot.loss(views[:2], samples)
    torch.testing.assert_close(losses['loss_mim'], reference['loss_mim'], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(losses['loss_dino'], reference['loss_cls'], atol=1e-6, rtol=1e-5)
    unmasked = adclr.loss(views[:2] + queries, [DataSample(num_queries=4, masks=m & False)
                                                 for m in masks])
    assert unmasked['loss_mim'] == 0
