"""One command that checks every algorithm trains, resumes and transfers on this machine's GPU.

    python tools/analysis_tools/gpu_check.py [--device cuda] [--data-root data/toy_scenes]
        [--algorithms DINO SlotCon ...] [--batch-size N] [--steps 2] [--work-dir DIR]
        [--out result.json] [--tiny]

For each algorithm's *recipe* config (the COCO config, at its crop sizes; ``--batch-size``
images per step, default 16) on the toy scenes (``make toy-data`` writes them), one column each:

  fp16           ``--steps`` training steps under ``AmpOptimWrapper`` (float16 + loss scaling)
  bf16           the same under bfloat16 autocast
  channels_last  fp16 steps with model and inputs in channels_last (ResNet recipes)
  ddp_syncbn     BatchNorm converted to ``SyncBatchNorm`` and the model wrapped in mmengine's
                 ``MMDistributedDataParallel`` in a 1-process NCCL group, as ``sync_bn='torch'``
                 under torchrun does
  resume         an MMEngine Runner trains 3 iterations (checkpoint at 2); a second Runner
                 resumes from iteration 2: its iteration-3 losses must be bit-identical
  export         the transferred branch of the resumed checkpoint is exported and
                 ``check_transfer`` confirms that a downstream backbone loads every tensor

and prints a table (algorithm x check -> ok / error / n/a) and exits 1 on any error. A step is
ok when its losses are finite and the EMA teacher moved. It needs nothing but this repository,
its installed requirements and the toy data; on one H100 it takes a few minutes.

``--tiny`` (with ``--device cpu``) is a dry run of the same code on the CPU: each algorithm's
toy config shrunk by its record's ``Tiny`` cfg-options (the tests' tiny model; ViTs 4 blocks deep
here, one per level of the export check's pyramid) at batch 2. fp16 and SyncBN need CUDA and
report n/a there; DDP runs in a gloo group. ``tests/test_tools/test_gpu_check.py`` runs it, so
the script cannot rot between GPU runs.

The algorithms, their recipe and toy configs and the tiny edits are the method records'
(``configs/<method>/metafile.yml``: ``Recipe Config``, ``Toy Config``, ``Tiny``).
"""
import argparse
import contextlib
import copy
import json
import math
import os
import os.path as osp
import socket
import sys
import tempfile
import time
import traceback
from itertools import islice

import torch
from mmengine.hooks import Hook

from mmdense.utils.method_records import apply_options, load_records

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

RECIPES = load_records(REPO_ROOT)  # algorithm -> its method record
CHECKS = ('fp16', 'bf16', 'channels_last', 'ddp_syncbn', 'resume', 'export')
# downstream config that check_transfer builds for an exported backbone, by (kind, depth)
DOWNSTREAM = {
    ('vit', None): 'configs/benchmarks/mmdetection/coco/mask-rcnn_vit-s16_fpn_1x_coco.py',
    ('resnet', 50): 'configs/benchmarks/mmdetection/coco/mask-rcnn_r50-syncbn_fpn_ms-1x_coco.py',
    ('resnet', 18): 'configs/benchmarks/mmdetection/toy/mask-rcnn_r18_fpn_toy.py',
}


