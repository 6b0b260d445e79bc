"""Run a computation on 2 CPU processes (gloo), each on its share of a batch."""
import datetime
import os.path as osp

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(rank, world_size, init_file, out_dir, compute, batch_size):
    # ranks that disagree on their collectives fail after the timeout instead of hanging
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                            world_size=world_size, timeout=datetime.timedelta(seconds=120))
    try:
        torch.set_num_threads(1)
        per_rank = batch_size // world_size
        result = compute(slice(rank * per_rank, (rank + 1) * per_rank))
        torch.save(result, osp.join(out_dir, f'rank{rank}.pth'))
    finally:
        dist.destroy_process_group()


def run_on_ranks(compute, batch_size, tmp_dir, world_size=2) -> list:
    """``compute(rows)`` on ``world_size`` processes, rank r taking the r-th equal slice of the
    batch; returns each rank's result (``compute`` must be a module-level function)."""
    mp.spawn(_worker, args=(world_size, str(tmp_dir / 'init'), str(tmp_dir), compute,
                            batch_size), nprocs=world_size, join=True)
    return [torch.load(tmp_dir / f'rank{r}.pth') for r in range(world_size)]


def run_with_reference(compute, batch_size, tmp_dir, world_size=2):
    """``(ranks, single)``: :func:`run_on_ranks`, and ``compute`` on the whole batch in this
    process with one thread, as each rank runs."""
    ranks = run_on_ranks(compute, batch_size, tmp_dir, world_size)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return ranks, compute(slice(None))
    finally:
        torch.set_num_threads(previous)


def assert_averaged_gradients_match(rank_grads, single_grads, tolerance=1e-5, floor=1e-8):
    """The mean over ranks of every gradient (what DDP applies) equals the single-process one
    within ``tolerance`` of its largest entry (at least ``floor``)."""
    assert single_grads and all(set(g) == set(single_grads) for g in rank_grads)
    for name, grad in single_grads.items():
        averaged = sum(g[name] for g in rank_grads) / len(rank_grads)
        error = (averaged - grad).abs().max() / grad.abs().max().clamp(min=floor)
        assert error < tolerance, (name, float(error))
