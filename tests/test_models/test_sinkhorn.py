import torch

from mmdense.models.utils import sinkhorn_knopp


def test_rows_sum_to_one_and_columns_are_balanced():
    torch.manual_seed(0)
    logits = torch.randn(64, 8) * 0.3
    q = sinkhorn_knopp(logits, epsilon=0.05, num_iters=50)
    assert torch.allclose(q.sum(1), torch.ones(64), atol=1e-5)
    assert torch.allclose(q.sum(0), torch.full((8, ), 64 / 8), rtol=1e-3)


def test_three_iterations_rows_exact_and_columns_close():
    torch.manual_seed(1)
    q = sinkhorn_knopp(torch.randn(32, 4), epsilon=0.05, num_iters=3)
    assert torch.allclose(q.sum(1), torch.ones(32), atol=1e-5)
    assert (q >= 0).all()


def test_stable_for_large_logits_and_keeps_preferences():
    logits = torch.tensor([[100.0, 0.0], [0.0, 100.0], [90.0, 0.0], [0.0, 90.0]])
    q = sinkhorn_knopp(logits, epsilon=0.05, num_iters=3)
    assert torch.isfinite(q).all()
    assert (q.argmax(1) == torch.tensor([0, 1, 0, 1])).all()


def test_uniform_logits_give_uniform_assignment():
    q = sinkhorn_knopp(torch.zeros(6, 3), num_iters=3)
    assert torch.allclose(q, torch.full((6, 3), 1 / 3))
