"""Evaluate a fine-tuned mmdet or mmseg model on its config's test set (MMEngine ``Runner.test``).

    python tools/benchmarks/test_downstream.py CONFIG CHECKPOINT [--work-dir DIR] [--out JSON]
        [--cfg-options k=v ...] [--launcher none|pytorch|slurm]

CHECKPOINT is what ``train_downstream.py`` (or mmdet's / mmseg's own train.py) wrote for CONFIG;
it holds every weight, so the backbone's ``Pretrained`` init is dropped. The default scope (mmdet /
mmseg) comes from the config, and the metrics are the config's ``test_evaluator``'s (bbox / segm
AP for mmdet, mIoU for mmseg). mmdet's and mmseg's own tools/test.py are not installed with their
pip packages; this stands in for both (``mim test mmdet CONFIG --checkpoint CKPT`` is the same
with ``openmim`` installed). Prints the metrics and writes them to ``--out`` as JSON.
"""
import argparse
import json
import os
import os.path as osp

from mmengine.config import DictAction
from mmengine.runner import Runner

from mmdense.utils.cli import add_launcher_arguments, load_config, parse_launcher_args, run_cli


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='mmdet / mmseg config (e.g. under configs/benchmarks)')
    parser.add_argument('checkpoint', help='fine-tuned checkpoint of that config')
    parser.add_argument('--work-dir', help='default: work_dirs/test_<config name>')
    parser.add_argument('--out', help='metrics JSON (default: <work-dir>/test_metrics.json)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. test_dataloader.dataset.indices=10')
    add_launcher_arguments(parser)
    return parse_launcher_args(parser)


def test_config(args):
    from mmdense.transfer.downstream import activate_scope, config_scope, set_backbone_init
    cfg = load_config(args.config, args.cfg_options)
    activate_scope(config_scope(cfg, args.config))
    set_backbone_init(cfg, None)  # every weight comes from the checkpoint
    cfg.load_from = args.checkpoint
    cfg.resume = False
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or osp.join(
        'work_dirs', 'test_' + osp.splitext(osp.basename(args.config))[0])
    return cfg


def main():
    args = parse_args()
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
    cfg = test_config(args)
    metrics = Runner.from_cfg(cfg).test()
    # numpy scalars (mmseg's IoUMetric returns np.float32) as plain numbers for JSON
    metrics = {key: value.item() if hasattr(value, 'item') else value
               for key, value in metrics.items()}
    out = args.out or osp.join(cfg.work_dir, 'test_metrics.json')
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    with open(out, 'w') as f:
        json.dump(dict(config=args.config, checkpoint=args.checkpoint, metrics=metrics), f,
                  indent=2)
    print(json.dumps(metrics))
    print(f'metrics written to {out}')


if __name__ == '__main__':
    run_cli(main)
