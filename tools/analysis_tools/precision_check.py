"""How far each algorithm's training steps move from fp32 under fp16 and bf16 autocast.

    python tools/analysis_tools/precision_check.py [--device cpu|cuda] [--size toy|tiny|recipe]
        [--algorithms DINO SlotCon ...] [--precisions fp32 fp16 bf16] [--steps 5]
        [--batch-size 4] [--fp32-losses on|off|both] [--data-root data/toy_scenes]
        [--seed 0] [--out report.json]

For each algorithm: one model, its first ``--steps`` batches of the toy scenes and a reference
run of those steps in fp32. Then one run per precision (and per ``--fp32-losses`` setting), each
from a copy of the same initial state, on the same batches, with the same RNG seed before every
step (so random draws inside the step, e.g. CoTAP's negatives, are the same in every run):

  fp32  no autocast (a second fp32 run: its error against the reference is 0 when the runs are
        reproducible, which is what makes the other rows comparable)
  fp16  the data preprocessor and forward (losses included) under ``torch.autocast(dtype=
        float16)`` with a dynamic loss scale (``torch.amp.GradScaler``, the defaults of
        mmengine's ``AmpOptimWrapper``), as the fp16 recipes train; a step whose scaled
        gradient overflows is run again from the same state at half the scale (training would
        skip that batch while the scale backs off, and the runs would no longer make the same
        updates)
  bf16  the same under bfloat16, without a loss scale (``AutocastOptimWrapper``, the fast path)

``--fp32-losses off`` runs the losses and temperature-scaled logits in the autocast precision
(``mmdense.models.losses.precision.fp32_forward_enabled(False)``: how the code ran before they
were made fp32); ``both`` runs each low precision both ways.

Reported per run: every loss term at every step, and the gradient of the first step (same state,
same batch) against the reference: relative L2 error ``‖g − g₃₂‖ / ‖g₃₂‖`` and cosine
similarity, over all parameters that receive a gradient (fp16 gradients are unscaled first).
The table prints the total loss at the first and last step, its difference from fp32 at the last
step, and the gradient error; ``--out`` writes everything as JSON.

Configs (``--size``): ``toy`` the shipped toy config of each algorithm (ViT-S/16, ResNet-18);
``tiny`` those configs shrunk as ``gpu_check.py --tiny`` shrinks them (each method record's
``Tiny`` cfg-options: the tests' tiny models, ViTs 4 blocks deep); ``recipe``
the COCO recipe (a GPU's job). Data and batch as ``gpu_check.py`` builds them. On the CPU, CPU
autocast stands in for the GPU's: its lists of operators cast to low precision differ from
CUDA's, so CPU numbers are indications, not the GPU's. On CUDA, TF32 is turned off so that the
reference is fp32.
"""
import argparse
import copy
import importlib.util
import json
import math
import os
import os.path as osp
import sys
import tempfile
import time
from contextlib import nullcontext
from types import SimpleNamespace
from typing import Dict, List

import torch

HERE = osp.dirname(osp.abspath(__file__))
PRECISIONS = ('fp32', 'fp16', 'bf16')
AUTOCAST_DTYPES = dict(fp32=None, fp16=torch.float16, bf16=torch.bfloat16)
FP32_LOSSES = dict(on=(True, ), off=(False, ), both=(True, False))


