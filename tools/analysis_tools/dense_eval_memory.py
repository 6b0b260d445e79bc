"""Peak memory and time of the dense evaluation against the number of images, on synthetic data.

    python tools/analysis_tools/dense_eval_memory.py [--num-images 500 2000]
        [--modes streaming in-memory] [--img-size 112] [--channels 768] [--device cpu]
        [--max-seed-points 50000]

Every (mode, N) runs in a fresh subprocess, whose peak resident memory (``ru_maxrss``, the
process only: the extraction ``DataLoader`` runs with no workers) is printed with the seconds and
metrics, next to the peak before the evaluation starts (torch, the OpenMMLab libraries and the
model). The split has N training and N/4 validation images of synthetic scenes (a 4x4 grid of
blocks, each one of 27 classes with its own colour, plus noise), the backbone is a stride-16
patch embedding with ``--channels`` outputs, and the protocols are those of a preset: linear
(1 epoch), kNN (k=10), k-means K=27 Hungarian and K=100 majority (10 iterations), dispersion.
``streaming`` is :mod:`mmdense.evaluation.streaming` (float16 feature stores on disk, 16-image
chunks); ``in-memory`` is :mod:`mmdense.evaluation.protocols` on the whole split.
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
PROTOCOLS = (('linear', dict(epochs=1, batch_size=16)), ('knn', dict(k=10)),
             ('cluster', dict(num_clusters=27, matching='hungarian', num_iters=10, num_init=1)),
             ('cluster', dict(num_clusters=100, matching='majority', num_iters=10, num_init=1)),
             ('dispersion', {}))


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


def run_streaming(model, train, val, device, max_seed_points) -> dict:
    from mmdense.evaluation.feature_store import FeatureStore, build_loader, extract_to_store
    from mmdense.evaluation.streaming import run_stream_protocol
    stores = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, dataset in (('train', train), ('val', val)):
            stores[name] = FeatureStore(f'{folder}/{name}', 'float16')
            extract_to_store(model, build_loader(dataset, 16, num_workers=0), stores[name],
                             channel_order='rgb')
        return [
            run_stream_protocol(protocol, stores['train'], stores['val'], NUM_CLASSES,
                                device=device, **options,
                                **(dict(max_seed_points=max_seed_points)
                                   if protocol == 'cluster' else {}))
            for protocol, options in PROTOCOLS
        ]


def run_in_memory(model, train, val, device, max_seed_points) -> dict:
    from mmdense.evaluation import extract_features
    from mmdense.evaluation.protocols import (cluster_segmentation, dispersion_stats,
                                              knn_segmentation, linear_probe)
    splits = {}
    for name, dataset in (('train', train), ('val', val)):
        items = [dataset[i] for i in range(len(dataset))]
        images = torch.stack([item['image'] for item in items])
        splits[name] = (extract_features(model, images, channel_order='rgb', batch_size=16),
                        torch.stack([item['label'] for item in items]))
        del items, images
    (train_feats, train_labels), (val_feats, val_labels) = splits['train'], splits['val']
    run = dict(
        linear=lambda o: linear_probe(train_feats, train_labels, val_feats, val_labels,
                                      NUM_CLASSES, **o),
        knn=lambda o: knn_segmentation(train_feats, train_labels, val_feats, val_labels,
                                       NUM_CLASSES, **o),
        cluster=lambda o: cluster_segmentation(val_feats, val_labels, NUM_CLASSES, **o),
        dispersion=lambda o: dispersion_stats(val_feats, val_labels, NUM_CLASSES, **o))
    return [run[protocol](options) for protocol, options in PROTOCOLS]


def measure(mode: str, num_images: int, img_size: int, channels: int, device: str,
            max_seed_points: int) -> dict:
    import mmdense.evaluation.streaming  # noqa: F401  (libraries count in the baseline)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    model = backbone(channels).to(device)
    train = SyntheticScenes(num_images, img_size, seed=0)
    val = SyntheticScenes(num_images // 4, img_size, seed=10**6)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.time()
    run = run_streaming if mode == 'streaming' else run_in_memory
    metrics = run(model, train, val, device, max_seed_points)
    return dict(mode=mode, num_train=num_images, num_val=num_images // 4,
                seconds=round(time.time() - start, 1), baseline_rss_mb=round(baseline),
                peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                metrics=metrics)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--num-images', type=int, nargs='+', default=[500, 2000])
    parser.add_argument('--modes', nargs='+', default=['streaming'],
                        choices=['streaming', 'in-memory'])
    parser.add_argument('--img-size', type=int, default=112)
    parser.add_argument('--channels', type=int, default=768)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--max-seed-points', type=int, default=50_000,
                        help='streaming k-means: points k-means++ seeds from (a seeded sample)')
    parser.add_argument('--child', nargs=2, metavar=('MODE', 'N'), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.img_size,
                                 args.channels, args.device, args.max_seed_points)))
        return
    for mode in args.modes:
        for num_images in args.num_images:
            out = subprocess.run([
                sys.executable, __file__, '--child', mode, str(num_images), '--img-size',
                str(args.img_size), '--channels', str(args.channels), '--device', args.device,
                '--max-seed-points', str(args.max_seed_points)
            ], capture_output=True, text=True, check=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            print(f"{mode:>9} train {result['num_train']:>5} val {result['num_val']:>4}: peak "
                  f"RSS {result['peak_rss_mb']:>5} MB (libraries and model before the "
                  f"evaluation: {result['baseline_rss_mb']} MB), {result['seconds']:>6} s, mIoU " +
                  ' '.join(f"{m['mIoU']:.3f}" for m in result['metrics'] if 'mIoU' in m),
                  flush=True)


if __name__ == '__main__':
    main()