class NotApplicable(Exception):
    """The check does not apply to this algorithm or device (reported as n/a)."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--data-root', default='data/toy_scenes',
                        help='toy scene set (make toy-data)')
    parser.add_argument('--algorithms', nargs='+', choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument('--checks', nargs='+', choices=CHECKS, default=list(CHECKS))
    parser.add_argument('--batch-size', type=int, help='images per step (default: 16, 2 with '
                        '--tiny)')
    parser.add_argument('--steps', type=int, default=2, help='training steps per step check')
    parser.add_argument('--work-dir', help='checkpoints and exports (default: a temporary dir)')
    parser.add_argument('--out', help='write the table as JSON here')
    parser.add_argument('--tiny', action='store_true',
                        help="each algorithm's toy config instead of its recipe (CPU dry run)")
    args = parser.parse_args(argv)
    if args.batch_size is None:
        args.batch_size = 2 if args.tiny else 16
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        parser.error('--device cuda, but torch.cuda.is_available() is False (torch '
                     f'{torch.__version__}); use --device cpu --tiny for the CPU dry run')
    if not osp.isfile(osp.join(args.data_root, 'meta', 'train.txt')):
        parser.error(f'{args.data_root}/meta/train.txt not found: write the toy scenes first '
                     '(make toy-data, or tools/misc/make_toy_scenes.py --out DATA_ROOT)')
    return args


# ------------------------------------------------------------------------------------ configs


def check_config(algorithm: str, args, work_dir: str):
    """The algorithm's recipe (or toy) config on the toy scenes, at ``args.batch_size``."""
    from mmengine.config import Config

    from mmdense.datasets.neighbour_pairs import write_ring_neighbours
    record = RECIPES[algorithm]
    cfg = Config.fromfile(osp.join(REPO_ROOT, record.toy_config if args.tiny else
                                   record.recipe_config))

    def ring_neighbours():  # CoTAP's pairs: which images pair does not matter for these checks
        return write_ring_neighbours(args.data_root, osp.join(work_dir, 'neighbours.json'))

    if args.tiny:
        apply_options(cfg, record.tiny_options(dict(data_root=lambda: args.data_root,
                                                    ring_neighbours=ring_neighbours)))
        if record.backbone_family == 'vit':
            cfg.model.backbone.arch.num_layers = PYRAMID_LEVELS
    loader = cfg.train_dataloader
    loader.update(batch_size=args.batch_size, persistent_workers=False,
                  num_workers=0 if args.device == 'cpu' else min(4, os.cpu_count() or 1))
    dataset = loader.dataset
    if dataset.type == 'NeighbourPairDataset':
        dataset.pop('data_root', None)
        dataset.neighbours_file = ring_neighbours()
        dataset = dataset.dataset
    dataset.pop('data_prefix', None)
    dataset.update(data_root=args.data_root, ann_file='meta/train.txt')
    if 'backbone_checkpoint' in cfg.model:  # CoTAP starts from DINO weights users download
        cfg.model.backbone_checkpoint = None
    cfg.custom_hooks = [h for h in cfg.get('custom_hooks', []) if h.type != 'DenseEvalHook']
    if args.device == 'cpu' and cfg.optim_wrapper.get('type') == 'AmpOptimWrapper':
        cfg.optim_wrapper.type = 'OptimWrapper'  # mmengine's AMP wrapper needs an accelerator
        cfg.optim_wrapper.pop('loss_scale', None)
    return cfg


def with_precision(optim_wrapper_cfg, precision: str, device: str):
    """The config's optimizer wrapper under fp16 (with loss scaling) or bf16 autocast."""
    cfg = copy.deepcopy(optim_wrapper_cfg)
    cfg.pop('loss_scale', None)
    if device == 'cpu':
        if precision == 'float16':
            raise NotApplicable('fp16 autocast needs CUDA')
        cfg.update(type='AutocastOptimWrapper', dtype=precision, device_type='cpu')
    else:
        cfg.update(type='AmpOptimWrapper', dtype=precision)
        if precision == 'float16':
            cfg.loss_scale = 'dynamic'
    return cfg


# --tiny ViTs: one block per level of the downstream pyramid the export check builds
PYRAMID_LEVELS = 4


def is_resnet(cfg) -> bool:
    return 'ResNet' in cfg.model.backbone.type


# --------------------------------------------------------------------------------- step checks
def fetch_batches(cfg, num: int):
    from mmengine.runner import Runner
    return list(islice(Runner.build_dataloader(copy.deepcopy(cfg.train_dataloader)), num))


def build_model(cfg, device: str, schedule_length: int = 100):
    from mmdense.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(cfg.model))
    model.init_weights()
    model.set_teacher_schedule(schedule_length)  # the EMA momentum schedule's length in steps
    return model.to(device).train()


def teacher_state(model):
    teacher = getattr(model, 'teacher', None)
    if teacher is None:
        return None
    return [p.detach().float().clone() for p in teacher.module.parameters()]


def run_steps(model, optim_wrapper, batches, channels_last: bool = False) -> dict:
    """Train on ``batches``; returns the last step's losses. Raises if a loss is not finite or
    the EMA teacher did not move."""
    before = teacher_state(model)
    log_vars = {}
    for batch in batches:
        if channels_last:
            batch = dict(batch, inputs=[x.contiguous(memory_format=torch.channels_last)
                                        for x in batch['inputs']])
        log_vars = model.train_step(batch, optim_wrapper)
    bad = {k: v for k, v in log_vars.items() if not math.isfinite(float(v))}
    if bad:
        raise RuntimeError(f'non-finite losses {bad}')
    after = teacher_state(model if not hasattr(model, 'module') else model.module)
    if before is not None and all(torch.equal(a, b) for a, b in zip(before, after)):
        raise RuntimeError('the EMA teacher did not move')
    return {k: round(float(v), 4) for k, v in log_vars.items() if 'loss' in k}


def check_precision(cfg, batches, args, precision: str) -> str:
    from mmengine.optim import build_optim_wrapper
    model = build_model(cfg, args.device)
    wrapper = build_optim_wrapper(model, with_precision(cfg.optim_wrapper, precision,
                                                        args.device))
    return f'ok {run_steps(model, wrapper, batches)}'


