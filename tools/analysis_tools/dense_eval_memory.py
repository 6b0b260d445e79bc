"""Peak memory and time of the dense evaluation against the number of images, on synthetic data.

    python tools/analysis_tools/dense_eval_memory.py [--num-images 250 1000 4000]
        [--num-val N] [--modes streaming in-memory] [--protocols linear knn ...]
        [--img-size 112] [--channels 768] [--device cpu] [--max-seed-points 50000]

Every (mode, N) runs in a fresh subprocess, whose peak resident memory (``ru_maxrss``, the
process only: the extraction ``DataLoader`` runs with no workers) is printed next to the peak
before the evaluation starts (torch, the OpenMMLab libraries and the model), with the wall and
CPU seconds (user + system, all threads) of the extraction and of each protocol. The split has
N training and ``--num-val`` (default N/4) validation images of synthetic scenes (a 4x4 grid of
blocks, each one of 27 classes with its own colour, plus noise), the backbone is a stride-16
patch embedding with ``--channels`` outputs, and the protocols are those of a preset: linear
(1 epoch), k-means K=27 Hungarian and K=100 majority (10 iterations, fitted on val), dispersion,
kNN (k=10); ``cluster27_train`` (on request) fits K=27 on the train split, as coco_stuff27 does.
Both modes run the same protocol classes (:mod:`mmdense.evaluation.protocols`): ``streaming``
on float16 feature stores on disk, ``in-memory`` on RAM stores (float32). One JSON line per
protocol is printed as it finishes, so a long run reports what it has done.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch
from torch import nn

NUM_CLASSES, BLOCKS = 27, 4
PROTOCOLS = dict(
    linear=('linear', dict(epochs=1, batch_size=16)),
    cluster27=('cluster', dict(num_clusters=27, matching='hungarian', num_iters=10, num_init=1)),
    cluster100=('cluster', dict(num_clusters=100, matching='majority', num_iters=10,
                                num_init=1)),
    dispersion=('dispersion', {}),
    knn=('knn', dict(k=10)),
    # PiCIE's fit of coco_stuff27: the centroids from every train point (not run by default)
    cluster27_train=('cluster', dict(num_clusters=27, matching='hungarian', num_iters=10,
                                     num_init=1, fit='train')),
)
DEFAULT_PROTOCOLS = ('linear', 'cluster27', 'cluster100', 'dispersion', 'knn')


class SyntheticScenes(torch.utils.data.Dataset):
    """Image ``i``: a 4x4 grid of blocks whose classes are drawn from a generator seeded by
    ``seed + i``; each class has a fixed colour, plus uniform noise. Items as
    :class:`mmdense.evaluation.DenseEvalDataset`'s (RGB uint8 ``image``)."""

    def __init__(self, num_images: int, img_size: int, seed: int) -> None:
        self.num_images, self.img_size, self.seed = num_images, img_size, seed
        self.colours = torch.randint(0, 256, (NUM_CLASSES, 3),
                                     generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(self.seed + index)
        blocks = torch.randint(0, NUM_CLASSES, (BLOCKS, BLOCKS), generator=g)
        cell = self.img_size // BLOCKS
        label = blocks.repeat_interleave(cell, 0).repeat_interleave(cell, 1)
        noise = torch.randint(0, 60, (3, self.img_size, self.img_size), generator=g)
        image = (self.colours[label].permute(2, 0, 1) * 0.7 + noise).clamp(0, 255).byte()
        return dict(image=image, label=label, index=index)


def backbone(channels: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, channels, 16, 16), nn.GELU(),
                         nn.Conv2d(channels, channels, 1)).eval()


