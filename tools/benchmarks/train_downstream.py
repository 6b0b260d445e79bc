"""Fine-tune an mmdet or mmseg config from an exported backbone with MMEngine's Runner.

    python tools/benchmarks/train_downstream.py CONFIG (--pretrained FILE | --random-init)
        [--work-dir DIR] [--amp] [--resume] [--cfg-options k=v ...] [--launcher none|pytorch|slurm]

The default scope (mmdet / mmseg) comes from the config. ``--pretrained`` sets the backbone's
``Pretrained`` init to an exported file (tools/model_converters/export.py); run
tools/analysis_tools/check_transfer.py on the pair first (the train.sh scripts do).
mmdet's and mmseg's own tools/train.py are not installed with their pip packages; this stands in
for both.
"""
import argparse
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from mmdense.utils.cli import add_launcher_arguments, load_config, parse_launcher_args, run_cli


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='mmdet / mmseg config (e.g. under configs/benchmarks)')
    init = parser.add_mutually_exclusive_group(required=True)
    init.add_argument('--pretrained', help='exported backbone file for the backbone init')
    init.add_argument('--random-init', action='store_true',
                      help='train from a randomly initialised backbone (baseline)')
    parser.add_argument('--work-dir', help='default: work_dirs/<config name>')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument('--resume', action='store_true', help='resume from the latest checkpoint')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. train_dataloader.batch_size=2')
    add_launcher_arguments(parser)
    return parse_launcher_args(parser)


def downstream_config(args) -> Config:
    from mmdense.transfer.downstream import activate_scope, config_scope, set_backbone_init
    cfg = load_config(args.config, args.cfg_options)
    activate_scope(config_scope(cfg, args.config))
    set_backbone_init(cfg, None if args.random_init else args.pretrained)
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or osp.join('work_dirs',
                                             osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    cfg.resume = args.resume
    return cfg


def main():
    args = parse_args()
    if args.pretrained and not osp.isfile(args.pretrained):
        raise FileNotFoundError(f'exported backbone not found: {args.pretrained}')
    Runner.from_cfg(downstream_config(args)).train()


if __name__ == '__main__':
    run_cli(main)
