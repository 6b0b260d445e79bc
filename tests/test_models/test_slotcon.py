"""SlotCon: grouping, losses, teacher schedule, inverse augmentation, full loss, optimiser."""
import math
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmpretrain.structures import DataSample

from mmdense.datasets.transforms import MultiCropWithGeometry
from mmdense.models.heads import SemanticGrouping
from mmdense.models.losses import (SlotConGroupLoss, group_loss, kept_slots,
                                   slot_contrast_loss)
from mmdense.registry import MODELS
from mmdense.utils import register_all_modules
from helpers import ROOT, tiny_slotcon, two_view_samples

# ----------------------------------------------------------------------------- grouping

def test_slots_are_attention_weighted_means_of_unnormalised_features():
    torch.manual_seed(0)
    grouping = SemanticGrouping(num_prototypes=3, dim=4, temp=0.5)
    x = torch.randn(2, 4, 2, 3)
    slots, dots = grouping(x)
    assert slots.shape == (2, 3, 4) and dots.shape == (2, 3, 2, 3)
    protos = grouping.prototypes.weight.detach()
    for b in range(2):
        pixels = [x[b, :, i, j] for i in range(2) for j in range(3)]
        cos = torch.tensor([[float(p @ v / (p.norm() * v.norm())) for v in pixels]
                            for p in protos])  # (K, hw)
        attn = torch.softmax(cos / 0.5, dim=0) + 1e-6
        for k in range(3):
            expected = sum(a * v for a, v in zip(attn[k], pixels)) / attn[k].sum()
            assert torch.allclose(slots[b, k], expected, atol=1e-5)
        assert torch.allclose(dots[b].flatten(1), cos, atol=1e-5)


def test_kept_slots_are_the_argmax_prototypes():
    dots = torch.zeros(2, 4, 1, 3)
    dots[0, 1, 0, :2] = 1.0  # pixels 0, 1 → prototype 1
    dots[0, 3, 0, 2] = 1.0   # pixel 2 → prototype 3
    dots[1, 2] = 1.0          # every pixel → prototype 2
    expected = torch.tensor([[False, True, False, True], [False, False, True, False]])
    assert torch.equal(kept_slots(dots), expected)


def test_mismatched_dimensions_are_a_clear_error():
    with pytest.raises(ValueError, match='slot dimension'):
        tiny_slotcon(head=dict(type='SemanticGrouping', num_prototypes=8, dim=32))
    with pytest.raises(ValueError, match='in_channels=2048'):
        tiny_slotcon(neck=dict(type='ConvMLPProjector', in_channels=2048, out_channels=16))
    with pytest.raises(ValueError, match='feat_branch'):
        tiny_slotcon(feat_branch='both')
    with pytest.raises(ValueError, match='loss_group num_prototypes=4 does not match the head '
                       'num_prototypes=8'):
        tiny_slotcon(loss_group=dict(type='SlotConGroupLoss', num_prototypes=4))


def test_losses_default_to_the_recipe_values_and_follow_their_configs():
    """Without loss configs SlotCon trains with the R50 recipe's values; a config sets them."""
    from mmengine.config import Config
    recipe = Config.fromfile(osp.join(ROOT, 'configs/_base_/models/slotcon_r50.py')).model
    model = tiny_slotcon()
    group, slot = model.loss_group, model.loss_slot
    assert (type(group).__name__, group.student_temp, group.teacher_temp,
            group.center_momentum) == (recipe.loss_group.type, recipe.loss_group.student_temp,
                                       recipe.loss_group.teacher_temp,
                                       recipe.loss_group.center_momentum)
    assert (type(slot).__name__, slot.temp) == (recipe.loss_slot.type, recipe.loss_slot.temp)
    assert group.center.shape == (1, 8)  # sized by the head's prototypes
    model = tiny_slotcon(loss_group=dict(type='SlotConGroupLoss', teacher_temp=0.04),
                         loss_slot=dict(type='SlotContrastLoss', temp=0.5))
    assert (model.loss_group.teacher_temp, model.loss_group.student_temp,
            model.loss_slot.temp) == (0.04, 0.1, 0.5)


