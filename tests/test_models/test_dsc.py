"""DSC: cross-view pixel positives, the three contrasts, pseudo-classes, queue, full loss."""
import math
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmdense.datasets.transforms import MultiCropWithGeometry
from mmdense.models.algorithms.dsc import ViewEmbedding
from mmdense.models.losses import (feature_neighbours, info_nce_with_queue,
                                   multi_positive_info_nce, per_image_to_batch_mask,
                                   prototype_assignment_loss)
from mmdense.registry import MODELS
from mmdense.structures import geometric_positives, pixel_cells
from helpers import ROOT, tiny_dsc, two_view_samples

pytestmark = pytest.mark.usefixtures('one_thread')


# ----------------------------------------------------------------------------- geometry

def test_geometric_positives_of_a_known_overlap():
    # view 1 shows image x in [0, 4), view 2 x in [2, 6); both y in [0, 4); 2x2 grids of 2 px
    # cells. Shared: view 1's right column = view 2's left column (as displayed, unflipped).
    box_1, box_2 = torch.tensor([[0., 0, 4, 4]]), torch.tensor([[2., 0, 6, 4]])
    unflipped = torch.tensor([False])
    positives = geometric_positives(box_1, unflipped, (2, 2), box_2, unflipped, (2, 2))[0]
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[1, 0] = expected[3, 2] = True  # (row, col) (0, 1)→(0, 0) and (1, 1)→(1, 0)
    assert torch.equal(positives, expected)

    # view 2 flipped: its shared column is displayed on the right
    positives = geometric_positives(box_1, unflipped, (2, 2), box_2, torch.tensor([True]),
                                    (2, 2))[0]
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[1, 1] = expected[3, 3] = True
    assert torch.equal(positives, expected)

    # disjoint views: no positives
    far = torch.tensor([[10., 10, 14, 14]])
    assert not geometric_positives(box_1, unflipped, (2, 2), far, unflipped, (2, 2)).any()