def load_gpu_check():
    """``gpu_check.py`` of this folder, whose config, data and model builders this tool reuses."""
    spec = importlib.util.spec_from_file_location('gpu_check', osp.join(HERE, 'gpu_check.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = load_gpu_check()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', choices=('cpu', 'cuda'),
                        default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--size', choices=('toy', 'tiny', 'recipe'), default='toy',
                        help='toy configs (default), gpu_check --tiny models, or the recipes')
    parser.add_argument('--algorithms', nargs='+', choices=list(gpu_check.RECIPES),
                        default=list(gpu_check.RECIPES))
    parser.add_argument('--precisions', nargs='+', choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument('--steps', type=int, default=5, help='training steps per run')
    parser.add_argument('--batch-size', type=int, default=4, help='images (CoTAP: pairs) per step')
    parser.add_argument('--fp32-losses', choices=list(FP32_LOSSES), default='both',
                        help='losses and temperature-scaled logits in fp32 under autocast (on), '
                        'in the autocast precision (off), or each low precision both ways')
    parser.add_argument('--data-root', default='data/toy_scenes',
                        help='toy scene set (make toy-data)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seeds the batches (crops) and each step of every run')
    parser.add_argument('--out', help='write the report as JSON here')
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f'--steps must be at least 1, got {args.steps}')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda, but torch.cuda.is_available() is False; use --device cpu '
                     '(CPU autocast)')
    if not osp.isfile(osp.join(args.data_root, 'meta', 'train.txt')):
        parser.error(f'{args.data_root}/meta/train.txt not found: write the toy scenes first '
                     '(make toy-data, or tools/misc/make_toy_scenes.py --out DATA_ROOT)')
    return args


def run_plan(precisions, fp32_losses: str) -> List[dict]:
    """The runs to compare with the fp32 reference: fp32 once, each low precision per setting."""
    return [dict(precision=precision, fp32_losses=setting)
            for precision in precisions
            for setting in ((True, ) if precision == 'fp32' else FP32_LOSSES[fp32_losses])]


def run_name(run: dict) -> str:
    if run['precision'] == 'fp32':
        return 'fp32'
    return f"{run['precision']}, fp32 losses {'on' if run['fp32_losses'] else 'off'}"


# ----------------------------------------------------------------------------- configs and data
def algorithm_config(algorithm: str, size: str, device: str, batch_size: int, data_root: str,
                     work_dir: str):
    """The algorithm's config on the toy scenes, built by ``gpu_check.check_config``; for
    ``size='toy'`` with the shipped toy model instead of gpu_check's shrunk one."""
    from mmengine.config import Config
    cfg = gpu_check.check_config(
        algorithm, SimpleNamespace(tiny=size != 'recipe', batch_size=batch_size, device=device,
                                   data_root=data_root), work_dir)
    if size == 'toy':
        cfg.model = Config.fromfile(osp.join(gpu_check.REPO_ROOT,
                                             gpu_check.RECIPES[algorithm].toy_config)).model
        if 'backbone_checkpoint' in cfg.model:  # CoTAP's DINO start, which users download
            cfg.model.backbone_checkpoint = None
    return cfg


def fp32_optim_wrapper(optim_wrapper_cfg) -> dict:
    """The config's optimizer wrapper without its mixed precision (an ``AmpOptimWrapper`` or
    ``AutocastOptimWrapper`` becomes an ``OptimWrapper`` with the same optimizer, parameter-wise
    settings and clipping): this tool applies autocast and the loss scale itself."""
    cfg = copy.deepcopy(optim_wrapper_cfg)
    if cfg.get('type', 'OptimWrapper') in ('AmpOptimWrapper', 'AutocastOptimWrapper'):
        for precision_key in ('loss_scale', 'dtype', 'device_type', 'use_fsdp'):
            cfg.pop(precision_key, None)
        cfg.type = 'OptimWrapper'
    return cfg


# -------------------------------------------------------------------------------------- steps
def gradient(model) -> torch.Tensor:
    """All parameter gradients of ``model``, flattened into one float64 vector (parameters
    without a gradient, e.g. the EMA teacher's, are left out)."""
    return torch.cat([p.grad.detach().double().flatten() for p in model.parameters()
                      if p.grad is not None])