def test_checkpoints_with_the_centre_at_its_old_key_still_load(tmp_path):
    """Checkpoints written while the centre was SlotCon's own buffer (``center``) load, strictly,
    into ``loss_group.center``: through ``load_state_dict`` and mmengine's checkpoint loader
    (which ``runner.resume`` uses)."""
    from mmengine.runner.checkpoint import load_checkpoint
    trained = tiny_slotcon()
    trained.loss_group.center.copy_(torch.arange(8.0)[None])
    old_layout = {('center' if k == 'loss_group.center' else k): v
                  for k, v in trained.state_dict().items()}
    assert 'center' in old_layout and 'loss_group.center' not in old_layout

    model = tiny_slotcon()
    model.load_state_dict(old_layout, strict=True)
    assert torch.equal(model.loss_group.center, trained.loss_group.center)

    torch.save(dict(state_dict=old_layout), tmp_path / 'old.pth')
    model = tiny_slotcon()
    load_checkpoint(model, str(tmp_path / 'old.pth'), strict=True)
    assert torch.equal(model.loss_group.center, trained.loss_group.center)
    # the current layout loads as it is
    model = tiny_slotcon()
    model.load_state_dict(trained.state_dict(), strict=True)
    assert torch.equal(model.loss_group.center, trained.loss_group.center)


# ----------------------------------------------------------------------------- group loss

def test_group_loss_is_centred_sharpened_cross_entropy_per_pixel():
    """The module (built from its config) and its functional core against the formula by hand,
    and the gradient: ``(softmax(s/τ_s) − target) / (τ_s · valid pixels)`` at valid pixels, 0 at
    the others, none to the teacher."""
    student = torch.tensor([[1.0, -0.5], [0.2, 0.3]])  # 2 pixels, K = 2
    teacher = torch.tensor([[0.4, 0.1], [-0.3, 0.6]])
    center = torch.tensor([[0.05, -0.02]])
    tau_s, tau_t = 0.1, 0.07
    expected, expected_grad = 0.0, []
    for s, t in zip(student, teacher):
        target = [math.exp((t[k] - center[0, k]) / tau_t) for k in range(2)]
        target = [v / sum(target) for v in target]
        log_norm = math.log(sum(math.exp(s[k] / tau_s) for k in range(2)))
        expected += -sum(target[k] * (s[k] / tau_s - log_norm) for k in range(2)) / 2
        expected_grad.append([(math.exp(s[k] / tau_s - log_norm) - target[k]) / (tau_s * 2)
                              for k in range(2)])
    # (B=1, K, h=1, w=2) maps; a second, invalid image must not count.
    student_maps = torch.stack([student.t()[:, None], torch.randn(2, 1, 2)]).requires_grad_()
    teacher_maps = torch.stack([teacher.t()[:, None], torch.randn(2, 1, 2)]).requires_grad_()
    valid = torch.tensor([True, False])
    loss_module = MODELS.build(dict(type='SlotConGroupLoss', num_prototypes=2, student_temp=tau_s,
                                    teacher_temp=tau_t, center_momentum=0.9))
    loss_module.center.copy_(center)
    loss = loss_module(student_maps, teacher_maps, valid)
    assert torch.isclose(loss, torch.tensor(float(expected)), atol=1e-5)
    assert torch.equal(loss, group_loss(student_maps, teacher_maps, center, tau_s, tau_t, valid))
    loss.backward()
    grad = student_maps.grad
    assert torch.allclose(grad[0, :, 0].t(), torch.tensor(expected_grad), atol=1e-5)
    assert torch.equal(grad[1], torch.zeros_like(grad[1])) and teacher_maps.grad is None


