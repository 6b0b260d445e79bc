"""Images per second that one data-loader worker produces for a recipe's training pipeline.

    python tools/analysis_tools/benchmark_loader.py CONFIG [CONFIG ...] [--images 48]
        [--image-size 640 480] [--step-rate IMAGES_PER_S] [--out result.json]

Each config's own training pipeline (decode, multi-crop, photometric jitter, packing) runs in
this one process (= one loader worker) on ``--images`` synthetic JPEGs of COCO's typical size
(640 x 480, written once to a temporary folder), after one untimed warm-up image. Reported:
images/s per worker and, for ``--step-rate`` (the images/s one GPU trains at, e.g. from
``benchmark_table.py --device cuda``), the workers needed to keep that GPU fed.
"""
import argparse
import json
import math
import os.path as osp
import sys
import tempfile
import time

import numpy as np
from mmengine.config import Config
from PIL import Image


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('configs', nargs='+')
    parser.add_argument('--images', type=int, default=48, help='timed images per config')
    parser.add_argument('--image-size', type=int, nargs=2, default=(640, 480),
                        metavar=('W', 'H'))
    parser.add_argument('--step-rate', type=float, nargs='+',
                        help='images/s the GPU trains at, one per config (or one for all)')
    parser.add_argument('--out', help='write the results as JSON here')
    return parser.parse_args(argv)


def write_jpegs(folder: str, num: int, size) -> list:
    """``num`` JPEGs of smooth random colour fields with noise (so JPEG decoding does real
    work), named ``000000.jpg`` ..."""
    rng = np.random.RandomState(0)
    width, height = size
    paths = []
    for i in range(num):
        coarse = rng.randint(0, 256, (height // 32 + 1, width // 32 + 1, 3)).astype(np.uint8)
        img = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))
        img = np.clip(img + rng.randint(-12, 13, img.shape), 0, 255).astype(np.uint8)
        path = osp.join(folder, f'{i:06d}.jpg')
        Image.fromarray(img).save(path, quality=90)
        paths.append(path)
    return paths


def image_pipeline(cfg: Config):
    """The per-image pipeline of a training config (CoTAP's sits inside its pair dataset)."""
    dataset = cfg.train_dataloader.dataset
    while 'pipeline' not in dataset and 'dataset' in dataset:
        dataset = dataset.dataset
    return dataset.pipeline


def images_per_second(config: str, paths: list) -> float:
    from mmcv.transforms import Compose
    from mmengine.registry import DefaultScope
    cfg = Config.fromfile(config)
    with DefaultScope.overwrite_default_scope('mmdense'):
        pipeline = Compose(image_pipeline(cfg))
        pipeline(dict(img_path=paths[0]))  # warm-up: lazy imports, first allocations
        start = time.perf_counter()
        for path in paths[1:]:
            pipeline(dict(img_path=path))
    return (len(paths) - 1) / (time.perf_counter() - start)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmdense.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    rates = args.step_rate or []
    if len(rates) not in (0, 1, len(args.configs)):
        raise SystemExit('--step-rate: give one value, or one per config')
    results = []
    with tempfile.TemporaryDirectory() as folder:
        paths = write_jpegs(folder, args.images + 1, args.image_size)
        for i, config in enumerate(args.configs):
            per_worker = round(images_per_second(config, paths), 2)
            result = dict(config=config, images_per_s_per_worker=per_worker)
            if rates:
                rate = rates[0] if len(rates) == 1 else rates[i]
                result.update(step_rate=rate, workers_needed=math.ceil(rate / per_worker))
            results.append(result)
            print(json.dumps(result), flush=True)
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
