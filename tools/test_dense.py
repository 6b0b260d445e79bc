"""Frozen-backbone dense evaluation of a pretrained checkpoint.

    python tools/test_dense.py CONFIG CKPT --preset {coco_stuff27,voc12_leopart,ade20k_linear,
        cityscapes_linear,toy} [--data-root DIR] [--train-list F --val-list F] [--allow-subset]
        [--num-workers 4] [--feature-dtype float16|float32] [--cache-dir DIR]
        [--launcher none|pytorch|slurm] [--out JSON]
    python tools/test_dense.py --list-presets
    python tools/test_dense.py --check-data {--preset P | --dataset D} [--data-root DIR]
        [--train-list F --val-list F] [--num-train N --num-val N]
    python tools/test_dense.py CONFIG CKPT --protocol {linear,cluster,knn,dispersion} [...]
        [--dataset toy|coco_stuff27|voc12|ade20k|cityscapes|DATASET_CONFIG] [--data-root DIR]
        [--num-train 40] [--num-val 20] [--img-size S] [--num-clusters K ...]
        [--matching auto|hungarian|majority] [--knn-k 10] [--linear-epochs 30] [--seed 0]
        [--out JSON] [--allow-partial]

A ``--preset`` fixes everything a published number depends on (resolution, crop, image lists and
counts, protocol settings; features on the backbone's own grid; ``--list-presets`` prints them
with their sources and, point by point, the reference protocol beside the preset with the reason
for every departure) and streams: features come from a DataLoader into an on-disk store, so
memory does not grow with the split; under ``torchrun ... --launcher pytorch`` the images are
shared among the ranks and the metrics are identical to one process. It refuses a run on fewer
images than the preset unless ``--allow-subset`` (then marked ``subset: true``), and writes
JSON + Markdown with the checkpoint's SHA-256. ``--protocol`` runs the same protocol classes
(``mmdense.evaluation.PROTOCOLS``) on features held in RAM, for small ad-hoc runs (toy data,
``--num-train`` / ``--num-val`` images; each split extracted once for every protocol).

``--check-data`` reads no image and runs no model: it lists the samples the run would read,
checks that every image, label map, file list and image list exists, prints a per-split summary
(files found and missing per folder) and, for each thing missing, the archive or converter
command that makes it; it exits 0 when the data is complete and 1 when not. Every preset run
performs the same check before extracting any feature, and stops with the same message.

CKPT may be ``random`` for the randomly initialised model (a baseline; ``--seed`` picks the
draw, and its scores move with it, so compare against several). Prints one table row per
protocol setting and writes all results to JSON (default
``work_dirs/dense_eval/<config name>_<checkpoint name>.json``, replaced atomically). A
checkpoint that does not fill every tensor of the evaluated backbone is refused unless
``--allow-partial`` (a coverage line says how much it filled).
"""
import argparse
import json
import os.path as osp
import time

import torch

from mmdense.fileio.checkpoint import write_atomically
from mmdense.evaluation import (PROTOCOLS, build_protocol, load_dataset_config, load_model,
                                load_split, split_store)
