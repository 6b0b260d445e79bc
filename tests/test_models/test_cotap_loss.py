import math

import pytest
import torch

from mmdense.models.losses import ContinuousAPLoss, cotap_loss, smooth_hinge
from mmdense.registry import MODELS
from mmdense.utils import register_all_modules


def reference_loss(pred, target, margin, threshold, scale=None, eps=1e-5):
    """Plain-Python CoTAP loss over one list, straight from the formula."""
    n = len(pred)
    scale = scale or [1.0] * n
    num = den = 0.0
    for i in range(n):
        fp = tp = 0.0
        for j in range(n):
            x = pred[i] - pred[j]
            hinge = (min(x, margin) / margin - 1)**2 if x >= 0 else 1 - 2 * x / margin
            fp += max(target[i] - target[j], 0.0) * hinge
            tp += float(target[j] >= target[i] and pred[j] >= pred[i])
        r = fp / (tp + eps)
        w = max(target[i] - threshold, 0.0) * scale[i]
        num += w * r / (1 + r)
        den += w
    return num / den


def test_smooth_hinge_branches():
    x = torch.tensor([-0.1, 0.0, 0.05, 0.1, 0.3])
    expected = torch.tensor([3.0, 1.0, 0.25, 0.0, 0.0])
    torch.testing.assert_close(smooth_hinge(x, 0.1), expected)


def test_hand_computed_three_items():
    # Only item 2 (t=0.5) is mis-ranked: below item 1 (t=0.2) by 0.3, so
    # FP_2 = 0.3 * (1 + 2*0.3/0.1) = 2.1, TP_2 = 2 (items 0 and 2), loss_2 = r/(1+r) with
    # r = 2.1/2, weights = targets: L = 0.5 * loss_2 / 1.6.
    pred = torch.tensor([0.5, 0.3, 0.0])
    target = torch.tensor([0.9, 0.2, 0.5])
    r = 2.1 / (2 + 1e-5)
    expected = 0.5 * (r / (1 + r)) / 1.6
    assert cotap_loss(pred, target, margin=0.1).item() == pytest.approx(expected, rel=1e-5)


def test_matches_reference_on_random_lists():
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        pred = torch.rand(7, generator=gen) * 2 - 1
        target = torch.rand(7, generator=gen) * 2 - 1
        scale = torch.where(torch.rand(7, generator=gen) < 0.5, 0.1, 1.0)
        got = cotap_loss(pred, target, margin=0.2, threshold=0.1, item_scale=scale)
        want = reference_loss(pred.tolist(), target.tolist(), 0.2, 0.1, scale.tolist())
        assert got.item() == pytest.approx(want, rel=1e-5)


def test_zero_when_order_matches_by_margin():
    target = torch.tensor([0.9, 0.7, 0.4, 0.1, -0.5])
    pred = torch.tensor([0.8, 0.6, 0.45, 0.3, 0.1])  # same order, gaps >= 0.1
    assert cotap_loss(pred, target, margin=0.1).item() == 0.0
    # Inside the margin the loss is positive although the order is right.
    assert cotap_loss(pred, target, margin=0.2).item() > 0


def test_monotone_rescaling_of_targets():
    # TP counts and the set of anchors with a non-zero loss depend on the target order only:
    # a strictly increasing map of the targets keeps a zero loss zero and a non-zero one
    # non-zero. (The value itself changes: FP weighs each violation by its target gap.)
    target = torch.tensor([0.9, 0.6, 0.4, 0.2])
    rescaled = torch.sigmoid(5 * target) - 0.5  # monotone, still above theta = 0
    ordered = torch.tensor([0.9, 0.7, 0.5, 0.3])
    assert cotap_loss(ordered, target).item() == 0.0
    assert cotap_loss(ordered, rescaled).item() == 0.0
    shuffled = torch.tensor([0.3, 0.9, 0.7, 0.5])
    assert cotap_loss(shuffled, target).item() > 0
    assert cotap_loss(shuffled, rescaled).item() > 0
    # A common scale of all anchor weights cancels in the normalisation.
    base = cotap_loss(shuffled, target, item_scale=torch.full((4, ), 1.0))
    scaled = cotap_loss(shuffled, target, item_scale=torch.full((4, ), 7.0))
    torch.testing.assert_close(base, scaled)