def test_group_loss_centre_follows_the_mean_teacher_score_of_every_pixel():
    """``c ← m·c + (1 − m)·mean(t)`` over all pixels of all views (not only the overlap)."""
    g = torch.Generator().manual_seed(0)
    teacher_dots = [torch.randn(2, 3, 2, 2, generator=g), torch.randn(2, 3, 1, 3, generator=g)]
    loss_module = SlotConGroupLoss(num_prototypes=3, center_momentum=0.8)
    loss_module.center.copy_(torch.tensor([[0.5, -1.0, 2.0]]))
    sums, count = [0.0] * 3, 0
    for dots in teacher_dots:
        for b in range(dots.shape[0]):
            for i in range(dots.shape[2]):
                for j in range(dots.shape[3]):
                    count += 1
                    for k in range(3):
                        sums[k] += float(dots[b, k, i, j])
    expected = [0.8 * c + 0.2 * total / count for c, total in zip([0.5, -1.0, 2.0], sums)]
    loss_module.update_center(teacher_dots)
    assert torch.allclose(loss_module.center, torch.tensor([expected]), atol=1e-6)


# ----------------------------------------------------------------------------- slot loss

def one_hot_dots(winners, num_prototypes=3):
    """(B, pixels) argmax prototypes → (B, K, 1, pixels) score maps."""
    return F.one_hot(torch.tensor(winners), num_prototypes).permute(0, 2, 1)[:, :, None].float()


def test_slot_loss_positives_masking_and_scaling():
    torch.manual_seed(0)
    student_slots, teacher_slots = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    student_dots = one_hot_dots([[0, 1], [2, 2]])  # kept: image 0 {0, 1}, image 1 {2}
    teacher_dots = one_hot_dots([[0, 0], [1, 2]])  # kept: image 0 {0},    image 1 {1, 2}
    tau = 0.2
    loss = slot_contrast_loss(student_slots, teacher_slots, student_dots, teacher_dots, tau)
    loss_module = MODELS.build(dict(type='SlotContrastLoss', temp=tau))
    assert torch.equal(loss_module(student_slots, teacher_slots, student_dots, teacher_dots), loss)

    # queries: kept in both views → (0, 0) and (1, 2); keys: (0, 0), (1, 1), (1, 2).
    queries = F.normalize(torch.stack([student_slots[0, 0], student_slots[1, 2]]), dim=1)
    keys = F.normalize(torch.stack([teacher_slots[0, 0], teacher_slots[1, 1],
                                    teacher_slots[1, 2]]), dim=1)
    logits = queries @ keys.t() / tau
    positives = [0, 2]
    expected = sum(-torch.log_softmax(logits[i], 0)[positives[i]] for i in range(2)) / 2
    assert torch.isclose(loss, expected * 2 * tau, atol=1e-5)

    # Slots that are not dominant anywhere (student (0, 2), teacher (0, 1)) play no part.
    student_slots[0, 2] += 10.0
    teacher_slots[0, 1] -= 10.0
    assert torch.isclose(slot_contrast_loss(student_slots, teacher_slots, student_dots,
                                            teacher_dots, tau), loss, atol=1e-6)
    # The predictor only sees the two query slots.
    seen = []
    slot_contrast_loss(student_slots, teacher_slots, student_dots, teacher_dots, tau,
                       predictor=lambda q: seen.append(q.shape) or q)
    assert seen == [torch.Size([2, 4])]


# ----------------------------------------------------------------------------- teacher momentum

