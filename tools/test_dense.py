"""Frozen-backbone dense evaluation of a pretrained checkpoint.

    python tools/test_dense.py CONFIG CKPT --protocol {linear,cluster,knn,dispersion} [...]
        [--dataset toy|coco_stuff27|voc12|ade20k|cityscapes|DATASET_CONFIG] [--data-root DIR]
        [--num-train 40] [--num-val 20] [--img-size S] [--num-clusters K ...]
        [--matching auto|hungarian|majority] [--knn-k 10] [--linear-epochs 30] [--seed 0]
        [--out JSON] [--allow-partial]

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

from mmdense.engine.checkpoint import write_atomically
from mmdense.evaluation import (PROTOCOLS, load_dataset_config, load_model, load_split,
                                run_protocol)
from mmdense.utils.cli import run_cli


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='model config the checkpoint was trained with')
    parser.add_argument('checkpoint', help="checkpoint file, or 'random'")
    parser.add_argument('--protocol', nargs='+', required=True, choices=PROTOCOLS)
    parser.add_argument('--dataset', default='toy', help='dataset name or dense-eval config')
    parser.add_argument('--data-root', help="override the dataset's data_root")
    parser.add_argument('--num-train', type=int, default=40, help='train images (linear, knn)')
    parser.add_argument('--num-val', type=int, default=20, help='val images')
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
    return parser.parse_args()


def settings(args, num_classes):
    """(protocol, setting name, run_protocol keyword arguments) for every requested run."""
    for protocol in args.protocol:
        if protocol == 'cluster':
            for k in args.num_clusters or [num_classes]:
                matching = args.matching
                if matching == 'auto':
                    matching = 'hungarian' if k == num_classes else 'majority'
                yield protocol, f'K={k} {matching}', dict(num_clusters=k, matching=matching)
        elif protocol == 'knn':
            yield protocol, f'k={args.knn_k}', dict(knn_k=args.knn_k)
        elif protocol == 'linear':
            yield protocol, f'{args.linear_epochs} epochs', dict(linear_epochs=args.linear_epochs)
        else:
            yield protocol, '', {}


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


def main():
    args = parse_args()
    data_cfg = load_dataset_config(args.dataset, args.data_root)
    if args.img_size:
        data_cfg['img_size'] = args.img_size
    torch.manual_seed(args.seed)
    model = load_model(args.config, args.checkpoint, args.device, args.allow_partial)
    needs_train = any(p in ('linear', 'knn') for p in args.protocol)
    train = load_split(data_cfg, 'train', args.num_train) if needs_train else None
    val = load_split(data_cfg, 'val', args.num_val)
    results = []
    for protocol, setting, options in settings(args, data_cfg['num_classes']):
        start = time.time()
        metrics = run_protocol(model, protocol, train, val, num_classes=data_cfg['num_classes'],
                               ignore_index=data_cfg.get('ignore_index', 255),
                               batch_size=args.batch_size, **options)
        results.append(dict(protocol=protocol, setting=setting, metrics=metrics,
                            seconds=round(time.time() - start, 2)))
    print(format_table(results))
    run_name = '_'.join(osp.splitext(osp.basename(path))[0]
                        for path in (args.config, args.checkpoint))
    out = args.out or osp.join('work_dirs', 'dense_eval', run_name + '.json')
    record = dict(config=args.config, checkpoint=args.checkpoint, seed=args.seed,
                  dataset=args.dataset, img_size=data_cfg['img_size'],
                  num_train=0 if train is None else len(train['labels']),
                  num_val=len(val['labels']), results=results)
    write_atomically(json.dumps(record, indent=2).encode(), out)
    print(f'results written to {out}')


if __name__ == '__main__':
    run_cli(main)
