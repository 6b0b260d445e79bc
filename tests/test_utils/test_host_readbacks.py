"""mmdense.utils.count_host_readbacks counts every host synchronisation of a block by call site:
value reads, data-dependent shapes (also those C++ code asks for, and those of the backward
pass) and, on CUDA tensors, blocking copies; and each algorithm's training step pays the ones
listed in benchmarks/README.md (host-sync section), no more."""
import inspect
from collections import Counter
from itertools import islice

import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.runner import Runner, set_random_seed
from torch._subclasses.fake_tensor import FakeTensorMode

from algorithm_table import ALGORITHMS, tiny_config
from mmdense.registry import MODELS
from mmdense.utils import count_host_readbacks, register_all_modules

THIS_FILE = 'test_host_readbacks.py'


def by_what(counts):
    totals = Counter()
    for site, n in counts.items():
        totals[site.what] += n
    return dict(totals)


def next_line():
    """The line number of the caller's next line."""
    return inspect.currentframe().f_back.f_lineno + 1


def test_every_kind_of_host_sync_is_counted_where_it_is_asked_for():
    x = torch.arange(6.0)
    mask = x > 2
    with count_host_readbacks() as counts:
        x.sum().item()
        bool(x.max() > 2), int(x[1]), float(x[2]), f'{x[3]:.1f}'
        x[torch.tensor(1)]  # indexing by a 0-d tensor reads the index
        torch.equal(x, x)
        x.tolist(), x.numpy()
        x.nonzero(), torch.where(mask)
        x[mask]
        y = x.clone()
        y[mask] = 0.0
        x.masked_select(mask)
        torch.unique(x)
        torch.bincount(x.long(), minlength=8)
        torch.repeat_interleave(x, torch.ones(6, dtype=torch.long))
        # none of these waits for the device:
        x[torch.tensor([0, 2])], x.index_select(0, torch.tensor([1])), x.add_(1).sub_(1)
        torch.nonzero_static(mask, size=3)
        torch.repeat_interleave(x, torch.ones(6, dtype=torch.long), output_size=6)
        torch.where(mask, x, 0.0), x.cpu()
    assert by_what(counts) == {
        'value': 6, 'equal': 1, 'tolist': 1, 'numpy': 1, 'nonzero': 2, 'index by mask': 1,
        'index_put by mask': 1, 'masked_select': 1, 'unique': 1, 'bincount': 1,
        'repeat_interleave': 1}
    function = inspect.currentframe().f_code.co_name
    assert all(site.file.endswith(THIS_FILE) and site.function == function for site in counts)
    with count_host_readbacks() as counts:
        line = next_line()
        x.sum().item()
    (site, ) = counts
    assert (site.what, site.line) == ('value', line)
    assert str(site).startswith('value at ') and str(site).endswith(f':{line} ({site.function})')


def test_the_gradient_of_a_mask_index_is_counted_at_the_backward_call():
    x = torch.randn(5, requires_grad=True)
    mask = torch.tensor([True, False, True, True, False])
    loss = x[mask].sum()
    with count_host_readbacks() as counts:
        line = next_line()
        loss.backward()
    assert [(site.what, site.line) for site in counts] == [('index_put by mask', line)]
    assert x.grad.tolist() == [1.0, 0.0, 1.0, 1.0, 0.0]


def test_on_cuda_only_cuda_tensors_count_and_blocking_copies_too():
    host = torch.arange(4.0)
    with count_host_readbacks('cuda') as counts:
        host.sum().item(), host.tolist(), host[host > 1]  # host tensors: no device to wait for
    assert not counts
    with FakeTensorMode(allow_non_fake_inputs=True):
        with count_host_readbacks('cuda') as counts:
            device = host.to('cuda')  # blocking copy
            host.to('cuda', non_blocking=True)  # queued: no wait
            torch.tensor([1.0, 2.0], device='cuda')  # a list copied to the device
            torch.full((2, ), 3.0, device='cuda'), torch.arange(3, device='cuda')  # filled there
            device.cpu()
            device.to('cpu', non_blocking=True)  # queued (the caller synchronises before use)
            device.nonzero_static(size=2)
            try:
                device.sum().item()  # counted, then the fake tensor has no value to give
            except Exception:
                pass
    assert by_what(counts) == {'copy to device': 2, 'copy to host': 1, 'value': 1}, counts


def test_methods_are_restored_and_optimizer_step_counters_are_not_counted():
    from torch._subclasses.fake_tensor import FakeTensor
    originals = dict(vars(torch.Tensor)), dict(vars(FakeTensor))
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([weight], lr=0.1, foreach=False)
    weight.grad = torch.ones(3)
    with count_host_readbacks() as counts:
        optimizer.step()  # reads its host-side step counter with .item()
        with pytest.raises(RuntimeError, match='nested'):
            with count_host_readbacks():
                pass
    assert sum(counts.values()) == 0, counts
    assert (dict(vars(torch.Tensor)), dict(vars(FakeTensor))) == originals  # nothing left behind


def test_sites_are_the_same_under_the_op_counter():
    """``benchmark.py --count-readbacks --count-ops`` stacks the op counter's dispatch mode on
    this one: it only passes operators on, so sites and the optimizer's exception hold."""
    from mmdense.utils.op_counter import count_aten_ops
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([weight], lr=0.1, foreach=False)
    weight.grad = torch.ones(3)
    with count_host_readbacks() as counts, count_aten_ops():
        optimizer.step()
        line = next_line()
        weight.sum().item()
    assert [(site.what, site.file.endswith(THIS_FILE), site.line) for site in counts] == [
        ('value', True, line)], counts


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


# ------------------------------------------------------------------- training steps
# Host syncs of one training step (forward, losses, backward, optimizer step, EMA update) in
# mmdense's code, counted on the CPU: {(what, file, function): n}; benchmarks/README.md lists
# them. A method without an entry must have none; outside mmdense, only MMEngine's read of the
# gradient norm it clips to (and logs) is allowed.
MMDENSE_SYNCS_PER_STEP = {
    # the numbers of kept slots of each view pair (the predictor's BatchNorm normalises over
    # exactly those slots: their number is the shape of its input)
    'SlotCon': {('tolist', 'mmdense/models/losses/slot_contrast_loss.py', 'slot_contrast_loss'):
                2},
}


@pytest.mark.usefixtures('one_thread')
@pytest.mark.parametrize('algorithm', list(ALGORITHMS))
def test_a_training_step_pays_the_listed_host_syncs(algorithm, toy_root):
    register_all_modules(init_default_scope=False)
    set_random_seed(0)  # the model and the loader's draws
    cfg = tiny_config(algorithm, toy_root, max_iters=10)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.set_teacher_schedule(cfg.train_cfg.max_iters)
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    first, second = islice(Runner.build_dataloader(cfg.train_dataloader), 2)
    model.train_step(first, optim_wrapper)  # the teacher's first update copies the student
    with count_host_readbacks() as counts:
        model.train_step(second, optim_wrapper)
    places = Counter({(site.what, site.file, site.function): n for site, n in counts.items()})
    expected = dict(MMDENSE_SYNCS_PER_STEP.get(algorithm, {}))
    clip_grad = cfg.optim_wrapper.get('clip_grad') or {}
    if clip_grad and clip_grad.get('type', 'norm') == 'norm':  # MMEngine logs the total norm
        expected['value', 'mmengine/optim/optimizer/optimizer_wrapper.py', '_clip_grad'] = 1
    assert dict(places) == expected, '\n'.join(f'{n} x {site}' for site, n in counts.items())
