"""Training-step cost of a pretraining config: s/iter, images/s, peak memory, FLOPs.

    python tools/analysis_tools/benchmark.py CONFIG [--iters 10] [--warmup 2] [--batch-size B]
        [--amp] [--compile] [--channels-last] [--threads N] [--count-readbacks] [--count-ops]
        [--out result.json] [--views global_crops=2x224 local_crops=10x96 ...]
        [--cfg-options k=v ...]

Batches come from the config's own training pipeline, all fetched before timing (the loader's
workers are shut down first, so neither data loading nor idle workers are measured). Each timed
iteration is a full ``train_step``: forward, losses, backward, optimizer step and EMA-teacher
update; the reported time is the median over ``--iters``. FLOPs are counted once with torch's
``FlopCounterMode`` over one such step (forward + backward) and reported per image. Images are
counted per data sample, two for a CoTAP pair (a sample holding an image and its neighbour).
``--count-readbacks`` runs one more step counting its host synchronisations by call site
(``mmdense.utils.count_host_readbacks``): values read into Python (``.item()``, ``.tolist()``,
``bool(t)``, ...) and operators whose output size depends on the data (``nonzero``,
boolean-mask indexing and its gradient, ``masked_select``, ``unique``, ``bincount``,
``repeat_interleave`` with tensor repeats), forward, backward, optimizer and EMA update alike;
on CUDA, blocking copies between host and device too. Each makes a GPU step wait until the
device has finished everything queued before. With ``--count-ops`` it is the same step, counted
both ways.
``--count-ops`` runs one more step counting the aten operators it dispatches (forward,
backward, optimizer and EMA update; metadata-only views excluded): a CPU proxy for the kernel
launches that bound a small GPU step; the JSON lists the most frequent operators and the call
sites that dispatch the most (``aten_ops_by_site``: the innermost function outside torch's
internals; the backward pass shows as ``torch/autograd``, the optimizer as ``torch/optim``).
``--views NAME=NUMxSIZE`` sets the number and size of the crops of the multi-crop transform
that has ``NAME`` (``global_crops``, ``local_crops``, ``query_crops``), wherever the config's
dataset (or the dataset a wrapper holds) keeps its pipeline: how ``benchmark_table.py
--recipe-crops`` runs the step-cost configs at their recipes' views.
A config of a pair dataset (CoTAP) that sets ``ring_neighbours = k`` gets its
``neighbours_file`` written first: image i paired with images i+1, ..., i+k (mod N) of its
image list, since the pairing does not change the cost of a step.
"""
import argparse
import json
import os
import os.path as osp
import resource
import statistics
import time
from collections import Counter
from contextlib import ExitStack

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import MessageHub
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from torch.utils.flop_counter import FlopCounterMode

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('--iters', type=int, default=10, help='timed iterations')
    parser.add_argument('--warmup', type=int, default=2, help='untimed iterations first')
    parser.add_argument('--batch-size', type=int, help='override the per-device batch size')
    parser.add_argument('--amp', action='store_true', help='mixed precision: AmpOptimWrapper '
                        'fp16 on CUDA, AutocastOptimWrapper bf16 on CPU')
    parser.add_argument('--compile', action='store_true',
                        help="torch.compile the student backbone's forward, in place")
    parser.add_argument('--channels-last', action='store_true',
                        help='channels_last memory format for model and inputs')
    parser.add_argument('--threads', type=int, help='torch.set_num_threads (default: torch\'s '
                        'own, the number of physical cores or OMP_NUM_THREADS)')
    parser.add_argument('--count-readbacks', action='store_true',
                        help='count the host synchronisations of one more step, by call site')
    parser.add_argument('--count-ops', action='store_true',
                        help='count the aten operators of one more step (CPU proxy for GPU '
                        'kernel launches)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--out', help='write the result as JSON here')
    parser.add_argument('--views', nargs='+', default=[], metavar='NAME=NUMxSIZE',
                        help='crops of the multi-crop transform, e.g. global_crops=2x224')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args()


