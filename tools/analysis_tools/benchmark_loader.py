"""Images per second that one data-loader worker produces for a recipe's training pipeline.

    python tools/analysis_tools/benchmark_loader.py CONFIG [CONFIG ...] [--images 48]
        [--image-size 640 480] [--step-rate IMAGES_PER_S] [--out result.json]

Each config's own training pipeline (decode, multi-crop, photometric jitter, packing) runs in
this one process (= one loader worker) on ``--images`` synthetic JPEGs of COCO's typical size
(640 x 480, written once to a temporary folder), after one untimed warm-up image. The process
first takes the thread settings of a loader worker: one torch thread (``DataLoader`` workers call
``torch.set_num_threads(1)``) and the config's ``env_cfg.mp_cfg.opencv_num_threads`` for OpenCV
(mmengine's default 0); with torch's default of one thread per core, uint8 tensor copies such as
``PackInputs``' permute cost ~30x more, which no real worker pays. Reported: images/s per
worker, images per CPU second of the worker and, for ``--step-rate`` (the images/s one GPU
trains at, e.g. from ``benchmark_table.py --device cuda``), the workers needed to keep that GPU
fed at the images/s per worker.
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


def use_worker_threads(cfg: Config) -> None:
    """The thread settings of a data-loader worker started by mmengine for ``cfg``."""
    import cv2
    import torch
    torch.set_num_threads(1)
    cv2.setNumThreads(cfg.get('env_cfg', {}).get('mp_cfg', {}).get('opencv_num_threads', 0))


def images_per_second(config: str, paths: list) -> tuple:
    """Images per wall-clock second and per CPU second of this process (the two agree on an
    idle core; on a shared machine the second is the steadier estimate of a worker's rate)."""
    from mmcv.transforms import Compose
    from mmengine.registry import DefaultScope
    cfg = Config.fromfile(config)
    use_worker_threads(cfg)
    with DefaultScope.overwrite_default_scope('mmdense'):
        pipeline = Compose(image_pipeline(cfg))
        pipeline(dict(img_path=paths[0]))  # warm-up: lazy imports, first allocations
        start, start_cpu = time.perf_counter(), time.process_time()
        for path in paths[1:]:
            pipeline(dict(img_path=path))
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return (len(paths) - 1) / wall, (len(paths) - 1) / cpu


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
            per_worker, per_cpu_s = (round(rate, 2) for rate in images_per_second(config, paths))
            result = dict(config=config, images_per_s_per_worker=per_worker,
                          images_per_cpu_s=per_cpu_s)
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