from mmdense.evaluation.data_check import check_data
from mmdense.evaluation.preset_eval import evaluate_preset, split_counts, write_report
from mmdense.evaluation.presets import PRESETS, format_preset, preset_data_cfg
from mmdense.utils.cli import run_cli
from mmdense.utils.errors import UserValueError


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', nargs='?', help='model config the checkpoint was trained with')
    parser.add_argument('checkpoint', nargs='?', help="checkpoint file, or 'random'")
    parser.add_argument('--preset', choices=sorted(PRESETS), help='a named published protocol')
    parser.add_argument('--list-presets', action='store_true',
                        help='print every preset with its settings and source, then exit')
    parser.add_argument('--check-data', action='store_true',
                        help='check that the data of --preset (or --dataset) is complete, say '
                        'what is missing and the command that makes it; exit 0 (complete) or 1')
    parser.add_argument('--train-list', help="preset: the train image list (e.g. PiCIE's "
                        'curated list for coco_stuff27)')
    parser.add_argument('--val-list', help='preset: the val image list')
    parser.add_argument('--allow-subset', action='store_true',
                        help='preset: run on fewer images than the preset (marked as a subset)')
    parser.add_argument('--num-workers', type=int, default=4, help='preset: loader workers')
    parser.add_argument('--feature-dtype', choices=['float16', 'float32'], default='float16',
                        help='preset: dtype of the on-disk feature store')
    parser.add_argument('--cache-dir', help='preset: where the feature store lives (deleted '
                        'after the run; default: a temporary folder)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                        help='preset: distributed evaluation (torchrun ... --launcher pytorch)')
    parser.add_argument('--protocol', nargs='+', choices=PROTOCOLS,
                        help='protocols on --num-train/--num-val images held in RAM')
    parser.add_argument('--dataset', default='toy', help='dataset name or dense-eval config')
    parser.add_argument('--data-root', help="override the dataset's data_root")
    parser.add_argument('--num-train', type=int,
                        help='train images (default: the preset\'s; 40 with --protocol)')
    parser.add_argument('--num-val', type=int,
                        help='val images (default: the preset\'s; 20 with --protocol)')
    parser.add_argument('--img-size', type=int, help="override the dataset's img_size")
    parser.add_argument('--num-clusters', type=int, nargs='+',
                        help='K values for cluster (default: the number of classes)')
    parser.add_argument('--matching', choices=['auto', 'hungarian', 'majority'], default='auto',
                        help='auto: Hungarian when K equals the class count, else majority')
    parser.add_argument('--knn-k', type=int, default=10)
    parser.add_argument('--linear-epochs', type=int, default=30)
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--seed', type=int, default=0,
                        help="torch seed set before the model is built (the 'random' init)")
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--out', help='JSON result file')
    parser.add_argument('--allow-partial', action='store_true',
                        help='evaluate even if the checkpoint does not fill the whole backbone')
    args = parser.parse_args()
    if args.check_data and args.preset and args.dataset != 'toy':
        raise UserValueError('--check-data: give --preset or --dataset, not both')
    if not (args.list_presets or args.check_data):
        if not (args.config and args.checkpoint):
            parser.error('CONFIG and CKPT are required (or --list-presets)')
        if bool(args.preset) == bool(args.protocol):
            raise UserValueError('give one of --preset (a published protocol) or --protocol')
        if args.preset and (args.img_size or args.dataset != 'toy'):
            raise UserValueError(f'--preset {args.preset} fixes the dataset and the image size: '
                                 'drop --dataset / --img-size (or use --protocol)')
    return args


def settings(args, num_classes):
    """(protocol, setting name, protocol object of :data:`mmdense.evaluation.PROTOCOLS`) for
    every requested run."""
    for protocol in args.protocol:
        if protocol == 'cluster':
            for k in args.num_clusters or [num_classes]:
                matching = args.matching
                if matching == 'auto':
                    matching = 'hungarian' if k == num_classes else 'majority'
                yield protocol, f'K={k} {matching}', build_protocol(
                    protocol, num_clusters=k, matching=matching)
        elif protocol == 'knn':
            yield protocol, f'k={args.knn_k}', build_protocol(protocol, k=args.knn_k)
        elif protocol == 'linear':
            yield protocol, f'{args.linear_epochs} epochs', build_protocol(
                protocol, epochs=args.linear_epochs)
        else:
            yield protocol, '', build_protocol(protocol)


def format_table(results):
    names = sorted({name for result in results for name in result['metrics']},
                   key=lambda n: (n not in ('mIoU', 'pAcc'), n))
    header = ['protocol', 'setting'] + names
    rows = [[r['protocol'], r['setting']] +
            [f"{r['metrics'][n]:.4f}" if n in r['metrics'] else '-' for n in names]
            for r in results]
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    lines = [' | '.join(str(c).ljust(w) for c, w in zip(row, widths)) for row in [header] + rows]
    lines.insert(1, '-+-'.join('-' * w for w in widths))
    return '\n'.join(lines)


