"""Convert a published checkpoint to this project's layout, to transfer or continue training.

    python tools/model_converters/import_weights.py SRC OUT.pth \
        --from {slotcon,dino,ibot,timm,torchvision}

* slotcon: the official training checkpoint (``module.encoder_k.*`` teacher, ``encoder_q.*``
  student) or a backbone-only release (torchvision names);
* dino / ibot: a training checkpoint (``teacher`` / ``student`` dicts, ``[module.]backbone.*``;
  ``main_dino.py`` under torch.distributed.launch or ``run_with_submitit.py``, pickled under
  numpy 1.x or 2.x) or a backbone-only release (timm names; torchvision names for DINO's
  ResNet-50);
* timm: a timm ViT state dict; torchvision: a torchvision (or timm) ResNet state dict.

Files are read with ``torch.load(weights_only=True)``: a file that needs a global beyond tensors,
plain data, ``argparse.Namespace``, ``pathlib`` paths and numpy scalars/arrays is refused with
one line that names the global. A backbone of a kind the format does not publish (a ResNet given
as ``--from timm``) is refused with the ``--from`` that reads it.

OUT.pth is an MMEngine-style checkpoint: ``backbone.*`` (student) and
``teacher.module.backbone.*`` (teacher; a one-backbone source fills both) in mmpretrain names,
``meta.algorithm`` and the source's sha256. Export it for a downstream library with export.py,
or continue pretraining from it (``load_from=OUT.pth`` in an mmdense config with that backbone).
Heads, classifiers and iBOT's ``masked_embed`` are dropped (listed in ``meta.dropped_keys``).
"""
import argparse

from mmdense.transfer.checkpoints import IMPORT_FORMATS, import_published
from mmdense.utils.cli import run_cli


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('source', help='published checkpoint')
    parser.add_argument('out', help='converted checkpoint (.pth)')
    parser.add_argument('--from', dest='source_format', required=True,
                        choices=sorted(IMPORT_FORMATS))
    return parser.parse_args()


def main():
    args = parse_args()
    meta = import_published(args.source, args.out, args.source_format)
    print(f"imported {args.source} ({args.source_format}: branches {meta['source_branches']}, "
          f"backbone {meta['backbone']}) to {args.out} as {meta['algorithm']}")
    if meta['dropped_keys']:
        print(f"dropped {len(meta['dropped_keys'])} non-backbone keys, e.g. "
              f"{meta['dropped_keys'][:4]}")


if __name__ == '__main__':
    run_cli(main)
