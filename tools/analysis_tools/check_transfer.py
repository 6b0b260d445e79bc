"""Check that a downstream config's backbone really starts from an exported file.

    python tools/analysis_tools/check_transfer.py DOWNSTREAM_CONFIG PRETRAIN [--branch B]
        [--cfg-options k=v ...]

Builds the mmdet / mmseg model, initialises its backbone from PRETRAIN and starts it as the
runner would (``model.init_weights()``: the backbone's init, then a model-level ``init_cfg``;
then ``load_from`` or the checkpoint ``resume=True`` would resume), and prints, per backbone
module, how many tensors were loaded / missing / shape-mismatched / overwritten after loading /
new (added by the downstream wrapper), plus the file's unexpected keys. Exits 1 if any backbone
tensor does not start from the file (random init, overwritten, NaN/Inf), if the init raises
(e.g. a prefix absent from the file) or if the file holds the wrong branch (the sidecar JSON
says which; without one, a file holding both branches is compared with each, and any other file
needs --branch; the default wanted branch is the algorithm's transfer branch, usually the EMA
teacher). Unexpected keys alone do not fail the check: a backbone with extra parameters (CoTAP's
object-aware filter) transfers its plain-ViT part. User errors (a missing config) exit 2.
"""
import argparse
import logging
import os.path as osp
import sys

from mmengine.config import DictAction
from mmengine.logging import MMLogger

from mmdense.utils.cli import load_config, run_cli


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='mmdet / mmseg downstream config')
    parser.add_argument('pretrain',
                        help='exported backbone file (tools/model_converters/export.py)')
    parser.add_argument('--branch', choices=['teacher', 'student'],
                        help="branch the file must hold (default: the algorithm's)")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args()


def main():
    args = parse_args()
    from mmdense.transfer.check import check_transfer
    cfg = load_config(args.config, args.cfg_options)
    if not osp.exists(args.pretrain):
        raise FileNotFoundError(f'pretrained file not found: {args.pretrain}')
    MMLogger.get_current_instance().setLevel(logging.ERROR)  # loaders log every key
    report = check_transfer(cfg, args.pretrain, args.branch)
    report.config = args.config
    print(report.format())
    sys.exit(0 if report.ok else 1)


if __name__ == '__main__':
    run_cli(main)