def test_teacher_momentum_follows_cosine_from_0_99_to_1():
    model = tiny_slotcon()
    weight = lambda m: m['backbone'].conv1.weight  # noqa: E731
    model.teacher.update(model.student_modules())  # step 0 copies the student
    assert torch.equal(weight(model.teacher), model.backbone.conv1.weight)
    for step, momentum in ((1, 1 - 0.01 * (math.cos(math.pi / 100) + 1) / 2), (50, 0.995),
                           (100, 1.0)):
        model.teacher.steps.fill_(step)
        before = weight(model.teacher).clone()
        with torch.no_grad():
            model.backbone.conv1.weight.add_(1.0)
        model.teacher.update(model.student_modules())
        expected = momentum * before + (1 - momentum) * model.backbone.conv1.weight
        assert torch.allclose(weight(model.teacher), expected, atol=1e-6)


# ----------------------------------------------------------------------------- alignment

def coordinate_views(flip_prob, seed):
    """Two overlapping views of an image whose value at each pixel is its (x, y) centre."""
    size = 120
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    image = np.stack([xs, ys, np.zeros_like(xs)], axis=-1)
    np.random.seed(seed)
    crop = MultiCropWithGeometry(global_crops=dict(num=2, size=40, scale=(0.3, 1.0)),
                                 require_overlap=True, flip_prob=flip_prob,
                                 interpolation='bilinear')
    out = crop(dict(img=image))
    maps = [torch.from_numpy(v[..., :2].copy()).permute(2, 0, 1)[None] for v in out['img']]
    sample = DataSample(crop_boxes=torch.from_numpy(out['crop_boxes']),
                        flips=torch.from_numpy(out['flips']))
    return maps, sample, out['crop_boxes']


@pytest.mark.parametrize('flip_prob', [0.0, 1.0, 0.5])
def test_aligned_views_agree_on_their_overlap(flip_prob):
    model = tiny_slotcon()
    for seed in range(4):
        maps, sample, boxes = coordinate_views(flip_prob, seed)
        overlaps, flips, valid = model.view_overlaps([sample], torch.device('cpu'))
        assert valid.all()
        aligned = model.align_to_overlap(maps, overlaps, flips)
        # Both equal the coordinates of the overlap region's pixel centres (up to the
        # interpolation at the crop borders): away from the border, to a small fraction of a
        # source pixel; at the border, within about one source pixel.
        x1, y1 = np.maximum(boxes[0, :2], boxes[1, :2])
        x2, y2 = np.minimum(boxes[0, 2:], boxes[1, 2:])
        steps = (torch.arange(40) + 0.5) / 40
        expected = torch.stack([(x1 + (x2 - x1) * steps)[None].expand(40, 40),
                                (y1 + (y2 - y1) * steps)[:, None].expand(40, 40)])[None]
        for view in aligned:
            assert (view - expected)[..., 2:-2, 2:-2].abs().max() < 0.15
            assert (view - expected).abs().max() < 1.5
        assert (aligned[0] - aligned[1])[..., 2:-2, 2:-2].abs().max() < 0.15


# ----------------------------------------------------------------------------- full model

def test_loss_is_finite_and_only_the_student_gets_gradients():
    torch.manual_seed(0)
    model = tiny_slotcon()
    model.init_weights()
    inputs = [torch.randn(4, 3, 96, 96) for _ in range(2)]
    losses = model.loss(inputs, two_view_samples(4))
    assert set(losses) == {'loss_group', 'loss_slot', 'num_active_prototypes'}
    assert all(torch.isfinite(v) for v in losses.values())
    assert 1 <= losses['num_active_prototypes'] <= 8
    (losses['loss_group'] + losses['loss_slot']).backward()
    student = [n for n, p in model.named_parameters() if not n.startswith('teacher')]
    assert all(p.grad is not None for n, p in model.named_parameters() if n in student), \
        [n for n, p in model.named_parameters() if n in student and p.grad is None]
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    assert model.loss_group.center.abs().sum() > 0 and int(model.teacher.steps) == 1


