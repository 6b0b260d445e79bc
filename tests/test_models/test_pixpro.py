"""PixPro: the consistency loss, the pixel propagation module and the positive pixel pairs
against hand computations, gradients, view symmetry, errors, the recipe against the authors'
script, and training steps of the toy config."""
import math
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from mmpretrain.structures import DataSample

from mmdense.models.algorithms.pixpro import PixelPropagation
from mmdense.models.losses.pixpro_loss import pixel_consistency, pixpro_positive_pairs
from mmdense.registry import MODELS
from mmdense.utils import register_all_modules
from helpers import ROOT, tiny_run_config

pytestmark = pytest.mark.usefixtures('one_thread')


def tiny_pixpro(**kwargs):
    """PixPro on a ResNet-18 with a 32-wide projector of 16 channels, its teacher schedule 10
    steps long."""
    register_all_modules(init_default_scope=False)
    cfg = dict(type='PixPro',
               backbone=dict(type='ResNet', depth=18, out_indices=(3, ), style='pytorch'),
               neck=dict(type='PixelMLP', in_channels=512, hidden_channels=32, out_channels=16))
    cfg.update(kwargs)
    model = MODELS.build(cfg)
    model.set_teacher_schedule(10)
    return model


def samples(batch, boxes=((0, 0, 48, 48), (16, 8, 64, 56)), flips=(False, True),
            ori_shape=(64, 80)):
    """``batch`` data samples with two views' crop boxes, flips and the original image shape."""
    return [DataSample(metainfo=dict(ori_shape=ori_shape),
                       crop_boxes=torch.tensor(boxes, dtype=torch.float32),
                       flips=torch.tensor(flips)) for _ in range(batch)]


def views(batch=2, size=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, size, size, generator=generator) for _ in range(2)]


# ------------------------------------------------------------------------ hand references
def dot(u, v):
    return sum(float(a) * float(b) for a, b in zip(u, v))


def cosine(u, v):
    return dot(u, v) / math.sqrt(dot(u, u) * dot(v, v))


def pixels(feature_map):
    """(C, h, w) map → its h·w pixel vectors, row-major."""
    channels, height, width = feature_map.shape
    return [feature_map[:, r, c] for r in range(height) for c in range(width)]


def reference_positives(box_1, flip_1, size_1, box_2, flip_2, size_2, image_shape, threshold):
    """The paper's positive pairs, computed pixel by pixel: bin centres in image coordinates
    normalised by the image width (x) and height (y), closer than ``threshold`` times the larger
    of the two views' bin diagonals."""
    height, width = image_shape

    def centres_and_diagonal(box, flip, size):
        x1, y1, x2, y2 = box
        rows, cols = size
        bin_w, bin_h = (x2 - x1) / width / cols, (y2 - y1) / height / rows
        centres = []
        for r in range(rows):
            for c in range(cols):
                image_col = cols - 1 - c if flip else c  # a flipped view shows it mirrored
                centres.append((x1 / width + (image_col + 0.5) * bin_w,
                                y1 / height + (r + 0.5) * bin_h))
        return centres, math.hypot(bin_w, bin_h)

    centres_1, diagonal_1 = centres_and_diagonal(box_1, flip_1, size_1)
    centres_2, diagonal_2 = centres_and_diagonal(box_2, flip_2, size_2)
    return torch.tensor([[math.dist(p, q) / max(diagonal_1, diagonal_2) < threshold
                          for q in centres_2] for p in centres_1])


def positives_of(box_1, flip_1, box_2, flip_2, size=(3, 3), image_shape=(64, 64),
                 threshold=0.7):
    """The module's (h·w, h·w) positives of one image."""
    return pixpro_positive_pairs(
        torch.tensor([box_1], dtype=torch.float32), torch.tensor([flip_1]), size,
        torch.tensor([box_2], dtype=torch.float32), torch.tensor([flip_2]), size,
        torch.tensor([image_shape], dtype=torch.float32), threshold)[0]


# ------------------------------------------------------------------------ the loss
def test_consistency_loss_is_minus_two_mean_positive_cosine_per_image():
    torch.manual_seed(0)
    predictions, targets = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    positives = torch.zeros(3, 4, 4, dtype=torch.bool)
    positives[0, 0, 0] = positives[0, 1, 3] = positives[0, 2, 2] = True
    positives[1] = True  # every pair
    # image 2 has no positive pair: it adds 0 to the batch mean
    per_image = []
    for b in range(3):
        pairs = [(i, j) for i in range(4) for j in range(4) if positives[b, i, j]]
        y, x = pixels(predictions[b]), pixels(targets[b])
        per_image.append(sum(cosine(y[i], x[j]) for i, j in pairs) / (len(pairs) + 1e-6))
    expected = -2 * sum(per_image) / 3
    assert pixel_consistency(predictions, targets, positives).item() == pytest.approx(
        expected, abs=1e-5)


