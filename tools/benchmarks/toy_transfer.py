"""Toy-scene transfer: pretraining checkpoint → export → Mask R-CNN and UperNet, evaluated.

    python tools/benchmarks/toy_transfer.py PRETRAIN_CKPT --work-dir DIR
        [--data-root data/toy_scenes] [--random-baseline] [--branch teacher|student]
        [--iters N] [--tasks det seg] [--det-config C] [--seg-config C]

Exports the checkpoint's backbone for mmdet and for mmseg, checks each export loads into the
downstream backbone (tools/analysis_tools/check_transfer.py's check; a failure stops the run),
fine-tunes the toy Mask R-CNN (bbox / segm AP, mmdet's CocoMetric) and the toy UperNet (mIoU,
mmseg's IoUMetric), and with ``--random-baseline`` the same models from a random backbone.
Prints a summary table and writes DIR/toy_transfer.json. The default configs follow the
exported backbone: ViT (its dims, depth and patch size are read from the export) or ResNet.
"""
import argparse
import contextlib
import copy
import io
import json
import logging
import os.path as osp
import sys
import time

from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOY_CONFIGS = osp.join(ROOT, 'configs/benchmarks/{}/toy/{}_toy.py')
CONFIGS = dict(
    vit=dict(det=TOY_CONFIGS.format('mmdetection', 'mask-rcnn_vit-s16_fpn'),
             seg=TOY_CONFIGS.format('mmsegmentation', 'upernet_vit-s16')),
    resnet=dict(det=TOY_CONFIGS.format('mmdetection', 'mask-rcnn_r18_fpn'),
                seg=TOY_CONFIGS.format('mmsegmentation', 'upernet_r18')))
TARGETS = dict(det='mmdet', seg='mmseg')
METRICS = dict(det=(('bbox AP', 'coco/bbox_mAP', 100), ('segm AP', 'coco/segm_mAP', 100)),
               seg=(('mIoU', 'mIoU', 1), ))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('checkpoint', help='pretraining checkpoint (MMEngine runner)')
    parser.add_argument('--work-dir', required=True)
    parser.add_argument('--data-root', default='data/toy_scenes')
    parser.add_argument('--random-baseline', action='store_true',
                        help='also fine-tune from a random backbone, same schedule')
    parser.add_argument('--branch', choices=['teacher', 'student'],
                        help="default: the algorithm's transfer branch")
    parser.add_argument('--iters', type=int, help="training iterations (default: the configs')")
    parser.add_argument('--seed', type=int, default=0,
                        help='one seed for every run: pretrained and random runs then differ in '
                        'the backbone init only (same head init and data order)')
    parser.add_argument('--tasks', nargs='+', choices=sorted(TARGETS), default=['det', 'seg'])
    parser.add_argument('--det-config', help='default: the toy Mask R-CNN for the backbone')
    parser.add_argument('--seg-config', help='default: the toy UperNet for the backbone')
    parser.add_argument('--verbose', action='store_true',
                        help="show the runners' INFO logs (always written to the work dirs)")
    return parser.parse_args(argv)


def vit_out_indices(num_layers: int) -> tuple:
    """Blocks feeding the pyramid: (3, 5, 7, 11) for 12 blocks, the same fractions otherwise."""
    return tuple(max(round(num_layers * f) - 1, 0) for f in (1 / 3, 1 / 2, 2 / 3, 1))


def fit_backbone(cfg: Config, sidecar: dict, task: str) -> None:
    """Give the config's backbone the exported one's architecture (a ViTPyramid its arch,
    patch size and pyramid blocks; a ResNet its depth), and the neck / decoder its channels."""
    backbone = sidecar['backbone']
    if cfg.model.backbone.type == 'ViTPyramid':
        arch = (backbone.get('config') or {}).get('arch')
        if backbone['kind'] != 'vit' or arch is None:
            raise ValueError(f"{cfg.filename} takes a ViT; the export holds {backbone}")
        cfg.model.backbone.update(arch=arch, patch_size=backbone['patch_size'],
                                  out_indices=vit_out_indices(backbone['num_layers']))
        channels = [backbone['embed_dims']] * 4
    else:
        if backbone['kind'] != 'resnet' or backbone['depth'] is None:
            raise ValueError(f"{cfg.filename} takes a ResNet; the export holds {backbone}")
        cfg.model.backbone.depth = backbone['depth']
        width = 4 if backbone['block'] == 'bottleneck' else 1
        channels = [64 * width * 2**stage for stage in range(4)]
    if task == 'det':
        cfg.model.neck.in_channels = channels
    else:
        cfg.model.decode_head.in_channels = channels
        cfg.model.auxiliary_head.in_channels = channels[2]


def set_data_root(cfg: Config, root: str) -> None:
    root = osp.join(root, '')
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = root
    for evaluator in ('val_evaluator', 'test_evaluator'):
        if 'ann_file' in cfg[evaluator]:
            cfg[evaluator].ann_file = osp.join(root, 'annotations/instances_val.json')