def train_steps(model, optim_wrapper_cfg, batches, precision: str, device: str, seed: int,
                fp32_losses: bool, progress=None) -> dict:
    """``len(batches)`` training steps of ``model`` (in place) in ``precision``.

    Each step: ``torch.manual_seed(seed + step)``; the data preprocessor, forward and losses
    under autocast (none for fp32); backward (fp16: of the loss times the dynamic scale, then
    unscaled; a non-finite gradient halves the scale and the step runs again from the state
    before it, buffers included); the optimizer step. Returns ``losses`` (term -> value per
    step), ``first_gradient`` (float64 vector) and, for fp16, the final ``loss_scale`` and the
    number of ``overflow_retries``.
    """
    from mmengine.optim import build_optim_wrapper

    from mmdense.models.losses.precision import fp32_forward_enabled
    dtype = AUTOCAST_DTYPES[precision]
    wrapper = build_optim_wrapper(model, fp32_optim_wrapper(optim_wrapper_cfg))
    scaler = torch.amp.GradScaler(device) if precision == 'fp16' else None
    losses: Dict[str, List[float]] = {}
    first_gradient = None
    retries = 0
    for step, batch in enumerate(batches):
        # the forward changes state (EMA teacher, loss centres, queues): a retry starts from this
        before = copy.deepcopy(model.state_dict()) if scaler else None
        while True:
            torch.manual_seed(seed + step)
            autocast = torch.autocast(device, dtype=dtype) if dtype is not None else \
                nullcontext()
            with fp32_forward_enabled(fp32_losses), autocast:
                data = model.data_preprocessor(batch, True)
                loss, log_vars = model.parse_losses(model(**data, mode='loss'))
            if scaler is None:
                loss.backward()
                break
            scaler.scale(loss).backward()
            scaler.unscale_(wrapper.optimizer)
            scaler.update()  # halves the scale if a gradient is not finite
            if all(torch.isfinite(p.grad).all() for p in model.parameters()
                   if p.grad is not None):
                break
            wrapper.zero_grad()
            model.load_state_dict(before)
            retries += 1
            if retries > 64:
                raise RuntimeError(f'{precision}: the gradient of step {step + 1} is not finite '
                                   'at any loss scale')
        if first_gradient is None:
            first_gradient = gradient(model)
        wrapper.step()  # clipping (if the config clips), then the optimizer
        wrapper.zero_grad()
        for key, value in log_vars.items():
            if 'loss' in key:
                losses.setdefault(key, []).append(torch.as_tensor(value).item())
        if progress:
            progress(step, log_vars)
    result = dict(losses=losses, first_gradient=first_gradient)
    if scaler:
        result.update(loss_scale=scaler.get_scale(), overflow_retries=retries)
    return result


def gradient_error(gradient: torch.Tensor, reference: torch.Tensor) -> dict:
    """``rel_l2 = ‖g − g_ref‖ / ‖g_ref‖`` and ``cosine = g·g_ref / (‖g‖ ‖g_ref‖)`` (NaN when a
    gradient is not finite)."""
    if gradient.shape != reference.shape:
        raise ValueError(f'gradients of different parameter sets: {tuple(gradient.shape)} vs '
                         f'{tuple(reference.shape)}')
    if not torch.isfinite(gradient).all():
        return dict(rel_l2=math.nan, cosine=math.nan)
    reference_norm = reference.norm()
    return dict(rel_l2=float((gradient - reference).norm() / reference_norm),
                cosine=float(gradient @ reference / (gradient.norm() * reference_norm)))


# --------------------------------------------------------------------------------------- core
def check_algorithm(algorithm: str, cfg, batches, runs: List[dict], device: str, seed: int,
                    log=print) -> dict:
    """The fp32 reference and every run of ``runs`` from one initial state on ``batches``.

    Returns ``{'fp32 reference': {...}, run name: {...}}``; each entry holds ``precision``,
    ``fp32_losses``, ``losses`` (term -> per-step values) and, for the runs, ``grad_rel_l2``,
    ``grad_cosine`` and ``loss_delta`` (total loss minus the reference's, per step).
    """
    initial = gpu_check.build_model(cfg, device, schedule_length=len(batches))

    def run(precision: str, fp32_losses: bool, name: str) -> dict:
        start = time.perf_counter()

        def progress(step, log_vars):
            terms = ' '.join(f'{k} {torch.as_tensor(v).item():.4f}'
                             for k, v in log_vars.items() if 'loss' in k)
            log(f'[{algorithm}] {name}: step {step + 1}/{len(batches)} {terms}')

        result = train_steps(copy.deepcopy(initial), cfg.optim_wrapper, batches, precision,
                             device, seed, fp32_losses, progress)
        result.update(precision=precision, fp32_losses=fp32_losses,
                      seconds=round(time.perf_counter() - start, 1))
        return result

    reference = run('fp32', True, 'fp32 reference')
    report = {'fp32 reference': reference}
    for plan in runs:
        name = run_name(plan)
        result = run(plan['precision'], plan['fp32_losses'], name)
        error = gradient_error(result['first_gradient'], reference['first_gradient'])
        result.update(grad_rel_l2=error['rel_l2'], grad_cosine=error['cosine'],
                      loss_delta=[a - b for a, b in zip(result['losses']['loss'],
                                                        reference['losses']['loss'])])
        log(f'[{algorithm}] {name}: gradient of step 1 vs fp32: relative L2 '
            f"{error['rel_l2']:.3g}, cosine {error['cosine']:.6f}")
        report[name] = result
    for result in report.values():
        del result['first_gradient']
    return report


