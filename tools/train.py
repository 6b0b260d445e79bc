"""Train an mmdense config with MMEngine's Runner.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
                                 [--cfg-options k=v ...] [--launcher none|pytorch|slurm]
                                 [--allow-partial]

The checkpoint training starts from (``load_from``, ``--resume``) is checked before it reaches
the model (:class:`~mmdense.engine.hooks.atomic_checkpoint_hook.CheckpointLoadGuardHook`): its
``meta.config`` text is never executed, its coverage is logged, and a partial load is refused
unless ``--allow-partial``. A ``--cfg-options`` key that nothing would read stops the run before
anything is built, with the nearest valid name (``model.backbone.dpeth``: ``ResNet
(model.backbone) takes no argument 'dpeth' (did you mean 'depth'?)``; see
:func:`mmdense.utils.cli.check_cfg_options`).

The config's ``fast_path`` switches (:mod:`mmdense.engine.fast_path`) are resolved for this
machine: the recipe's precision (its optim wrapper; fp32 on the CPU), channels_last for ResNet
backbones, and, opt-in, bf16 autocast on a CUDA GPU with bf16 and ``torch.compile`` of the
student backbone. ``--amp`` asks for mixed precision: fp16 with a loss scaler
(``AmpOptimWrapper``), or bf16 where the fast path uses it.
"""
import argparse
import logging
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner, find_latest_checkpoint

from mmdense.utils.cli import add_launcher_arguments, load_config, parse_launcher_args, run_cli
from mmdense.utils.errors import UserKeyError, UserValueError


def parse_args():
    parser = argparse.ArgumentParser(description='Train a dense self-supervised model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='directory for logs and checkpoints '
                        '(default: ./work_dirs/<method>/<config name>)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CKPT, or from the latest checkpoint in the work dir '
                        'when no path is given')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by total batch / auto_scale_lr.base_batch_size')
    parser.add_argument('--no-validate', action='store_true',
                        help='skip validation during training')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. train_dataloader.batch_size=8')
    parser.add_argument('--allow-partial', action='store_true',
                        help='start even if load_from / the resumed checkpoint does not fill the '
                        'model (its backbones, for load_from)')
    add_launcher_arguments(parser)
    return parse_launcher_args(parser)


def drop_unavailable_vis_backends(cfg: Config) -> None:
    """Keep the config portable: TensorBoard is used only where it is installed."""
    try:
        import tensorboard  # noqa: F401
        return
    except ImportError:
        pass
    for holder in (cfg.get('visualizer', {}), cfg):
        backends = holder.get('vis_backends') if holder else None
        if backends:
            kept = [b for b in backends if b.get('type') != 'TensorboardVisBackend']
            if len(kept) != len(backends):
                print_log('tensorboard is not installed: TensorBoard logging disabled',
                          logger='current', level=logging.WARNING)
                holder['vis_backends'] = kept


def default_work_dir(config: str) -> str:
    """``./work_dirs/<method>/<config name>``: configs of different methods share names
    (``dino/vit-s_toy.py``, ``adclr/vit-s_toy.py``, ``cotap/vit-s_toy.py``), and a shared work dir
    would let ``--resume`` pick up another method's checkpoint."""
    method = osp.basename(osp.dirname(osp.abspath(config)))
    return osp.join('./work_dirs', method, osp.splitext(osp.basename(config))[0])


def merge_args(cfg: Config, args) -> Config:
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = default_work_dir(cfg.filename)  # a renamed config's new name
    if args.amp:
        wrapper_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper_type not in ('OptimWrapper', 'AmpOptimWrapper'):
            raise UserValueError(f'--amp needs an OptimWrapper, the config uses {wrapper_type}')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg:
            raise UserKeyError(f'{args.config} has no `auto_scale_lr.base_batch_size` to scale '
                               'from')
        cfg.auto_scale_lr.enable = True
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    drop_unavailable_vis_backends(cfg)
    return cfg


def check_start_checkpoint(cfg: Config) -> None:
    """Read the checkpoint the run will start from, if any, so that an unreadable one is named
    before the runner is built."""
    from mmdense.fileio.checkpoint import read_checkpoint
    path = cfg.get('load_from')
    if path is None and cfg.get('resume'):
        path = find_latest_checkpoint(cfg.work_dir)
    if path is not None and '://' not in path:  # mmengine downloads URLs itself
        read_checkpoint(path)


def main():
    args = parse_args()
    import mmdense
    from mmdense.engine.fast_path import apply_fast_path
    from mmdense.engine.hooks.atomic_checkpoint_hook import CheckpointLoadGuardHook
    from mmdense.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    cfg = apply_fast_path(merge_args(load_config(args.config, args.cfg_options), args))
    check_start_checkpoint(cfg)
    runner = Runner.from_cfg(cfg)
    runner.register_hook(CheckpointLoadGuardHook(allow_partial=args.allow_partial))
    print_log(f'mmdense {mmdense.__version__}: training {args.config} in {cfg.work_dir}',
              logger='current')
    runner.train()


if __name__ == '__main__':
    run_cli(main)
