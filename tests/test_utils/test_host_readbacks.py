import torch

from mmdense.utils import count_host_readbacks


def test_counts_each_readback_by_method_and_call_site():
    x = torch.arange(4.0)
    with count_host_readbacks() as counts:
        total = x.sum().item()
        values = x.tolist()
        if x.max() > 2:  # __bool__
            nonzero = x.nonzero()
        x.add_(1).sub_(1)  # stays on the device: not counted
    assert total == 6.0 and values == [0.0, 1.0, 2.0, 3.0] and len(nonzero) == 3
    by_method = {method: n for (method, _), n in counts.items()}
    assert by_method == {'item': 1, 'tolist': 1, '__bool__': 1, 'nonzero': 1}
    assert all(site.startswith(__file__ + ':') for _, site in counts)


def test_methods_are_restored_and_optimizer_step_counters_are_not_counted():
    original = torch.Tensor.item
    class_attributes = dict(vars(torch.Tensor))
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([weight], lr=0.1, foreach=False)
    weight.grad = torch.ones(3)
    with count_host_readbacks() as counts:
        optimizer.step()  # reads its host-side step counter with .item()
    assert sum(counts.values()) == 0, counts
    assert torch.Tensor.item is original
    assert dict(vars(torch.Tensor)) == class_attributes  # restored exactly, nothing left behind


def test_op_counter_counts_compute_ops_and_leaves_results_unchanged():
    from mmdense.utils.op_counter import compute_ops, count_aten_ops
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(3, 2)
    with count_aten_ops() as counts:
        y = (x @ w).relu().sum()
        y.backward()
    ops = compute_ops(counts)
    assert ops['aten.mm.default'] >= 2  # forward x @ w and backward dL/dx
    assert ops['aten.relu.default'] == 1
    assert torch.allclose(x.grad, ((x.detach() @ w) > 0).float() @ w.t())
    assert sum(ops.values()) <= sum(counts.values())