def test_consistency_loss_compares_views_of_different_sizes():
    torch.manual_seed(1)
    predictions, targets = torch.randn(1, 3, 1, 2), torch.randn(1, 3, 2, 2)
    positives = torch.tensor([[[True, False, False, True], [False, False, False, False]]])
    y, x = pixels(predictions[0]), pixels(targets[0])
    expected = -2 * (cosine(y[0], x[0]) + cosine(y[0], x[3])) / (2 + 1e-6)
    assert pixel_consistency(predictions, targets, positives).item() == pytest.approx(
        expected, abs=1e-5)


# ------------------------------------------------------------------------ propagation
@pytest.mark.parametrize('gamma', [2.0, 1.0])
def test_propagation_is_a_similarity_weighted_sum_of_transformed_pixels(gamma):
    torch.manual_seed(2)
    ppm = PixelPropagation(channels=3, num_transform_layers=1, gamma=gamma)
    x = torch.randn(2, 3, 2, 3)
    weight = ppm.transform.weight.detach()[:, :, 0, 0]
    bias = ppm.transform.bias.detach()
    output = ppm(x)
    assert output.shape == x.shape
    for b in range(2):
        xs = pixels(x[b])
        values = []
        for x_j in xs:  # g(x_j) = W x_j + b, then unit length
            g = [dot(row, x_j) + float(bias[k]) for k, row in enumerate(weight)]
            norm = math.sqrt(dot(g, g))
            values.append([v / norm for v in g])
        for i, x_i in enumerate(xs):
            similarities = [max(cosine(x_i, x_j), 0.0) ** gamma for x_j in xs]
            expected = [sum(s * v[k] for s, v in zip(similarities, values)) for k in range(3)]
            r, c = divmod(i, 3)
            assert torch.allclose(output[b, :, r, c], torch.tensor(expected), atol=1e-5)


def test_propagation_without_transform_uses_the_normalised_input_as_values():
    x = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]]]])  # pixels (1, 0) and (0, 2): orthogonal
    output = PixelPropagation(channels=2, num_transform_layers=0, gamma=2.0)(x)
    # each pixel is similar (cosine 1) to itself only: the output is the unit pixel
    assert torch.allclose(output, torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]]))
    x = torch.tensor([[[[1.0, 1.0]], [[0.0, 1.0]]]])  # pixels (1, 0), (1, 1): cosine 1/sqrt 2
    output = PixelPropagation(channels=2, num_transform_layers=0, gamma=2.0)(x)
    unit = torch.tensor([[1.0, 0.0], [2 ** -0.5, 2 ** -0.5]])
    expected = torch.stack([unit[0] + 0.5 * unit[1], 0.5 * unit[0] + unit[1]], dim=1)
    assert torch.allclose(output[0, :, 0], expected, atol=1e-6)


def test_propagation_refuses_an_unknown_transform_depth():
    with pytest.raises(ValueError, match='num_transform_layers must be 0, 1 or 2, got 3'):
        PixelPropagation(channels=4, num_transform_layers=3)


# ------------------------------------------------------------------------ positive pairs
def test_identical_crops_pair_each_pixel_with_itself_only():
    # neighbours lie one bin apart, 1/sqrt(2) = 0.707 diagonals: just beyond T = 0.7
    mask = positives_of((8, 8, 56, 56), False, (8, 8, 56, 56), False)
    assert torch.equal(mask, torch.eye(9, dtype=torch.bool))


def test_a_flipped_copy_pairs_each_pixel_with_its_mirror():
    mask = positives_of((8, 8, 56, 56), False, (8, 8, 56, 56), True)
    mirror = torch.tensor([3 * r + 2 - c for r in range(3) for c in range(3)])
    assert torch.equal(mask, torch.eye(9, dtype=torch.bool)[mirror])


def test_disjoint_crops_have_no_positive_pair():
    assert not positives_of((0, 0, 30, 30), False, (34, 34, 64, 64), True).any()


