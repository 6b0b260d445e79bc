import math

import pytest
import torch

from mmdense.models.losses import iBOTPatchLoss

pytestmark = pytest.mark.usefixtures('one_thread')


def test_patch_loss_and_centre_match_a_hand_computation_with_loops():
    """V = 2 views, B = 3 images, N = 4 patches, K = 5; image (1, 1) has no masked patch."""
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g)
    masks = torch.rand(2, 3, 4, generator=g) < 0.5
    masks[0, 0] = torch.tensor([True, False, True, False])
    masks[1, 1] = False
    loss_module = iBOTPatchLoss(out_channels=5, student_temp=0.1, center_momentum=0.9)
    loss_module.center.fill_(0.2)
    loss = loss_module(student, teacher, masks.view(2, 3, 2, 2), teacher_temp=0.05)

    total = 0.0
    for v in range(2):
        for b in range(3):
            image_sum, masked = 0.0, 0
            for n in range(4):
                if not masks[v, b, n]:
                    continue
                exp_t = [math.exp((teacher[v, b, n, k].item() - 0.2) / 0.05) for k in range(5)]
                exp_s = [math.exp(student[v, b, n, k].item() / 0.1) for k in range(5)]
                for k in range(5):
                    image_sum -= exp_t[k] / sum(exp_t) * math.log(exp_s[k] / sum(exp_s))
                masked += 1
            total += image_sum / max(masked, 1)
    assert math.isclose(loss.item(), total / 6, rel_tol=1e-5)
    for k in range(5):  # every patch of every view and image, masked or not
        mean = sum(teacher[v, b, n, k].item() for v in range(2) for b in range(3)
                   for n in range(4)) / 24
        assert math.isclose(loss_module.center[0, k].item(), 0.9 * 0.2 + 0.1 * mean,
                            rel_tol=1e-5)


def test_gradient_matches_finite_differences_and_reaches_masked_patches_only():
    g = torch.Generator().manual_seed(1)
    student = torch.randn(2, 2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 2, 3, 4, generator=g, dtype=torch.float64)
    masks = torch.tensor([[[True, False, True], [False, False, True]],
                          [[False, True, False], [True, True, True]]])
    loss_module = iBOTPatchLoss(out_channels=4).double()

    def loss_at(logits):
        loss_module.center.zero_()  # the call updates the centre: the same targets every time
        return loss_module(logits, teacher, masks, teacher_temp=0.07)

    assert torch.autograd.gradcheck(loss_at, (student, ), eps=1e-6, atol=1e-7)
    loss_at(student).backward()
    assert (student.grad[~masks] == 0).all() and (student.grad[masks].abs().sum(-1) > 0).all()


def test_shapes_are_checked():
    loss_module = iBOTPatchLoss(out_channels=4)
    with pytest.raises(ValueError, match=r'masks \(V, B, N\), got \(2, 2, 5\)'):
        loss_module(torch.zeros(2, 2, 3, 4), torch.zeros(2, 2, 3, 4),
                    torch.zeros(2, 2, 5, dtype=torch.bool), 0.07)