def set_views(cfg: Config, views) -> None:
    """Apply ``--views NAME=NUMxSIZE``: the crops ``NAME`` of the pipeline transform that has
    them get ``num=NUM, size=SIZE``. A name that no transform has is an error, naming the
    config and the crops it does have."""
    dataset = cfg.train_dataloader.dataset
    while 'pipeline' not in dataset and 'dataset' in dataset:  # wrappers (pairs, skips)
        dataset = dataset.dataset
    for view in views:
        name, _, spec = view.partition('=')
        try:
            num, size = (int(x) for x in spec.split('x'))
        except ValueError:
            raise SystemExit(f'error: --views {view!r}: expected NAME=NUMxSIZE, e.g. '
                             'global_crops=2x224')
        holders = [t for t in dataset.pipeline if isinstance(t.get(name), dict)]
        if not holders:
            have = sorted({k for t in dataset.pipeline for k, v in t.items()
                           if k.endswith('_crops') and isinstance(v, dict)})
            raise SystemExit(f'error: --views {name}: no transform of {cfg.filename} has it '
                             f'(its crops: {have})')
        holders[0][name].update(num=num, size=size)


def peak_memory_mb(device: str) -> float:
    if device.startswith('cuda'):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def images_in(batch: dict) -> int:
    """Images in a collated batch: one per data sample, or, for samples that pair an image with
    a neighbour (``num_pair_views`` views per image, CoTAP), views / views-per-image of them."""
    samples = batch['data_samples']
    views_per_image = samples[0].metainfo.get('num_pair_views')
    if views_per_image:
        return len(samples) * len(batch['inputs']) // views_per_image
    return len(samples)


def start_momentum_schedule(model: torch.nn.Module, total_steps: int) -> None:
    """Give the momentum (EMA) encoder's schedule its length outside a Runner: an mmdense
    method through ``set_teacher_schedule``, mmpretrain's baselines (BYOL, DenseCL: their
    ``CosineEMA`` reads ``max_iters`` from the current MessageHub) through the MessageHub."""
    if hasattr(model, 'set_teacher_schedule'):
        model.set_teacher_schedule(total_steps)
    else:
        MessageHub.get_current_instance().update_info('max_iters', total_steps)


