"""The one table of renamed configs: old name → new name, both relative to ``configs/``.

A config renamed to follow the naming scheme of ``configs/README.md`` keeps working under its old
name until mmdense :data:`RENAMES_REMOVED_IN`: :func:`resolve_renamed_config` (called by
``mmdense.utils.cli.load_config``, so by ``tools/train.py`` and every other tool) turns a path to
an old name that no longer exists into the path of the new one, with a one-line note on stderr.
A ``_base_`` entry of a user's own config is read by MMEngine and must name the new file."""
import os.path as osp
import sys

RENAMES_REMOVED_IN = '0.2.0'
RENAMED_CONFIGS = {
    'adclr/vit-b16_in1k.py': 'adclr/vit-b_in1k.py',
    'adclr/vit-s16_coco.py': 'adclr/vit-s_coco.py',
    'adclr/vit-s16_in1k.py': 'adclr/vit-s_in1k.py',
    'adclr/vit-s16_in1k_cls-queries.py': 'adclr/vit-s_in1k_cls-queries.py',
    'adclr/vit-s16_toy.py': 'adclr/vit-s_toy.py',
    'dino/vit-s16_coco.py': 'dino/vit-s_coco.py',
    'dino/vit-s16_in1k.py': 'dino/vit-s_in1k-300e.py',
    'dino/vit-s16_toy.py': 'dino/vit-s_toy.py',
    # the README's boost run, named by its length since the vanilla 100-epoch run exists too
    'dino/vit-s_in1k.py': 'dino/vit-s_in1k-300e.py',
    'dino/vit-ti16_toy-30e.py': 'dino/vit-ti_toy-30e.py',
    'dsc/r18_toy-pm.py': 'dsc/r18_toy_pm.py',
    'dsc/r50_coco-800e-pm.py': 'dsc/r50_coco-800e_pm.py',
}


def renamed_config(path):
    """The path of the new name when ``path`` (``.../<method>/<old name>``, relative or
    absolute) names a renamed config that does not exist and its new name does; else None."""
    folder, name = osp.split(osp.normpath(path))
    new = RENAMED_CONFIGS.get(f'{osp.basename(folder)}/{name}')
    if new is None or osp.exists(path):
        return None
    new_path = osp.join(osp.dirname(folder), *new.split('/'))
    return new_path if osp.isfile(new_path) else None


def resolve_renamed_config(path):
    """``path``, or the path of its new name (:func:`renamed_config`) with a note on stderr."""
    new = renamed_config(path)
    if new is None:
        return path
    print(f'note: config {path} was renamed to {new}; the old name stops working in mmdense '
          f'{RENAMES_REMOVED_IN}', file=sys.stderr)
    return new