def test_invalid_overlaps_are_left_out_of_the_group_loss():
    model = tiny_slotcon()
    model.eval()
    inputs = [torch.randn(2, 3, 64, 64) for _ in range(2)]
    disjoint = two_view_samples(2, boxes=((0, 0, 20, 20), (30, 30, 60, 60)))
    losses = model.loss(inputs, disjoint)
    assert losses['loss_group'] == 0 and losses['loss_slot'] > 0


def test_extract_feat_uses_the_teacher_backbone_by_default():
    model = tiny_slotcon()
    model.eval()
    model.teacher.update(model.student_modules())
    with torch.no_grad():
        model.backbone.conv1.weight.mul_(2.0)
    x = torch.randn(1, 3, 64, 64)
    teacher_feat = model.teacher['backbone'](x)[-1]
    assert torch.allclose(model.extract_feat(x)[-1], teacher_feat)
    model.feat_branch = 'student'
    assert not torch.allclose(model.extract_feat(x)[-1], teacher_feat)


def test_two_view_requirement_is_a_clear_error():
    with pytest.raises(ValueError, match='2 views'):
        tiny_slotcon().loss([torch.randn(2, 3, 64, 64)] * 3, two_view_samples(2))


# ----------------------------------------------------------------------------- teacher BN

def test_teacher_keeps_its_own_batchnorm_statistics():
    """As in the official code, the teacher runs in train mode and only its parameters follow
    the student: its BN running statistics come from its own forward passes, and the EMA update
    leaves them as they are."""
    torch.manual_seed(0)
    model = tiny_slotcon()
    model.init_weights()
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        inputs = [torch.randn(4, 3, 64, 64) * 3 + 1 for _ in range(2)]
        losses = model.loss(inputs, two_view_samples(4))
        optimizer.zero_grad()
        (losses['loss_group'] + losses['loss_slot']).backward()
        optimizer.step()
    own = {name: buffer.clone() for name, buffer in model.teacher.module.named_buffers()}
    assert not torch.allclose(own['backbone.bn1.running_mean'], model.backbone.bn1.running_mean,
                              rtol=1e-3)
    assert not torch.allclose(own['neck.mlp.bn1.running_var'],
                              model.neck.mlp.bn1.running_var, rtol=1e-3)
    model.teacher.update(model.student_modules())
    for name, buffer in model.teacher.module.named_buffers():
        assert torch.equal(buffer, own[name]), name


# ----------------------------------------------------------------------------- recipes

def load_config(name):
    from mmengine.config import Config
    return Config.fromfile(osp.join(ROOT, 'configs/slotcon', name))


R50_RECIPES = ('r50_in1k-100e.py', 'r50_in1k-200e.py', 'r50_coco-800e.py', 'r50_cocoplus-800e.py')


def test_imagenet_recipes_use_2048_prototypes_and_coco_ones_256():
    """``--num-prototypes`` and ``--epochs`` of the official scripts."""
    expected = dict(zip(R50_RECIPES, [(2048, 100), (2048, 200), (256, 800), (256, 800)]))
    for name, (num_prototypes, epochs) in expected.items():
        cfg = load_config(name)
        assert (cfg.model.head.num_prototypes, cfg.train_cfg.max_epochs) == \
            (num_prototypes, epochs), name


def test_recipes_optimise_as_the_official_code():
    """BarlowTwinsLARS at 1.0 x 512/256, 5 warm-up epochs from lr/100, cosine to 1e-6, fp16."""
    for name in R50_RECIPES:
        cfg = load_config(name)
        epochs = cfg.train_cfg.max_epochs
        warmup, cosine = cfg.param_scheduler
        assert (warmup.start_factor, warmup.end) == (1e-2, 5), name
        assert (cosine.begin, cosine.end, cosine.T_max, cosine.eta_min) == \
            (5, epochs, epochs - 5, 1e-6), name
        assert cfg.optim_wrapper == dict(
            type='AmpOptimWrapper', optimizer=dict(type='BarlowTwinsLARS', lr=2.0, momentum=0.9,
                                                   weight_decay=1e-5, eta=0.001)), name