def write_config_ring_neighbours(cfg: Config) -> str:
    """For a config of a pair dataset with ``ring_neighbours = k``: write its ``neighbours_file``
    (relative to the repository root) pairing image i of its image set with images i+1, ...,
    i+k (mod N), and point the config at it. Returns the file's path."""
    from mmdense.datasets.neighbour_pairs import write_ring_neighbours
    pairs = cfg.train_dataloader.dataset
    out = osp.join(REPO_ROOT, pairs.neighbours_file)
    os.makedirs(osp.dirname(out), exist_ok=True)
    pairs.neighbours_file = write_ring_neighbours(osp.join(REPO_ROOT, pairs.dataset.data_root),
                                                  out, cfg.ring_neighbours)
    return pairs.neighbours_file


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import mmdense  # noqa: F401  registers modules and applies compat fixes
    from mmdense.registry import MODELS
    from mmdense.utils import count_host_readbacks, register_all_modules
    from mmdense.utils.cli import load_config
    from mmdense.utils.op_counter import compute_ops, count_aten_ops

    register_all_modules(init_default_scope=False)
    cfg = load_config(args.config, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdense'))
    set_views(cfg, args.views)
    if cfg.get('ring_neighbours'):
        write_config_ring_neighbours(cfg)
    if args.batch_size:
        cfg.train_dataloader.batch_size = args.batch_size
    cfg.train_dataloader.update(num_workers=min(2, cfg.train_dataloader.get('num_workers', 0)),
                                persistent_workers=False)
    if args.amp:
        if args.device.startswith('cuda'):
            cfg.optim_wrapper.update(type='AmpOptimWrapper', dtype='float16')
        else:  # mmengine's AmpOptimWrapper refuses to run without an accelerator
            cfg.optim_wrapper.update(type='AutocastOptimWrapper', dtype='bfloat16',
                                     device_type='cpu')
        cfg.optim_wrapper.pop('loss_scale', None)

    counted = args.count_readbacks or args.count_ops
    total_iters = args.warmup + args.iters + 1 + counted
    model = MODELS.build(cfg.model).to(args.device)
    model.init_weights()
    start_momentum_schedule(model, 10 * total_iters)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if args.compile:
        # in place (nn.Module.compile): a torch.compile wrapper would rename the parameters
        # (``_orig_mod.``), which breaks the EMA teacher's name-by-name update
        model.backbone.compile()
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)

    loader = iter(Runner.build_dataloader(cfg.train_dataloader))
    batches = [next(loader) for _ in range(total_iters)]
    del loader  # shuts its workers down: none keeps prefetching while steps are timed
    batch_size = len(batches[0]['data_samples'])
    num_images = images_in(batches[0])

    def step(batch):
        if args.channels_last:
            batch = dict(batch, inputs=[x.contiguous(memory_format=torch.channels_last)
                                        for x in batch['inputs']])
        log_vars = model.train_step(batch, optim_wrapper)
        if args.device.startswith('cuda'):
            torch.cuda.synchronize()
        return log_vars

    times, warmup_times = [], []
    for i, batch in enumerate(batches[:args.warmup + args.iters]):
        start = time.perf_counter()
        step(batch)
        elapsed = time.perf_counter() - start
        if i < args.warmup:
            warmup_times.append(elapsed)
            print(f'warm-up {i + 1}/{args.warmup}: {elapsed:.3f} s', flush=True)
        else:
            times.append(elapsed)
            print(f'iter {i - args.warmup + 1}/{args.iters}: {elapsed:.3f} s', flush=True)
    with FlopCounterMode(display=False) as counter:
        step(batches[args.warmup + args.iters])
    flops_per_image = counter.get_total_flops() / num_images
    readbacks, all_ops, ops_by_site = None, None, Counter()
    if counted:  # one more step, counted both ways at once
        with ExitStack() as counting:
            if args.count_readbacks:  # on CUDA, only the syncs of CUDA tensors
                readbacks = counting.enter_context(count_host_readbacks(
                    'cuda' if args.device.startswith('cuda') else None))
            if args.count_ops:
                all_ops = counting.enter_context(count_aten_ops(by_site=ops_by_site))
            step(batches[-1])
    ops = None if all_ops is None else compute_ops(all_ops)

    median = statistics.median(times)
    result = dict(
        config=args.config, device=args.device, batch_size=batch_size, images_per_step=num_images,
        amp=args.amp, compile=args.compile, channels_last=args.channels_last,
        threads=torch.get_num_threads(), iters=args.iters, warmup=args.warmup,
        warmup_s_per_iter=warmup_times, median_s_per_iter=median,
        images_per_s=num_images / median,
        peak_memory_mb=peak_memory_mb(args.device),
        peak_memory_kind='max_allocated' if args.device.startswith('cuda') else 'process_rss',
        gflops_per_image=flops_per_image / 1e9,
        achieved_gflops_per_s=flops_per_image * num_images / median / 1e9)
    if readbacks is not None:
        result.update(host_readbacks_per_step=sum(readbacks.values()),
                      host_readback_sites={str(site): count
                                           for site, count in readbacks.most_common()})
    if ops is not None:
        result.update(aten_ops_per_step=sum(ops.values()),
                      aten_ops_top=dict(ops.most_common(15)),
                      aten_ops_by_site=dict(ops_by_site.most_common(25)))
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == '__main__':
    from mmdense.utils.cli import run_cli
    run_cli(main)