@pytest.mark.parametrize('seed', range(4))
def test_positive_pairs_follow_the_papers_rule_on_a_wide_image(seed):
    """Random crops of a 100 x 240 image at different scales (so the larger bin diagonal
    decides), flips, 3 x 4 and 2 x 3 maps, against the pixel-by-pixel reference."""
    generator = torch.Generator().manual_seed(seed)
    image_shape = (100, 240)
    boxes, flips = [], []
    for _ in range(2):
        w, h = [int(v) for v in torch.randint(40, 200, (2, ), generator=generator)]
        h = min(h, 100)
        x1 = int(torch.randint(0, 240 - w + 1, (1, ), generator=generator))
        y1 = int(torch.randint(0, 100 - h + 1, (1, ), generator=generator))
        boxes.append((x1, y1, x1 + w, y1 + h))
        flips.append(bool(torch.rand(1, generator=generator) < 0.5))
    for size_1, size_2 in (((3, 4), (3, 4)), ((3, 4), (2, 3))):
        expected = reference_positives(boxes[0], flips[0], size_1, boxes[1], flips[1], size_2,
                                       image_shape, 0.7)
        got = pixpro_positive_pairs(
            torch.tensor([boxes[0]], dtype=torch.float32), torch.tensor([flips[0]]), size_1,
            torch.tensor([boxes[1]], dtype=torch.float32), torch.tensor([flips[1]]), size_2,
            torch.tensor([image_shape], dtype=torch.float32), 0.7)[0]
        assert torch.equal(got, expected), (boxes, flips, size_1, size_2)


def test_distances_are_measured_in_image_normalised_coordinates():
    """A 100 x 400 image, two 80 x 20 px crops 10 px apart vertically, 2 x 2 maps (bins of
    40 x 10 px). Pixel (0, 0) of both views: 10 px apart, 0.24 bin diagonals in pixels (a
    positive there), but 0.1 / hypot(0.1, 0.1) = 0.71 diagonals in coordinates normalised by
    the image sides, as the authors measure (no positive)."""
    image_shape = (100, 400)
    box_1, box_2 = (0, 0, 80, 20), (0, 10, 80, 30)
    got = positives_of(box_1, False, box_2, False, size=(2, 2), image_shape=image_shape)
    expected = reference_positives(box_1, False, (2, 2), box_2, False, (2, 2), image_shape, 0.7)
    in_pixels = reference_positives(box_1, False, (2, 2), box_2, False, (2, 2), (1, 1), 0.7)
    assert torch.equal(got, expected)
    assert in_pixels[0, 0] and not got[0, 0]


# ------------------------------------------------------------------------ the model
def test_gradients_reach_the_student_only():
    model = tiny_pixpro(instance_loss_weight=1.0)
    losses = model.loss(views(), samples(2))
    assert set(losses) == {'loss_pixel', 'loss_instance'}
    sum(losses.values()).backward()
    for name, param in model.named_parameters():
        if name.startswith('teacher.'):
            assert param.grad is None, name
    for module in ('backbone', 'neck', 'propagation', 'instance_neck', 'instance_predictor'):
        grads = [p.grad for p in getattr(model, module).parameters()]
        assert all(g is not None for g in grads), module
        assert any(g.abs().sum() > 0 for g in grads), module
    assert set(model.teacher.module) == {'backbone', 'neck', 'instance_neck'}


def test_the_loss_is_symmetric_in_the_two_views():
    first, second = views(seed=4)
    boxes, flips = ((0, 0, 48, 48), (16, 8, 64, 56)), (False, True)
    losses = []
    for order in (slice(None), slice(None, None, -1)):
        torch.manual_seed(3)  # the same model; its first update makes the teacher a copy
        model = tiny_pixpro(instance_loss_weight=0.5)
        losses.append(model.loss([first, second][order],
                                 samples(2, boxes[order], flips[order])))
    for term in losses[0]:
        assert losses[1][term].item() == pytest.approx(losses[0][term].item(), abs=1e-6), term


def test_wrong_views_and_missing_geometry_are_clear_errors():
    model = tiny_pixpro()
    with pytest.raises(ValueError, match='PixPro needs exactly 2 views per image, got 3'):
        model.loss(views() + views()[:1], samples(2))
    bare = [DataSample(crop_boxes=torch.zeros(2, 4), flips=torch.zeros(2, dtype=torch.bool))
            for _ in range(2)]
    with pytest.raises(KeyError, match=r"lack \['ori_shape'\]"):
        model.loss(views(), bare)
    with pytest.raises(ValueError, match='neck in_channels=2048 does not match'):
        tiny_pixpro(neck=dict(type='PixelMLP', in_channels=2048, hidden_channels=32,
                              out_channels=16))