def test_a_coarse_pixel_matches_every_finer_pixel_it_contains():
    box = torch.tensor([[0., 0, 4, 4]])
    no_flip = torch.tensor([False])
    positives = geometric_positives(box, no_flip, (2, 2), box, no_flip, (4, 4))[0]
    fine_rows, fine_cols = torch.meshgrid(torch.arange(4), torch.arange(4), indexing='ij')
    coarse_of_fine = ((fine_rows // 2) * 2 + fine_cols // 2).flatten()  # (16,)
    expected = coarse_of_fine[None, :] == torch.arange(4)[:, None]
    assert torch.equal(positives, expected)
    assert torch.equal(geometric_positives(box, no_flip, (4, 4), box, no_flip, (2, 2))[0],
                       expected.t())


@pytest.mark.parametrize('flip_prob', [0.0, 1.0])
def test_pixel_cells_match_the_multi_crop_augmentation(flip_prob):
    """Views of an image whose value is its (x, y) coordinate, pooled to a 4x4 grid, hold the
    centres that ``pixel_cells`` computes from the crop boxes and flips."""
    size = 120
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    image = np.stack([xs, ys, np.zeros_like(xs)], axis=-1)
    crop = MultiCropWithGeometry(global_crops=dict(num=2, size=32, scale=(0.3, 1.0)),
                                 require_overlap=True, flip_prob=flip_prob,
                                 interpolation='bilinear')
    for seed in range(3):
        np.random.seed(seed)
        out = crop(dict(img=image))
        boxes, flips = torch.from_numpy(out['crop_boxes']), torch.from_numpy(out['flips'])
        views = torch.stack([torch.from_numpy(v[..., :2].copy()).permute(2, 0, 1)
                             for v in out['img']])
        pooled = F.avg_pool2d(views, 8).flatten(2).transpose(1, 2)  # (2, 16, 2)
        centres, cells = pixel_cells(boxes, flips, (4, 4))
        # within one source pixel (bilinear resampling at the crop borders)
        assert (pooled - centres).abs().max() < 1.0
        assert torch.allclose(cells[..., 2] - cells[..., 0],
                              ((boxes[:, 2] - boxes[:, 0]) / 4)[:, None])
        # positives lie within half a cell of each other
        positives = geometric_positives(boxes[:1], flips[:1], (4, 4), boxes[1:], flips[1:],
                                        (4, 4))[0]
        assert positives.any()
        half_cells = ((cells[0, :, None, 2:] - cells[0, :, None, :2])
                      + (cells[1, None, :, 2:] - cells[1, None, :, :2])) / 2
        distance = (centres[0, :, None] - centres[1, None]).abs()
        assert (distance[positives] <= half_cells[positives]).all()


def test_feature_neighbours_are_the_top_k_by_cosine():
    pixels_1 = torch.tensor([[[1., 0.], [0., 1.]]])
    pixels_2 = torch.tensor([[[2., 0.1], [0.1, 3.], [1., 1.], [-1., 0.]]])
    expected = torch.tensor([[[True, False, True, False], [False, True, True, False]]])
    assert torch.equal(feature_neighbours(pixels_1, pixels_2, 2), expected)


def test_per_image_positives_spread_over_the_gathered_batch():
    per_image = torch.tensor([[[True, False], [False, True]], [[True, True], [False, False]]])
    # this rank holds images 2 and 3 of 4 gathered images
    mask = per_image_to_batch_mask(per_image, num_key_images=4, first_image=2)
    assert mask.shape == (4, 8)
    expected = torch.zeros(4, 8, dtype=torch.bool)
    expected[0:2, 4:6] = per_image[0]
    expected[2:4, 6:8] = per_image[1]
    assert torch.equal(mask, expected)


# ----------------------------------------------------------------------------- losses

def log_softmax_list(values):
    norm = math.log(sum(math.exp(v) for v in values))
    return [v - norm for v in values]


def test_multi_positive_info_nce_equals_a_hand_computation():
    queries = torch.tensor([[1., 0.], [0.6, 0.8], [0., -2.]])
    keys = torch.tensor([[1., 0.], [0., 1.], [-3., 4.]])
    positives = torch.tensor([[True, False, True], [False, True, False],
                              [False, False, False]])  # query 2 has none: left out
    tau = 0.5
    q = [[1., 0.], [0.6, 0.8]]
    k = [[1., 0.], [0., 1.], [-0.6, 0.8]]
    per_query = []
    for i, pos in enumerate([[0, 2], [1]]):
        logp = log_softmax_list([(q[i][0] * kk[0] + q[i][1] * kk[1]) / tau for kk in k])
        per_query.append(-sum(logp[p] for p in pos) / len(pos))
    expected = sum(per_query) / 2
    loss_module = MODELS.build(dict(type='MultiPositiveInfoNCELoss', temp=tau))
    keys.requires_grad_()
    loss = loss_module(queries, keys, positives)
    assert math.isclose(float(loss.detach()), expected, rel_tol=1e-5)
    assert torch.equal(loss, multi_positive_info_nce(queries, keys, positives, tau))
    # the keys come from the momentum encoder: no gradient flows to them
    assert not loss.requires_grad


def test_info_nce_with_queue_equals_a_hand_computation():
    queries = torch.tensor([[3., 4.], [0., 1.]])
    keys = torch.tensor([[1., 0.], [0., 2.]])
    queue = torch.tensor([[0., 1.], [-1., 0.], [0.6, -0.8]])
    tau = 0.2
    q = [[0.6, 0.8], [0., 1.]]
    k = [[1., 0.], [0., 1.]]
    dot = lambda a, b: a[0] * b[0] + a[1] * b[1]  # noqa: E731
    expected, expected_grad = 0.0, []
    for i in range(2):
        candidates = [k[i]] + queue.tolist()  # the positive first, then the negatives
        log_probs = log_softmax_list([dot(q[i], c) / tau for c in candidates])
        expected += -log_probs[0] / 2
        # d/dq of −log p_0 for unit q: (Σ_j p_j c_j − c_0)/τ, projected orthogonally to q and
        # divided by |q| (the normalisation), and by B = 2 (the mean)
        g = [(sum(math.exp(lp) * c[d] for lp, c in zip(log_probs, candidates))
              - candidates[0][d]) / tau for d in range(2)]
        norm = math.hypot(*queries[i].tolist())
        expected_grad.append([(g[d] - dot(g, q[i]) * q[i][d]) / norm / 2 for d in range(2)])
    loss_module = MODELS.build(dict(type='InfoNCEWithQueueLoss', temp=tau))
    queries.requires_grad_()
    loss = loss_module(queries, keys, queue)
    assert math.isclose(float(loss.detach()), expected, rel_tol=1e-5)
    assert torch.equal(loss, info_nce_with_queue(queries, keys, queue, tau))
    loss.backward()
    assert torch.allclose(queries.grad, torch.tensor(expected_grad), atol=1e-5)


def test_prototype_assignment_loss_equals_a_hand_computation():
    pixels = torch.tensor([[2., 0.], [0., -1.]])
    prototypes = torch.tensor([[1., 0.], [0., 5.]])
    codes = torch.tensor([[0.75, 0.25], [0.5, 0.5]])
    tau = 0.1
    expected = 0.0
    expected_logit_grad = []  # d/d(z·c_k): (softmax_k − Q_k) / (τ · N)
    for z, q in zip([[1., 0.], [0., -1.]], codes.tolist()):
        logp = log_softmax_list([z[0] / tau, z[1] / tau])
        expected += -(q[0] * logp[0] + q[1] * logp[1]) / 2
        expected_logit_grad.append([(math.exp(logp[k]) - q[k]) / (tau * 2) for k in range(2)])
    loss_module = MODELS.build(dict(type='PrototypeAssignmentLoss', temp=tau))
    prototypes.requires_grad_()
    loss = loss_module(pixels, prototypes, codes)
    assert math.isclose(float(loss.detach()), expected, rel_tol=1e-5)
    assert torch.equal(loss, prototype_assignment_loss(pixels, prototypes, codes, tau))
    # the prototypes learn: d/dc_k = Σ_i grad_ik z_i, projected orthogonally to c_k / |c_k|
    loss.backward()
    unit_pixels, unit_prototypes = [[1., 0.], [0., -1.]], [[1., 0.], [0., 1.]]
    for k, (c, norm) in enumerate(zip(unit_prototypes, (1., 5.))):
        g = [sum(expected_logit_grad[i][k] * unit_pixels[i][d] for i in range(2))
             for d in range(2)]
        along = g[0] * c[0] + g[1] * c[1]
        expected_grad = [(g[d] - along * c[d]) / norm for d in range(2)]
        assert torch.allclose(prototypes.grad[k], torch.tensor(expected_grad), atol=1e-5), k


# ----------------------------------------------------------------------------- pseudo-classes

def views_of(pixels):
    """(B, 2, n, D) pixel embeddings → two ViewEmbeddings (instance and size unused)."""
    return [ViewEmbedding(pixels[:, 0].mean(1), pixels[:, v], (1, pixels.shape[2]))
            for v in range(2)]


def test_kmeans_classes_recover_separable_pixels():
    model = tiny_dsc(semantic_variant='km', num_classes=3)
    g = torch.Generator().manual_seed(0)
    classes = torch.randint(0, 3, (4, 2, 5), generator=g)
    pixels = torch.eye(16)[classes] * 4 + 0.2 * torch.randn(4, 2, 5, 16, generator=g)
    labels, all_labels, loss_prototype = model.pseudo_classes(views_of(pixels), views_of(pixels))
    assert loss_prototype is None and labels.shape == (4, 2, 5)
    assert torch.equal(labels, all_labels)  # one process: this rank is the whole batch
    flat, truth = labels.flatten(), classes.flatten()
    assert torch.equal(flat[:, None] == flat[None], truth[:, None] == truth[None])
    # seeded by the step count: the same step gives the same classes
    assert torch.equal(model.pseudo_classes(views_of(pixels), views_of(pixels))[0], labels)


def test_prototype_classes_are_balanced_by_sinkhorn():
    model = tiny_dsc(semantic_variant='pm', num_classes=4, sinkhorn_iters=50)
    g = torch.Generator().manual_seed(0)
    # every pixel is nearest to prototype 0: plain argmax would put all 64 in one class
    pixels = model.prototypes.detach()[0] * 3 + 0.5 * torch.randn(4, 2, 8, 16, generator=g)
    assert (F.normalize(pixels, dim=-1) @ F.normalize(model.prototypes.detach(), dim=1).t()
            ).argmax(-1).unique().numel() < 4
    labels, _, loss_prototype = model.pseudo_classes(views_of(pixels), views_of(pixels))
    counts = torch.bincount(labels.flatten(), minlength=4)
    assert counts.min() >= 12 and counts.max() <= 20, counts  # 64 pixels, 16 per class
    loss_prototype.backward()
    assert model.prototypes.grad is not None and model.prototypes.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- full model

@pytest.mark.parametrize('variant', ['km', 'pm'])
def test_loss_terms_and_only_the_student_gets_gradients(variant):
    torch.manual_seed(0)
    model = tiny_dsc(semantic_variant=variant)
    model.init_weights()
    inputs = [torch.randn(4, 3, 64, 64) for _ in range(2)]
    losses = model.loss(inputs, two_view_samples(4))
    expected = {'loss_instance', 'loss_pixel', 'loss_semantic'}
    assert set(losses) == (expected | {'loss_prototype'} if variant == 'pm' else expected)
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    student = {n: p for n, p in model.named_parameters() if not n.startswith('teacher')}
    assert all(p.grad is not None for p in student.values()), \
        [n for n, p in student.items() if p.grad is None]
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    assert int(model.teacher.steps) == 1


def test_queue_is_a_checkpointed_buffer_filled_with_the_momentum_keys():
    torch.manual_seed(0)
    model = tiny_dsc(queue_len=10)
    model.eval()
    assert {'queue', 'queue_ptr'} <= set(model.state_dict())
    inputs = [torch.randn(3, 3, 64, 64) for _ in range(2)]
    for step in range(2):
        before = model.queue.clone()
        model.loss(inputs, two_view_samples(3))
        with torch.no_grad():
            keys = torch.stack([model.encode_view(model.teacher, v).instance for v in inputs],
                               dim=1).flatten(0, 1)  # image 0 view 1, image 0 view 2, ...
        slots = (torch.arange(6) + 6 * step) % 10  # 3 images x 2 views per step, wrapping
        assert torch.allclose(model.queue[slots], F.normalize(keys, dim=1), atol=1e-5)
        untouched = torch.ones(10, dtype=torch.bool)
        untouched[slots] = False
        assert torch.equal(model.queue[untouched], before[untouched])
    assert int(model.queue_ptr) == 2


def test_instance_loss_uses_the_queue_before_this_steps_keys():
    torch.manual_seed(0)
    model = tiny_dsc()
    model.eval()
    inputs = [torch.randn(2, 3, 64, 64) for _ in range(2)]
    queue = model.queue.clone()
    loss = model.loss(inputs, two_view_samples(2))['loss_instance']
    with torch.no_grad():
        student = [model.encode_view(model.student_modules(), v).instance for v in inputs]
        teacher = [model.encode_view(model.teacher, v).instance for v in inputs]
    expected = (info_nce_with_queue(student[0], teacher[1], queue, 0.2)
                + info_nce_with_queue(student[1], teacher[0], queue, 0.2)) / 2
    assert torch.allclose(loss, expected, atol=1e-5)


def test_configuration_errors_are_clear():
    with pytest.raises(ValueError, match="semantic_variant must be one of .* got 'xx'"):
        tiny_dsc(semantic_variant='xx')
    with pytest.raises(ValueError, match='in_channels=512'):
        tiny_dsc(neck=dict(type='DenseCLNeck', in_channels=512, hid_channels=8,
                           out_channels=8))
    with pytest.raises(ValueError, match='single out_indices'):
        tiny_dsc(backbone=dict(type='ResNet', depth=18, stem_channels=8, base_channels=8,
                               out_indices=(2, 3)))
    with pytest.raises(ValueError, match='feat_branch'):
        tiny_dsc(feat_branch='both')
    model = tiny_dsc(num_neighbours=5)  # 64 px views give 2x2 = 4 pixels
    with pytest.raises(ValueError, match='num_neighbours=5 exceeds the 4 pixels'):
        model.loss([torch.randn(2, 3, 64, 64)] * 2, two_view_samples(2))
    with pytest.raises(ValueError, match='num_classes=20 exceeds the 16 pixels'):
        tiny_dsc(num_classes=20).loss([torch.randn(2, 3, 64, 64)] * 2, two_view_samples(2))
    with pytest.raises(ValueError, match='2 views'):
        model.loss([torch.randn(2, 3, 64, 64)] * 3, two_view_samples(2))


def test_losses_default_to_the_recipe_values():
    """Without loss configs DSC trains with the R50 recipe's losses and temperatures; the
    prototype loss exists for ``'pm'`` only."""
    from mmengine.config import Config
    recipe = Config.fromfile(osp.join(ROOT, 'configs/_base_/models/dsc_r50.py')).model
    model = tiny_dsc(semantic_variant='pm')
    for name in ('loss_instance', 'loss_pixel', 'loss_semantic', 'loss_prototype'):
        module = getattr(model, name)
        assert (type(module).__name__, module.temp) == (recipe[name].type, recipe[name].temp), \
            name
    assert not hasattr(tiny_dsc(semantic_variant='km'), 'loss_prototype')


def test_pixel_and_semantic_contrasts_take_their_own_temperatures():
    """One loss class serves both contrasts, each configured on its own."""
    inputs = [torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
              for _ in range(2)]
    losses = {}
    for temp in (0.2, 0.5):
        torch.manual_seed(0)
        model = tiny_dsc(loss_semantic=dict(type='MultiPositiveInfoNCELoss', temp=temp))
        model.eval()
        assert (model.loss_pixel.temp, model.loss_semantic.temp) == (0.2, temp)
        losses[temp] = model.loss(inputs, two_view_samples(2))
    assert torch.equal(losses[0.2]['loss_pixel'], losses[0.5]['loss_pixel'])
    assert torch.equal(losses[0.2]['loss_instance'], losses[0.5]['loss_instance'])
    assert not torch.isclose(losses[0.2]['loss_semantic'], losses[0.5]['loss_semantic'])


def test_extract_feat_uses_the_trained_encoder_by_default():
    model = tiny_dsc()
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(model.extract_feat(x)[-1], model.backbone(x)[-1])
    model.feat_branch = 'teacher'
    with torch.no_grad():
        model.backbone.conv1.weight.mul_(2.0)
    assert torch.equal(model.extract_feat(x)[-1], model.teacher['backbone'](x)[-1])


# ----------------------------------------------------------------------------- momentum encoder

def test_momentum_encoder_keeps_its_own_batchnorm_statistics():
    """By default the momentum encoder is MoCo's key encoder: its parameters follow the encoder,
    its BN running statistics come from its own forward passes only."""
    torch.manual_seed(0)
    model = tiny_dsc(teacher_momentum=0.5, end_teacher_momentum=0.5)
    model.train()
    inputs = [torch.randn(2, 3, 64, 64) for _ in range(2)]
    # the first update copies the encoder, statistics included
    model.loss(inputs, two_view_samples(2))
    with torch.no_grad():
        model.backbone.bn1.running_mean.fill_(100.0)
        model.backbone.conv1.weight.mul_(2.0)
    teacher_conv = model.teacher['backbone'].conv1.weight.clone()
    model.loss(inputs, two_view_samples(2))
    # parameters half-way to the encoder's; statistics nowhere near its 100 ('average' would
    # give about 50, 'copy' 100)
    assert torch.allclose(model.teacher['backbone'].conv1.weight,
                          (teacher_conv + model.backbone.conv1.weight) / 2)
    assert model.teacher['backbone'].bn1.running_mean.abs().max() < 5


def test_the_loss_does_not_depend_on_the_momentum_encoders_statistics():
    """Both encoders normalise with batch statistics in training, so the three ways of keeping
    the momentum encoder's running statistics train identically."""
    curves = []
    for buffers in ('own', 'average', 'copy'):
        torch.manual_seed(0)
        model = tiny_dsc(teacher_buffers=buffers, queue_len=16)
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        generator = torch.Generator().manual_seed(1)
        curve = []
        for _ in range(3):
            inputs = [torch.randn(4, 3, 64, 64, generator=generator) for _ in range(2)]
            losses = model.loss(inputs, two_view_samples(4))
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            curve.append(torch.stack([losses[key].detach() for key in sorted(losses)]))
        curves.append(torch.stack(curve))
    assert torch.equal(curves[0], curves[1]) and torch.equal(curves[0], curves[2])