def set_iters(cfg: Config, iters: int) -> None:
    """Shorten the toy schedule: warm-up over the first sixth, then the config's decay."""
    warmup = max(iters // 6, 1)
    cfg.train_cfg.update(max_iters=iters, val_interval=iters)
    cfg.param_scheduler[0].end = warmup
    cfg.param_scheduler[1].update(begin=warmup, end=iters)
    if 'T_max' in cfg.param_scheduler[1]:
        cfg.param_scheduler[1].T_max = iters - warmup


def fine_tune(cfg: Config, exported, work_dir: str, name: str, seed: int = 0,
              verbose: bool = False) -> dict:
    """Train ``cfg`` from ``exported`` (None: random backbone); returns metrics and time."""
    from mmengine.runner import Runner

    from mmdense.transfer.downstream import set_backbone_init
    cfg = copy.deepcopy(cfg)
    set_backbone_init(cfg, exported)
    cfg.work_dir = work_dir
    cfg.default_hooks.checkpoint = None  # the metrics are the result
    cfg.randomness = dict(seed=seed)
    if not verbose:
        cfg.log_level = 'WARNING'
    cfg.experiment_name = f'{name}_{time.strftime("%Y%m%d_%H%M%S")}'
    cfg.visualizer.name = cfg.experiment_name  # one visualizer per run in this process
    start = time.time()
    runner = Runner.from_cfg(cfg)
    # pycocotools prints its tables; the metrics end up in toy_transfer.json
    with contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO()):
        runner.train()
    scalars = runner.message_hub.log_scalars
    metrics = {k[len('val/'):]: float(v.current()) for k, v in scalars.items()
               if k.startswith('val/')}
    return dict(metrics=metrics, time_s=round(time.time() - start, 1))


def summary_rows(results: dict, tasks) -> list:
    rows = []
    for init, runs in results.items():
        row = dict(init=init)
        for task in tasks:
            for label, key, scale in METRICS[task]:
                row[label] = runs[task]['metrics'][key] * scale
        row['time (s)'] = sum(runs[task]['time_s'] for task in tasks)
        rows.append(row)
    return rows


def format_table(rows: list) -> str:
    columns = list(rows[0])
    lines = ['  '.join(f'{c:>10}' for c in columns)]
    for row in rows:
        lines.append('  '.join(f'{row[c]:>10.1f}' if isinstance(row[c], float) else
                               f'{row[c]:>10}' for c in columns))
    return '\n'.join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import mmdense.transfer  # noqa: F401  (registers ViTPyramid in mmdet and mmseg)
    from mmengine.logging import MMLogger

    from mmdense.transfer import export_backbone
    from mmdense.transfer.check import check_transfer
    start = time.time()
    configs = dict(det=args.det_config, seg=args.seg_config)
    exported, cfgs, sidecar = {}, {}, None
    for task in args.tasks:
        exported[task] = osp.join(args.work_dir, f'backbone_{TARGETS[task]}.pth')
        sidecar = export_backbone(args.checkpoint, exported[task], TARGETS[task], args.branch)
        configs[task] = configs[task] or CONFIGS[sidecar['backbone']['kind']][task]
        cfgs[task] = Config.fromfile(configs[task])
        fit_backbone(cfgs[task], sidecar, task)
        set_data_root(cfgs[task], args.data_root)
        if args.iters:
            set_iters(cfgs[task], args.iters)
        level = MMLogger.get_current_instance().level
        MMLogger.get_current_instance().setLevel(logging.ERROR)
        report = check_transfer(cfgs[task], exported[task], args.branch)
        MMLogger.get_current_instance().setLevel(level)
        print(f'[toy-transfer] {task}: {TARGETS[task]} export {exported[task]}: check '
              f"{'OK' if report.ok else 'FAILED'}", flush=True)
        if not report.ok:
            print(report.format())
            raise SystemExit(f'[toy-transfer] the {task} backbone would not start from the export')
    inits = ['pretrained'] + (['random'] if args.random_baseline else [])
    results = {}
    for init in inits:
        results[init] = {}
        for task in args.tasks:
            print(f'[toy-transfer] fine-tuning {task} from the {init} backbone', flush=True)
            results[init][task] = run = fine_tune(cfgs[task], exported[task] if init == 'pretrained'
                                            else None, osp.join(args.work_dir, f'{task}_{init}'),
                                            f'{task}_{init}', args.seed, args.verbose)
            print(f'[toy-transfer] {task} {init}: ' + ', '.join(
                f"{label} {run['metrics'][key] * scale:.1f}" for label, key, scale in METRICS[task])
                + f" ({run['time_s']:.0f} s)", flush=True)
    rows = summary_rows(results, args.tasks)
    summary = dict(checkpoint=osp.abspath(args.checkpoint), algorithm=sidecar['algorithm'],
                   branch=sidecar['branch'], backbone={k: v for k, v in sidecar['backbone'].items()
                                                       if k != 'config'},
                   data_root=args.data_root, configs={t: configs[t] for t in args.tasks},
                   iters={t: cfgs[t].train_cfg.max_iters for t in args.tasks},
                   results=results, table=rows, total_time_s=round(time.time() - start, 1))
    with open(osp.join(args.work_dir, 'toy_transfer.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    print(f"\n[toy-transfer] {sidecar['algorithm']} ({sidecar['branch']}) backbone of "
          f'{args.checkpoint}, {summary["iters"]} iterations on {args.data_root}')
    print(format_table(rows))
    print(f'[toy-transfer] total {summary["total_time_s"]:.0f} s; '
          f"{osp.join(args.work_dir, 'toy_transfer.json')}", flush=True)
    return summary


if __name__ == '__main__':
    sys.exit(main() and 0)