def run_name(args) -> str:
    return '_'.join(osp.splitext(osp.basename(path))[0] for path in (args.config, args.checkpoint))


def run_preset(args) -> None:
    from mmdense.utils.dist import get_rank
    if args.launcher != 'none':
        from mmengine.dist import init_dist
        init_dist(args.launcher)
        if torch.cuda.is_available():
            args.device = f'cuda:{torch.cuda.current_device()}'
    torch.manual_seed(args.seed)
    model = load_model(args.config, args.checkpoint, args.device, args.allow_partial)
    record = evaluate_preset(model, args.preset, args.data_root, args.train_list, args.val_list,
                             args.num_train, args.num_val, args.allow_subset, args.batch_size,
                             args.num_workers, args.feature_dtype, args.cache_dir)
    if get_rank() == 0:
        name = f'{run_name(args)}_{args.preset}.json'
        out = args.out or osp.join('work_dirs', 'dense_eval', name)
        paths = write_report(record, out, args.checkpoint, args.config)
        print(f"results written to {paths['json']} and {paths['markdown']}")


def check_data_root(args) -> int:
    """``--check-data``: print the per-split summary of the data a run would read; 0 when it
    is complete, 1 when something is missing."""
    if args.preset:
        preset = PRESETS[args.preset]
        data_cfg = preset_data_cfg(preset, args.data_root, args.train_list, args.val_list)
        counts = split_counts(preset, args.num_train, args.num_val)
        print(f'preset {preset.name}: dataset {preset.dataset}')
    else:
        data_cfg = load_dataset_config(args.dataset, args.data_root)
        counts = dict(train=args.num_train, val=args.num_val)
        print(f'dataset {args.dataset}')
    check = check_data(data_cfg, counts)
    print(check.summary())
    return 0 if check.complete else 1


def main():
    args = parse_args()
    if args.list_presets:
        print('\n\n'.join(format_preset(preset) for preset in PRESETS.values()))
        return
    if args.check_data:
        return check_data_root(args)
    if args.preset:
        run_preset(args)
        return
    args.num_train = 40 if args.num_train is None else args.num_train
    args.num_val = 20 if args.num_val is None else args.num_val
    data_cfg = load_dataset_config(args.dataset, args.data_root)
    if args.img_size:
        data_cfg['img_size'] = args.img_size
    torch.manual_seed(args.seed)
    model = load_model(args.config, args.checkpoint, args.device, args.allow_partial)
    runs = list(settings(args, data_cfg['num_classes']))
    needs_train = any(evaluate.needs_train for _, _, evaluate in runs)
    train = load_split(data_cfg, 'train', args.num_train) if needs_train else None
    val = load_split(data_cfg, 'val', args.num_val)
    # features extracted once per split into RAM stores, read by every protocol
    stores = {name: split_store(model, split, args.batch_size)
              for name, split in (('train', train), ('val', val)) if split is not None}
    results = []
    for protocol, setting, evaluate in runs:
        start = time.time()
        metrics = evaluate(stores.get('train'), stores['val'], data_cfg['num_classes'],
                           data_cfg.get('ignore_index', 255), args.device)
        results.append(dict(protocol=protocol, setting=setting, metrics=metrics,
                            seconds=round(time.time() - start, 2)))
    print(format_table(results))
    out = args.out or osp.join('work_dirs', 'dense_eval', run_name(args) + '.json')
    record = dict(config=args.config, checkpoint=args.checkpoint, seed=args.seed,
                  dataset=args.dataset, img_size=data_cfg['img_size'],
                  num_train=0 if train is None else len(train['labels']),
                  num_val=len(val['labels']), results=results)
    write_atomically(json.dumps(record, indent=2).encode(), out)
    print(f'results written to {out}')


if __name__ == '__main__':
    run_cli(main)