def test_threshold_weights():
    pred = torch.tensor([0.0, 0.5, 0.2])
    target = torch.tensor([0.9, 0.3, 0.1])
    # Only item 0 is above theta = 0.5: the loss is loss_0 alone, whatever its weight.
    want = reference_loss(pred.tolist(), target.tolist(), 0.1, 0.5)
    got = cotap_loss(pred, target, margin=0.1, threshold=0.5)
    assert got.item() == pytest.approx(want, rel=1e-6)
    # No anchor above theta: zero, but still differentiable.
    pred.requires_grad_(True)
    loss = cotap_loss(pred, target, threshold=0.95)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(pred.grad == 0)


def test_negatives_scaled_by_alpha():
    pred = torch.tensor([0.1, 0.6, 0.4, 0.0])
    target = torch.tensor([0.8, 0.2, 0.6, 0.3])
    alpha = 0.1
    scale = torch.tensor([1.0, 1.0, alpha, alpha])
    got = cotap_loss(pred, target, item_scale=scale)
    want = reference_loss(pred.tolist(), target.tolist(), 0.1, 0.0, scale.tolist())
    assert got.item() == pytest.approx(want, rel=1e-6)
    # Down-weighting the negatives moves the loss towards the positives-only average.
    unweighted = cotap_loss(pred, target)
    assert got.item() != pytest.approx(unweighted.item())


def test_gradient_flows_through_false_positive_term_only():
    # d loss_i / d p = (1/(1+r_i))² / (TP_i + eps) · d FP_i / d p, with TP a constant.
    margin = 0.2
    pred = torch.tensor([0.1, 0.45, 0.3, -0.2, 0.05], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0.7, 0.1, 0.5, 0.4, 0.9], dtype=torch.float64)
    cotap_loss(pred, target, margin=margin).backward()

    def hinge_grad(x):
        if x < 0:
            return -2 / margin
        return 2 * (x / margin - 1) / margin if x < margin else 0.0

    p, t, n = pred.detach().tolist(), target.tolist(), 5
    grad = [0.0] * n
    total_w = sum(max(v, 0) for v in t)
    for i in range(n):
        fp = sum(max(t[i] - t[j], 0) * smooth_hinge(torch.tensor(p[i] - p[j]), margin).item()
                 for j in range(n))
        tp = sum(float(t[j] >= t[i] and p[j] >= p[i]) for j in range(n))
        r = fp / (tp + 1e-5)
        coeff = max(t[i], 0) / total_w / (1 + r)**2 / (tp + 1e-5)
        for j in range(n):
            g = max(t[i] - t[j], 0) * hinge_grad(p[i] - p[j])
            grad[i] += coeff * g
            grad[j] -= coeff * g
    torch.testing.assert_close(pred.grad, torch.tensor(grad, dtype=torch.float64))
    # The targets never receive a gradient.
    target.requires_grad_(True)
    loss = cotap_loss(pred, target, margin=margin)
    assert loss.grad_fn is not None
    assert torch.autograd.grad(loss, target, allow_unused=True)[0] is None


def test_chunked_equals_full_on_batches_of_lists():
    gen = torch.Generator().manual_seed(1)
    pred = (torch.rand(3, 4, 37, generator=gen) * 2 - 1).requires_grad_(True)
    target = torch.rand(3, 4, 37, generator=gen) * 2 - 1
    full = cotap_loss(pred, target)
    (grad_full, ) = torch.autograd.grad(full, pred)
    chunked = cotap_loss(pred, target, chunk_size=5)
    (grad_chunked, ) = torch.autograd.grad(chunked, pred)
    torch.testing.assert_close(full, chunked)
    torch.testing.assert_close(grad_full, grad_chunked)
    # Lists are independent: the batched loss is the weight-normalised sum over the lists.
    weights = target.clamp(min=0).sum(-1)
    per_list = torch.stack([
        torch.stack([cotap_loss(pred[a, b], target[a, b]) for b in range(4)]) for a in range(3)
    ])
    torch.testing.assert_close(full, (per_list * weights).sum() / weights.sum())