def format_table(results: dict, steps: int) -> str:
    lines = [f'| method | precision | fp32 losses | loss, step 1 | loss, step {steps} | '
             f'Δ vs fp32, step {steps} | grad rel. L2 (step 1) | grad cosine (step 1) |',
             '|---|---|---|---|---|---|---|---|']
    for algorithm, report in results.items():
        for name, result in report.items():
            loss = result['losses']['loss']
            fp32_losses = '' if result['precision'] == 'fp32' else \
                ('on' if result['fp32_losses'] else 'off')
            if name == 'fp32 reference':
                errors = ['', '', '']
            else:
                errors = [f"{result['loss_delta'][-1]:+.4f}",
                          f"{100 * result['grad_rel_l2']:.3g} %", f"{result['grad_cosine']:.5f}"]
            label = 'fp32 (reference)' if name == 'fp32 reference' else result['precision']
            lines.append(f'| {algorithm} | {label} | {fp32_losses} | {loss[0]:.4f} | '
                         f'{loss[-1]:.4f} | ' + ' | '.join(errors) + ' |')
    return '\n'.join(lines)


def configure_device(device: str) -> str:
    """Deterministic fp32 on CUDA (TF32 off, deterministic kernels); returns the device name."""
    if device != 'cuda':
        return f'CPU ({torch.get_num_threads()} threads), CPU autocast'
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    return torch.cuda.get_device_name()


def main(argv=None) -> int:
    args = parse_args(argv)
    import mmdense
    from mmengine.logging import MMLogger
    from mmengine.runner import set_random_seed

    from mmdense.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    MMLogger.get_instance('precision_check', log_level='WARNING')  # no per-parameter INFO lines
    device_name = configure_device(args.device)
    runs = run_plan(args.precisions, args.fp32_losses)
    print(f'mmdense {mmdense.__version__} | torch {torch.__version__} | {device_name} | '
          f'{args.size} configs, batch {args.batch_size}, {args.steps} steps, runs: fp32 '
          f'reference, {", ".join(run_name(r) for r in runs)}', flush=True)
    start = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory(prefix='mmdense_precision_check_') as work_dir:
        for algorithm in args.algorithms:
            os.makedirs(osp.join(work_dir, algorithm))
            cfg = algorithm_config(algorithm, args.size, args.device, args.batch_size,
                                   args.data_root, osp.join(work_dir, algorithm))
            set_random_seed(args.seed)  # the same crops in every invocation
            batches = gpu_check.fetch_batches(cfg, args.steps)
            if len(batches) < args.steps:
                raise SystemExit(f'{args.data_root} gives {len(batches)} batches of '
                                 f'{args.batch_size}, fewer than --steps {args.steps}')
            results[algorithm] = check_algorithm(
                algorithm, cfg, batches, runs, args.device, args.seed,
                log=lambda line: print(line, flush=True))
    table = format_table(results, args.steps)
    print(f'\n{table}\n\n{time.perf_counter() - start:.0f} s in all')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(device=device_name, torch=torch.__version__, size=args.size,
                           batch_size=args.batch_size, steps=args.steps, seed=args.seed,
                           command=' '.join(sys.argv), results=results), f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
