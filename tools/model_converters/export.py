"""Export the backbone of a pretraining checkpoint for a downstream library.

    python tools/model_converters/export.py PRETRAIN_CKPT OUT.pth \
        --target {mmdet,mmseg,mmpretrain,timm,torchvision} [--branch teacher|student]
        [--config TRAIN_CONFIG]

OUT.pth holds tensors only (``torch.load(OUT, weights_only=True)``), keyed as the target's
backbone expects, without prefix: initialise a downstream backbone with
``init_cfg=dict(type='Pretrained', checkpoint=OUT)``. OUT.json records the source checkpoint's
sha256, the algorithm, the branch and the backbone architecture. The branch defaults to the one
the algorithm transfers (the EMA teacher for DINO, SlotCon, CoTAP, ADCLR). The algorithm and
architecture are read from the checkpoint as plain data; the config text it stores is never
executed (give --config when that text is not plain data).
"""
import argparse
import json

from mmdense.transfer.checkpoints import export_backbone, sidecar_path
from mmdense.transfer.keys import TARGETS
from mmdense.utils.cli import run_cli


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('checkpoint', help='MMEngine checkpoint of a pretraining run (or a file '
                        'written by import_weights.py)')
    parser.add_argument('out', help='exported backbone file (.pth); the sidecar is OUT.json')
    parser.add_argument('--target', required=True, choices=TARGETS)
    parser.add_argument('--branch', choices=['teacher', 'student'],
                        help="default: the algorithm's transfer branch")
    parser.add_argument('--config', help='config the checkpoint was trained with (default: the '
                        'model config recorded in the checkpoint, read without executing it)')
    return parser.parse_args()


def main():
    args = parse_args()
    sidecar = export_backbone(args.checkpoint, args.out, args.target, args.branch, args.config)
    backbone = {k: v for k, v in sidecar['backbone'].items() if k != 'config'}
    print(f"exported the {sidecar['branch']} backbone of {sidecar['algorithm']} "
          f"({json.dumps(backbone)}) to {args.out} ({sidecar['num_tensors']} tensors, "
          f"{sidecar['layout']} layout); sidecar {sidecar_path(args.out)}")
    if sidecar['extra_keys']:
        print(f"note: {len(sidecar['extra_keys'])} keys beyond a plain {backbone['kind']} "
              f"(e.g. {sidecar['extra_keys'][:3]}) are exported too; a plain downstream "
              'backbone reports them as unexpected')


if __name__ == '__main__':
    run_cli(main)
