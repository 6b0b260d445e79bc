import math

import pytest
import torch

from mmdense.models.losses import SinkhornCrossEntropyLoss, multicrop_cross_entropy
from mmdense.registry import MODELS
from mmdense.utils import register_all_modules


def build_loss(**kwargs):
    register_all_modules(init_default_scope=False)
    return MODELS.build(dict(type='SinkhornCrossEntropyLoss', **kwargs))


def reference_codes(logits, epsilon, iters):
    """Plain-Python Sinkhorn-Knopp on a list of B rows of K logits: every prototype (column)
    rescaled to hold 1/K of the mass, then every sample (row) to hold 1, ``iters`` times."""
    q = [[math.exp(z / epsilon) for z in row] for row in logits]
    num_samples, num_prototypes = len(q), len(q[0])
    for _ in range(iters):
        for k in range(num_prototypes):
            column = sum(q[b][k] for b in range(num_samples))
            for b in range(num_samples):
                q[b][k] *= (1 / num_prototypes) / column
        for b in range(num_samples):
            row = sum(q[b])
            q[b] = [value / row for value in q[b]]
    return q


def reference_loss(student, teacher, student_temp, epsilon, iters, skip_same_view,
                   target_index=None):
    """Mean over (teacher view t, student view s) pairs of mean_b −Σ_k q[t, π(b), k] ·
    log softmax(z[s, b] / τ_s)_k, with explicit loops over lists."""
    codes = [reference_codes(view, epsilon, iters) for view in teacher]
    num_samples = len(student[0])
    order = target_index or list(range(num_samples))
    pair_losses = []
    for t in range(len(teacher)):
        for s in range(len(student)):
            if skip_same_view and s == t:
                continue
            total = 0.0
            for b in range(num_samples):
                scaled = [z / student_temp for z in student[s][b]]
                log_norm = math.log(sum(math.exp(z) for z in scaled))
                total -= sum(q * (z - log_norm) for q, z in zip(codes[t][order[b]], scaled))
            pair_losses.append(total / num_samples)
    return sum(pair_losses) / len(pair_losses)


def test_codes_match_hand_computed_sinkhorn_and_are_balanced():
    logits = [[0.3, -0.2, 0.1], [0.0, 0.4, -0.1], [-0.3, 0.2, 0.5], [0.1, 0.1, -0.4]]
    loss = build_loss(sinkhorn_epsilon=0.5, sinkhorn_iters=4)
    codes = loss.codes(torch.tensor(logits))
    torch.testing.assert_close(codes, torch.tensor(reference_codes(logits, 0.5, 4)))
    torch.testing.assert_close(codes.sum(1), torch.ones(4))
    # After the last row step the columns are balanced only approximately: B/K each.
    torch.testing.assert_close(codes.sum(0), torch.full((3, ), 4 / 3), atol=0.02, rtol=0)


def test_dense_codes_treat_every_pixel_as_a_sample():
    gen = torch.Generator().manual_seed(0)
    maps = torch.randn(2, 5, 3, 4, generator=gen)  # (B, K, h, w)
    loss = build_loss()
    pixels = maps.permute(0, 2, 3, 1).reshape(-1, 5)  # (B·h·w, K)
    expected = loss.codes(pixels).view(2, 3, 4, 5).permute(0, 3, 1, 2)
    torch.testing.assert_close(loss.codes(maps, dim=1), expected)
    torch.testing.assert_close(loss.log_probs(maps * 3, dim=1),
                               torch.log_softmax(maps * 3 / 0.1, dim=1))


@pytest.mark.parametrize('skip_same_view', [True, False])
@pytest.mark.parametrize('target_index', [None, [2, 0, 1]])
def test_multi_crop_loss_matches_explicit_loops(skip_same_view, target_index):
    gen = torch.Generator().manual_seed(1)
    student = torch.randn(3, 3, 4, generator=gen)  # (V_s, B, K)
    teacher = torch.randn(2, 3, 4, generator=gen)  # (V_t, B, K)
    loss = build_loss(student_temp=0.2, sinkhorn_epsilon=0.3, sinkhorn_iters=2)
    index = None if target_index is None else torch.tensor(target_index)
    got = loss(student, teacher, skip_same_view=skip_same_view, target_index=index)
    want = reference_loss(student.tolist(), teacher.tolist(), 0.2, 0.3, 2, skip_same_view,
                          target_index)
    assert got.item() == pytest.approx(want, rel=1e-5)
    # The module is the functional core on its codes.
    codes = torch.stack([loss.codes(view) for view in teacher])
    codes = codes if index is None else codes[:, index]
    core = multicrop_cross_entropy(student, codes, 0.2, skip_same_view)
    assert torch.equal(got, core)


def test_gradient_reaches_the_student_only_as_softmax_minus_codes():
    # One view pair: dL/dz_s[b] = (softmax(z_s[b]/τ_s) − q[b]) / (τ_s · B); no teacher grad.
    gen = torch.Generator().manual_seed(2)
    student = torch.randn(1, 4, 6, generator=gen, requires_grad=True)
    teacher = torch.randn(1, 4, 6, generator=gen, requires_grad=True)
    loss = build_loss(student_temp=0.5)
    value = loss(student, teacher, skip_same_view=False)
    grad_student, grad_teacher = torch.autograd.grad(value, (student, teacher),
                                                     allow_unused=True)
    expected = (torch.softmax(student.detach() / 0.5, -1) - loss.codes(teacher)) / (0.5 * 4)
    torch.testing.assert_close(grad_student, expected)
    assert grad_teacher is None


def test_defaults_are_the_cotap_values():
    loss = build_loss()
    assert isinstance(loss, SinkhornCrossEntropyLoss)
    assert (loss.student_temp, loss.sinkhorn_epsilon, loss.sinkhorn_iters) == (0.1, 0.05, 3)


@pytest.mark.parametrize('kwargs, message', [
    (dict(student_temp=0.0), 'student_temp must be positive, got 0.0'),
    (dict(sinkhorn_epsilon=-0.05), 'sinkhorn_epsilon must be positive, got -0.05'),
    (dict(sinkhorn_iters=0), 'sinkhorn_iters must be at least 1, got 0'),
])
def test_bad_hyper_parameters_are_refused_at_build_time(kwargs, message):
    with pytest.raises(ValueError, match=f'SinkhornCrossEntropyLoss: {message}'):
        build_loss(**kwargs)
