import math

import torch

from mmdense.models.losses import DINOLoss, multicrop_cross_entropy


def test_multicrop_cross_entropy_matches_hand_computation():
    # 2 teacher (global) views, 3 student views, batch 1, K = 2.
    student = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[2.0, 0.0]]])
    teacher_probs = torch.tensor([[[0.75, 0.25]], [[0.5, 0.5]]])
    tau = 0.5

    def ce(q, z):
        logits = [zi / tau for zi in z]
        lse = math.log(sum(math.exp(v) for v in logits))
        return -sum(qi * (li - lse) for qi, li in zip(q, logits))

    q, z = teacher_probs[:, 0].tolist(), student[:, 0].tolist()
    pairs = [(0, 1), (0, 2), (1, 0), (1, 2)]  # (teacher view, student view), same view skipped
    expected = sum(ce(q[t], z[s]) for t, s in pairs) / len(pairs)
    loss = multicrop_cross_entropy(student, teacher_probs, tau)
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)


def test_multicrop_cross_entropy_averages_over_batch():
    torch.manual_seed(0)
    student = torch.randn(4, 3, 5)
    teacher = torch.softmax(torch.randn(2, 3, 5), -1)
    per_sample = [multicrop_cross_entropy(student[:, i:i + 1], teacher[:, i:i + 1], 0.1)
                  for i in range(3)]
    batch = multicrop_cross_entropy(student, teacher, 0.1)
    assert torch.allclose(batch, torch.stack(per_sample).mean(), atol=1e-6)


def test_dino_loss_centres_sharpens_and_updates_centre():
    loss_fn = DINOLoss(out_channels=3, student_temp=0.1, center_momentum=0.9)
    loss_fn.center.fill_(0.5)
    teacher = torch.tensor([[[1.0, 2.0, 3.0]], [[3.0, 0.0, 0.0]]])
    student = torch.randn(3, 1, 3, requires_grad=True)

    expected_targets = torch.softmax((teacher - 0.5) / 0.04, dim=-1)
    expected = multicrop_cross_entropy(student, expected_targets, 0.1)
    loss = loss_fn(student, teacher, teacher_temp=0.04)
    assert torch.allclose(loss, expected)

    batch_mean = teacher.reshape(-1, 3).mean(0)
    assert torch.allclose(loss_fn.center[0], 0.9 * 0.5 + 0.1 * batch_mean)

    loss.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()


def test_dino_loss_is_minimal_when_student_matches_confident_teacher():
    loss_fn = DINOLoss(out_channels=4)
    teacher = torch.tensor([[[10.0, 0, 0, 0]], [[10.0, 0, 0, 0]]])
    matching = torch.tensor([[[5.0, 0, 0, 0]]]).repeat(3, 1, 1)
    wrong = torch.tensor([[[0.0, 5.0, 0, 0]]]).repeat(3, 1, 1)
    assert loss_fn(matching, teacher, 0.04) < 1e-3
    assert loss_fn(wrong, teacher, 0.04) > 10