def usage() -> dict:
    """Wall and CPU seconds (user + system, all threads) so far, and the peak RSS in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return dict(wall=time.time(), cpu=own.ru_utime + own.ru_stime, peak=own.ru_maxrss / 1024)


def since(start: dict) -> dict:
    now = usage()
    return dict(seconds=round(now['wall'] - start['wall'], 1),
                cpu_seconds=round(now['cpu'] - start['cpu'], 1), peak_rss_mb=round(now['peak']))


def measure(mode: str, num_images: int, num_val: int, img_size: int, channels: int,
            device: str, max_seed_points: int, protocols) -> None:
    """Print one JSON line for the extraction and one per protocol, as each finishes."""
    from mmdense.evaluation.feature_store import (FeatureStore, MemoryFeatureStore,
                                                  build_loader, extract_to_store)
    from mmdense.evaluation.protocols import evaluate_protocol
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    model = backbone(channels).to(device)
    splits = dict(train=SyntheticScenes(num_images, img_size, seed=0),
                  val=SyntheticScenes(num_val, img_size, seed=10**6))
    baseline = round(usage()['peak'])
    common = dict(mode=mode, num_train=num_images, num_val=num_val, baseline_rss_mb=baseline)
    with tempfile.TemporaryDirectory() as folder:
        start = usage()
        stores = {}
        for name, dataset in splits.items():
            stores[name] = (FeatureStore(f'{folder}/{name}', 'float16') if mode == 'streaming'
                            else MemoryFeatureStore(name))
            extract_to_store(model, build_loader(dataset, 16, num_workers=0), stores[name],
                             channel_order='rgb')
        print(json.dumps(dict(common, step='extraction', **since(start))), flush=True)
        for name in protocols:
            protocol, options = PROTOCOLS[name]
            if protocol == 'cluster':
                options = dict(options, max_seed_points=max_seed_points)
            start = usage()
            metrics = evaluate_protocol(protocol, stores['train'], stores['val'], NUM_CLASSES,
                                        device=device, **options)
            print(json.dumps(dict(common, step=name, metrics=metrics, **since(start))),
                  flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--num-images', type=int, nargs='+', default=[250, 1000, 4000])
    parser.add_argument('--num-val', type=int, help='validation images (default: N/4)')
    parser.add_argument('--modes', nargs='+', default=['streaming'],
                        choices=['streaming', 'in-memory'])
    parser.add_argument('--protocols', nargs='+', default=DEFAULT_PROTOCOLS, choices=PROTOCOLS)
    parser.add_argument('--img-size', type=int, default=112)
    parser.add_argument('--channels', type=int, default=768)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--max-seed-points', type=int, default=50_000,
                        help='k-means: points k-means++ seeds from (a seeded sample)')
    parser.add_argument('--child', nargs=3, metavar=('MODE', 'N', 'NUM_VAL'),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args.child[0], int(args.child[1]), int(args.child[2]), args.img_size,
                args.channels, args.device, args.max_seed_points, args.protocols)
        return
    print('| mode | train | val | step | wall s | CPU s | peak RSS MB (libraries + model: '
          'baseline) | mIoU |\n|---|---|---|---|---|---|---|---|', flush=True)
    for mode in args.modes:
        for num_images in args.num_images:
            num_val = args.num_val or num_images // 4
            child = subprocess.Popen([
                sys.executable, __file__, '--child', mode, str(num_images), str(num_val),
                '--img-size', str(args.img_size), '--channels', str(args.channels),
                '--device', args.device, '--max-seed-points', str(args.max_seed_points),
                '--protocols', *args.protocols
            ], stdout=subprocess.PIPE, text=True)
            for line in child.stdout:
                r = json.loads(line)
                miou = r.get('metrics', {}).get('mIoU')
                print(f"| {mode} | {num_images:,} | {num_val:,} | {r['step']} | "
                      f"{r['seconds']} | {r['cpu_seconds']} | {r['peak_rss_mb']:,} "
                      f"(+{r['peak_rss_mb'] - r['baseline_rss_mb']:,}) | "
                      f"{'' if miou is None else f'{miou:.3f}'} |", flush=True)
            if child.wait():
                raise SystemExit(f'{mode} N={num_images} failed (exit {child.returncode})')


if __name__ == '__main__':
    main()