def test_recipes_teacher_and_views_are_the_official_ones():
    for name in R50_RECIPES:
        cfg = load_config(name)
        assert cfg.model.teacher_buffers == 'own', name
        crop = cfg.train_pipeline[1]
        assert (crop.global_crops.size, crop.global_crops.scale) == (224, (0.08, 1.0))
        assert (crop.require_overlap, crop.max_tries, crop.min_overlap) == (True, 10, 0.01)
        assert crop.interpolation == 'bicubic'  # resized with PIL, antialiased


def test_cocoplus_reads_train2017_and_unlabeled2017(tmp_path):
    from mmengine.registry import DATASETS
    for folder, names in (('train2017', ['a.jpg', 'b.jpg']), ('unlabeled2017', ['c.jpg'])):
        (tmp_path / folder).mkdir()
        for name in names:
            (tmp_path / folder / name).write_bytes(b'')
    cfg = load_config('r50_cocoplus-800e.py')
    coco = load_config('r50_coco-800e.py')
    # everything but the image folders is the COCO recipe
    for part in cfg.train_dataloader.dataset.datasets:
        assert part.data_root == coco.train_dataloader.dataset.data_root
        assert part.pipeline == coco.train_dataloader.dataset.pipeline
        part.update(data_root=str(tmp_path), pipeline=[])
    for key in ('model', 'optim_wrapper', 'param_scheduler', 'train_cfg'):
        assert cfg[key] == coco[key], key
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    paths = sorted(osp.relpath(dataset.get_data_info(i)['img_path'], tmp_path)
                   for i in range(len(dataset)))
    assert paths == ['train2017/a.jpg', 'train2017/b.jpg', 'unlabeled2017/c.jpg']


def test_backbone_starts_as_the_official_resnet():
    """Last BN weight of every residual block zero, convs kaiming-normal with fan-out."""
    from mmpretrain.models.backbones.resnet import BasicBlock, Bottleneck
    register_all_modules(init_default_scope=False)
    backbone = MODELS.build(load_config('r50_coco-800e.py').model.backbone)
    backbone.init_weights()
    blocks = [m for m in backbone.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 16
    assert all(torch.all(block.norm3.weight == 0) for block in blocks)
    assert torch.all(backbone.layer1[0].norm1.weight == 1)
    for conv in (backbone.layer3[0].conv2, backbone.layer4[0].conv1, backbone.conv1):
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        weight = conv.weight.detach()
        assert abs(float(weight.std()) / math.sqrt(2 / fan_out) - 1) < 0.03
        assert abs(float(weight.mean())) < 0.05 * math.sqrt(2 / fan_out)

    # the toy model: BasicBlocks, and the teacher starts from the same weights
    model = MODELS.build(load_config('r18_toy.py').model)
    model.init_weights()
    model.set_teacher_schedule(1)
    model.teacher.update(model.student_modules())
    for backbone in (model.backbone, model.teacher['backbone']):
        blocks = [m for m in backbone.modules() if isinstance(m, BasicBlock)]
        assert len(blocks) == 8 and all(torch.all(b.norm2.weight == 0) for b in blocks)


def test_recipe_optimiser_is_the_official_lars():
    from mmengine.optim import build_optim_wrapper
    from mmdense.engine.optimizers import BarlowTwinsLARS
    model = tiny_slotcon()
    wrapper = build_optim_wrapper(model, load_config('r18_toy.py').optim_wrapper)
    assert isinstance(wrapper.optimizer, BarlowTwinsLARS)
    trained = {id(p) for group in wrapper.optimizer.param_groups for p in group['params']
               if p.requires_grad}  # the teacher's parameters are frozen: they get no gradient
    assert trained == {id(p) for n, p in model.named_parameters() if not n.startswith('teacher')}
    assert {group['weight_decay'] for group in wrapper.optimizer.param_groups} == {1e-5}