def test_stable_for_extreme_inputs():
    pred = torch.tensor([1e4, -1e4, 0.0, 3.0], requires_grad=True)
    target = torch.tensor([-1.0, 1.0, 1.0, 0.5])
    loss = cotap_loss(pred, target, margin=1e-3)
    loss.backward()
    assert math.isfinite(loss.item()) and 0 <= loss.item() <= 1
    assert torch.isfinite(pred.grad).all()


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match='same shape'):
        cotap_loss(torch.zeros(3), torch.zeros(4))


def build_ranking_loss(**kwargs):
    register_all_modules(init_default_scope=False)
    return MODELS.build(dict(type='ContinuousAPLoss', **kwargs))


def test_module_from_config_matches_the_hand_computed_reference():
    # Every hyper-parameter set in the config reaches the formula, eps included: with
    # eps = 0.5 the ratios r_i = FP_i / (TP_i + eps) differ visibly from eps = 1e-5.
    gen = torch.Generator().manual_seed(2)
    pred = torch.rand(6, generator=gen) * 2 - 1
    target = torch.rand(6, generator=gen) * 2 - 1
    scale = torch.tensor([1.0, 1.0, 1.0, 0.1, 0.1, 0.1])
    loss = build_ranking_loss(margin=0.3, threshold=-0.2, chunk_size=4, eps=0.5)
    assert isinstance(loss, ContinuousAPLoss)
    want = reference_loss(pred.tolist(), target.tolist(), 0.3, -0.2, scale.tolist(), eps=0.5)
    assert loss(pred, target, item_scale=scale).item() == pytest.approx(want, rel=1e-5)
    default_eps = reference_loss(pred.tolist(), target.tolist(), 0.3, -0.2, scale.tolist())
    assert want != pytest.approx(default_eps, rel=1e-3)


def test_module_defaults_and_gradient_equal_the_functional_core():
    gen = torch.Generator().manual_seed(3)
    pred = (torch.rand(2, 3, 11, generator=gen) * 2 - 1).double().requires_grad_(True)
    target = (torch.rand(2, 3, 11, generator=gen) * 2 - 1).double()
    scale = torch.where(torch.rand(2, 3, 11, generator=gen) < 0.5, 0.1, 1.0).double()
    module = build_ranking_loss()
    assert (module.margin, module.threshold, module.chunk_size, module.eps) == (0.1, 0.0, None,
                                                                                1e-5)
    got = module(pred, target, item_scale=scale)
    (grad_got, ) = torch.autograd.grad(got, pred)
    want = cotap_loss(pred, target, margin=0.1, threshold=0.0, item_scale=scale)
    (grad_want, ) = torch.autograd.grad(want, pred)
    assert torch.equal(got, want) and torch.equal(grad_got, grad_want)
    assert torch.autograd.gradcheck(lambda p: module(p, target, item_scale=scale), (pred, ))


@pytest.mark.parametrize('kwargs, message', [
    (dict(margin=0.0), 'margin must be positive, got 0.0'),
    (dict(margin=-0.1), 'margin must be positive, got -0.1'),
    (dict(chunk_size=0), 'chunk_size must be None or at least 1, got 0'),
    (dict(eps=0.0), 'eps must be positive, got 0.0'),
])
def test_bad_hyper_parameters_are_refused_at_build_time(kwargs, message):
    with pytest.raises(ValueError, match=f'ContinuousAPLoss: {message}'):
        build_ranking_loss(**kwargs)