def check_channels_last(cfg, batches, args) -> str:
    from mmengine.optim import build_optim_wrapper
    if not is_resnet(cfg):
        raise NotApplicable('ViT recipe')
    model = build_model(cfg, args.device).to(memory_format=torch.channels_last)
    precision = 'bfloat16' if args.device == 'cpu' else 'float16'
    wrapper = build_optim_wrapper(model, with_precision(cfg.optim_wrapper, precision,
                                                        args.device))
    return f'ok {run_steps(model, wrapper, batches, channels_last=True)}'


@contextlib.contextmanager
def single_process_group(device: str):
    """A 1-process group: NCCL on CUDA (what torchrun gives one GPU), gloo on the CPU."""
    import torch.distributed as dist
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    dist.init_process_group('nccl' if device.startswith('cuda') else 'gloo',
                            init_method=f'tcp://127.0.0.1:{port}', rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def check_ddp_syncbn(cfg, batches, args) -> str:
    import torch.nn as nn
    from mmengine.model import MMDistributedDataParallel
    from mmengine.optim import build_optim_wrapper
    on_cuda = args.device.startswith('cuda')
    with single_process_group(args.device):
        model = build_model(cfg, args.device)
        converted = 0
        if on_cuda:  # torch's SyncBatchNorm runs on accelerators only
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            converted = sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
        wrapper_cfg = cfg.get('model_wrapper_cfg') or {}
        ddp = MMDistributedDataParallel(
            module=model, device_ids=[torch.cuda.current_device()] if on_cuda else None,
            broadcast_buffers=False,
            find_unused_parameters=wrapper_cfg.get('find_unused_parameters', False))
        wrapper = build_optim_wrapper(ddp, copy.deepcopy(cfg.optim_wrapper))
        losses = run_steps(ddp, wrapper, batches)
    note = f'{converted} SyncBN' if on_cuda else 'gloo, no SyncBN on the CPU'
    return f'ok ({note}) {losses}'


# ------------------------------------------------------------------------ resume and transfer
class LossRecorder(Hook):
    """Records each training iteration's logged losses, by iteration (1-based)."""
    priority = 'LOWEST'

    def __init__(self):
        self.losses = {}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses[runner.iter + 1] = {k: float(v) for k, v in outputs.items() if 'loss' in k}


def runner_losses(cfg, work_dir: str, resume_from=None) -> dict:
    from mmengine.runner import Runner
    cfg = copy.deepcopy(cfg)
    cfg.work_dir = work_dir
    cfg.experiment_name = f'gpu_check_{osp.basename(work_dir)}_{time.time_ns()}'
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=3)
    cfg.param_scheduler = []
    cfg.randomness = dict(seed=0, deterministic=True)
    cfg.env_cfg.cudnn_benchmark = False
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.default_hooks.checkpoint = dict(type='AtomicCheckpointHook', by_epoch=False, interval=2)
    cfg.log_processor = dict(by_epoch=False, window_size=1)
    cfg.visualizer = dict(type='UniversalVisualizer', vis_backends=[dict(type='LocalVisBackend')])
    cfg.log_level = 'WARNING'
    cfg.pop('sync_bn', None)  # not distributed here
    if resume_from:
        cfg.update(resume=True, load_from=resume_from)
    runner = Runner.from_cfg(cfg)
    recorder = LossRecorder()
    runner.register_hook(recorder)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        runner.train()
    finally:
        torch.use_deterministic_algorithms(False)
    return recorder.losses


def check_resume(cfg, args, work_dir: str) -> str:
    straight = runner_losses(cfg, osp.join(work_dir, 'straight'))
    checkpoint = osp.join(work_dir, 'straight', 'iter_2.pth')
    resumed = runner_losses(cfg, osp.join(work_dir, 'resumed'), resume_from=checkpoint)
    if list(resumed) != [3]:
        raise RuntimeError(f'the resumed run trained iterations {list(resumed)}, expected [3]')
    if resumed[3] != straight[3]:
        diffs = {k: abs(resumed[3][k] - straight[3].get(k, math.nan)) for k in resumed[3]}
        raise RuntimeError(f'iteration 3 differs after resuming: |diff| {diffs}')
    return f'ok (iteration 3 bit-identical: {straight[3]})'