# ------------------------------------------------------------------------ recipe and toy run
# tools/pixpro_base_r50_100ep.sh / _400ep.sh of zdaxie/PixPro, flag by flag
AUTHORS_SCRIPT = {'--batch-size': 128, 'GPUs': 8, '--base-lr': 1.0, '--weight-decay': 1e-5,
                  '--warmup-epoch': 5, '--crop': 0.08, '--pixpro-p': 2,
                  '--pixpro-momentum': 0.99, '--pixpro-pos-ratio': 0.7,
                  '--pixpro-transform-layer': 1, '--pixpro-ins-loss-weight': 0.0}


@pytest.mark.parametrize('name,epochs', [('r50_in1k-100e', 100), ('r50_in1k-400e', 400)])
def test_recipes_hold_the_authors_script_values(name, epochs):
    cfg = Config.fromfile(osp.join(ROOT, 'configs/pixpro', f'{name}.py'))
    script = AUTHORS_SCRIPT
    total_batch = script['--batch-size'] * script['GPUs']
    assert cfg.train_dataloader.batch_size * 8 == total_batch == cfg.auto_scale_lr.base_batch_size
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.type == 'BarlowTwinsLARS' and optimizer.momentum == 0.9
    assert optimizer.lr == script['--base-lr'] * total_batch / 256
    assert optimizer.weight_decay == script['--weight-decay']
    warmup, cosine = cfg.param_scheduler
    assert (warmup.start_factor, warmup.end) == (1e-2, script['--warmup-epoch'])
    assert (cosine.eta_min, cosine.end, cfg.train_cfg.max_epochs) == (1e-6, epochs, epochs)
    crops = cfg.train_pipeline[1]
    assert crops.global_crops == dict(num=2, size=224, scale=(script['--crop'], 1.0))
    assert (crops.require_overlap, crops.interpolation) == (False, 'bilinear')
    model = cfg.model
    assert model.backbone.depth == 50 and model.backbone.zero_init_residual
    assert model.propagation.gamma == script['--pixpro-p']
    assert model.propagation.num_transform_layers == script['--pixpro-transform-layer']
    assert model.loss_pixel.threshold == script['--pixpro-pos-ratio']
    assert model.teacher_momentum == script['--pixpro-momentum']
    assert model.instance_loss_weight == script['--pixpro-ins-loss-weight']
    assert (model.neck.in_channels, model.neck.hidden_channels, model.neck.out_channels) == (
        2048, 4096, 256)


def test_coco_config_keeps_the_optimizer_steps_of_the_imagenet_recipe():
    imagenet = Config.fromfile(osp.join(ROOT, 'configs/pixpro/r50_in1k-100e.py'))
    coco = Config.fromfile(osp.join(ROOT, 'configs/pixpro/r50_coco-1088e.py'))
    batch = 1024
    steps = (1_281_167 // batch) * 100, (118_287 // batch) * coco.train_cfg.max_epochs
    assert abs(steps[1] - steps[0]) < 118_287 // batch  # within one COCO epoch
    assert coco.param_scheduler[0].end / coco.train_cfg.max_epochs == pytest.approx(0.05)
    assert coco.model == imagenet.model and coco.optim_wrapper == imagenet.optim_wrapper
    assert coco.train_dataloader.dataset.data_prefix == 'train2017/'


def test_toy_config_trains_and_moves_the_student(toy_root, tmp_path):
    register_all_modules(init_default_scope=False)
    cfg = tiny_run_config('configs/pixpro/r18_toy.py', toy_root, max_iters=2)
    cfg.train_dataloader.dataset.pipeline[1].global_crops.size = 64
    cfg.model.neck.hidden_channels = 64
    cfg.work_dir = str(tmp_path)
    runner = Runner.from_cfg(cfg)
    before = {k: v.clone() for k, v in runner.model.state_dict().items()}
    runner.train()
    after = runner.model.state_dict()
    moved = [k for k in before if k.startswith(('backbone.', 'neck.', 'propagation.'))
             and k.endswith('weight') and not torch.equal(before[k], after[k])]
    assert moved
    logged = runner.message_hub.get_scalar('train/loss_pixel').current()
    assert math.isfinite(logged) and -4.0 <= logged <= 4.0
