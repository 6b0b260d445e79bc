"""Plot training curves (losses, dense-evaluation mIoU, lr, ...) from MMEngine's scalars.json.

    python tools/analysis_tools/analyze_logs.py RUN [RUN ...] --out curves.png
        [--keys loss loss_group dense_eval/knn_mIoU ...] [--legend NAME ...]

Each RUN is a ``vis_data/scalars.json`` file or a work dir (its latest run's file is used). By
default every key starting with ``loss`` or ``dense_eval/`` is plotted; one panel per key, one line
per run, against the iteration (``step``). Prints each plotted key's first and last value.
"""
import argparse
import json
import os
import os.path as osp

from mmdense.utils.cli import run_cli
from mmdense.utils.errors import UserError, UserValueError

DEFAULT_PREFIXES = ('loss', 'dense_eval/')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('runs', nargs='+', help='scalars.json files or work dirs')
    parser.add_argument('--out', required=True, help='output image (.png, .pdf, .svg)')
    parser.add_argument('--keys', nargs='+', help='scalar names (default: loss*, dense_eval/*)')
    parser.add_argument('--legend', nargs='+', help='one name per run (default: the paths)')
    return parser.parse_args()


def find_scalars(path):
    """``path`` itself, or the ``vis_data/scalars.json`` of the latest run under work dir
    ``path`` (MMEngine's timestamped run folders sort by time)."""
    if osp.isfile(path):
        return path
    if not osp.isdir(path):
        raise FileNotFoundError(f'no scalars.json file or work dir at {path}')
    runs = sorted(d for d in os.listdir(path)
                  if osp.isfile(osp.join(path, d, 'vis_data', 'scalars.json')))
    if not runs:
        raise UserError(f'{path}: no <run>/vis_data/scalars.json inside (did training log?)')
    return osp.join(path, runs[-1], 'vis_data', 'scalars.json')


def read_curves(path):
    """``{key: [(step, value), ...]}`` from a scalars.json (one JSON record a line); a key
    logged twice at one step keeps its first value."""
    curves = {}
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f'{path}: line {number} is not JSON ({error.msg})') from error
            step = record.get('step', record.get('iter'))
            for key, value in record.items():
                if key not in ('step', 'iter', 'epoch') and isinstance(value, (int, float)):
                    points = curves.setdefault(key, {})
                    points.setdefault(step, float(value))
    return {key: sorted(points.items()) for key, points in curves.items()}


def select_keys(all_curves, keys):
    present = sorted({key for curves in all_curves for key in curves})
    if keys:
        missing = [key for key in keys if key not in present]
        if missing:
            raise UserValueError(f'--keys {" ".join(missing)}: not logged; logged keys are '
                                 f'{", ".join(present)}')
        return keys
    chosen = [key for key in present if key.startswith(DEFAULT_PREFIXES)]
    if not chosen:
        raise UserError(f'no loss* or dense_eval/* scalars logged (keys: {", ".join(present)}); '
                        'name some with --keys')
    return chosen


def plot(all_curves, names, keys, out):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    cols = min(3, len(keys))
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for name, curves in zip(names, all_curves):
            if curves.get(key):
                ax.plot(*zip(*curves[key]), marker='.', label=name)
        ax.set_title(key)
        ax.set_xlabel('iteration')
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis('off')
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main():
    args = parse_args()
    if args.legend and len(args.legend) != len(args.runs):
        raise UserValueError(f'--legend has {len(args.legend)} names for {len(args.runs)} runs')
    paths = [find_scalars(run) for run in args.runs]
    all_curves = [read_curves(path) for path in paths]
    keys = select_keys(all_curves, args.keys)
    names = args.legend or args.runs
    if osp.dirname(args.out):
        os.makedirs(osp.dirname(args.out), exist_ok=True)
    plot(all_curves, names, keys, args.out)
    for name, curves in zip(names, all_curves):
        for key in keys:
            if curves.get(key):
                (first_step, first), (last_step, last) = curves[key][0], curves[key][-1]
                print(f'{name} {key}: {first:.4f} (iter {first_step}) -> {last:.4f} '
                      f'(iter {last_step})')
    print(f'wrote {args.out}')


if __name__ == '__main__':
    run_cli(main)