def check_export(cfg, args, work_dir: str, config_file: str) -> str:
    from mmdense.transfer.checkpoints import export_backbone
    checkpoint = osp.join(work_dir, 'resumed', 'iter_3.pth')
    if not osp.isfile(checkpoint):
        raise NotApplicable('needs the resume check')
    try:
        import mmdet  # noqa: F401
    except ImportError:
        raise NotApplicable('check_transfer needs mmdet (pip install -e ".[transfer]")')
    from mmengine.config import Config

    from mmdense.transfer.check import check_transfer
    out = osp.join(work_dir, 'export', 'backbone.pth')
    os.makedirs(osp.dirname(out), exist_ok=True)
    sidecar = export_backbone(checkpoint, out, 'mmdet', config=config_file)
    backbone = sidecar['backbone']
    key = (backbone['kind'], backbone.get('depth') if backbone['kind'] == 'resnet' else None)
    if key not in DOWNSTREAM:
        raise NotApplicable(f'no downstream config for a {key} backbone')
    downstream = Config.fromfile(osp.join(REPO_ROOT, DOWNSTREAM[key]))
    if args.tiny and key[0] == 'vit':  # the pyramid of the checked tiny ViT
        arch = dict(cfg.model.backbone.arch)
        downstream.model.backbone.update(arch=arch, out_indices=tuple(range(PYRAMID_LEVELS)))
        downstream.model.neck.in_channels = [arch['embed_dims']] * PYRAMID_LEVELS
    report = check_transfer(downstream, out)
    if not report.ok:
        raise RuntimeError(report.format().splitlines()[-1])
    return f"ok ({sidecar['branch']} of {sidecar['num_tensors']} tensors into {DOWNSTREAM[key]})"


# --------------------------------------------------------------------------------------- main
def check_algorithm(algorithm: str, args, work_dir: str) -> dict:
    try:
        cfg = check_config(algorithm, args, work_dir)
        config_file = osp.join(work_dir, 'config.py')
        cfg.dump(config_file)
        batches = fetch_batches(cfg, args.steps)
    except Exception as e:  # noqa: BLE001  no check can run: every column reports it
        failure = dict(status='error', detail=f'config/data: {type(e).__name__}: {e}',
                       traceback=traceback.format_exc(), seconds=0.0)
        print(f'[{algorithm}] {failure["detail"]}', flush=True)
        return {name: failure for name in args.checks}
    checks = dict(
        fp16=lambda: check_precision(cfg, batches, args, 'float16'),
        bf16=lambda: check_precision(cfg, batches, args, 'bfloat16'),
        channels_last=lambda: check_channels_last(cfg, batches, args),
        ddp_syncbn=lambda: check_ddp_syncbn(cfg, batches, args),
        resume=lambda: check_resume(cfg, args, work_dir),
        export=lambda: check_export(cfg, args, work_dir, config_file))
    row = {}
    for name in args.checks:
        start = time.perf_counter()
        try:
            row[name] = dict(status='ok', detail=checks[name]())
        except NotApplicable as e:
            row[name] = dict(status='n/a', detail=str(e))
        except Exception as e:  # noqa: BLE001  a failing check is this tool's finding
            row[name] = dict(status='error', detail=f'{type(e).__name__}: {e}',
                             traceback=traceback.format_exc())
        row[name]['seconds'] = round(time.perf_counter() - start, 1)
        print(f'[{algorithm}] {name}: {row[name]["status"]} ({row[name]["seconds"]} s) '
              f'{row[name]["detail"]}', flush=True)
        if args.device.startswith('cuda'):
            torch.cuda.empty_cache()
    return row


def format_table(results: dict, checks) -> str:
    lines = ['| algorithm | ' + ' | '.join(checks) + ' |',
             '|---' * (len(checks) + 1) + '|']
    for algorithm, row in results.items():
        lines.append(f'| {algorithm} | ' + ' | '.join(row[c]['status'] for c in checks) + ' |')
    return '\n'.join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')  # deterministic cuBLAS (resume)
    import mmdense
    from mmdense.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    device = torch.cuda.get_device_name() if args.device.startswith('cuda') else 'CPU'
    print(f'mmdense {mmdense.__version__} | torch {torch.__version__} | {device} | '
          f'{"toy" if args.tiny else "recipe"} configs, batch {args.batch_size}', flush=True)
    work_root = args.work_dir or tempfile.mkdtemp(prefix='mmdense_gpu_check_')
    start = time.perf_counter()
    results = {}
    for algorithm in args.algorithms:
        work_dir = osp.join(work_root, algorithm)
        os.makedirs(work_dir, exist_ok=True)
        results[algorithm] = check_algorithm(algorithm, args, work_dir)
    table = format_table(results, args.checks)
    print(f'\n{table}\n\n{time.perf_counter() - start:.0f} s in all; work dir {work_root}')
    errors = [(a, c) for a, row in results.items() for c in args.checks
              if row[c]['status'] == 'error']
    for algorithm, check in errors:
        print(f'\n--- {algorithm} / {check}:\n{results[algorithm][check]["traceback"]}')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(device=device, torch=torch.__version__, tiny=args.tiny,
                           batch_size=args.batch_size, results=results), f, indent=2)
    return 1 if errors else 0


if __name__ == '__main__':
    sys.exit(main())
