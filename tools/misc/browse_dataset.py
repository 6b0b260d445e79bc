"""Draw what a pretraining config's pipeline feeds the model: the views of a few images, with
their crop boxes on the original.

    python tools/misc/browse_dataset.py CONFIG --out DIR [--num-images 4] [--tile 160]
        [--cfg-options k=v ...]

For each of the first ``--num-images`` images of ``train_dataloader.dataset`` (unwrapped from a
wrapper such as ``NeighbourPairDataset``), writes ``DIR/<index>_<name>.png``: the original image
with every view's crop box (``crop_boxes``, original pixels) drawn in that view's colour and
numbered (g: global, l: local or query), then the views after their augmentations, each framed in
the same colour and marked ``flip`` when flipped. Pipelines without crop boxes show the views
only.
"""
import argparse
import os
import os.path as osp

import cv2
import numpy as np
from mmengine.config import DictAction
from mmengine.registry import init_default_scope

from mmdense.datasets.transforms import LoadRGBImage
from mmdense.registry import DATASETS
from mmdense.utils import register_all_modules
from mmdense.utils.cli import load_config, run_cli
from mmdense.utils.errors import UserError, UserValueError

COLOURS = ((0, 200, 255), (255, 120, 0), (80, 220, 80), (220, 60, 220), (0, 90, 255),
           (255, 220, 0), (160, 120, 255), (120, 255, 220))  # BGR


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='pretraining config')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--num-images', type=int, default=4)
    parser.add_argument('--tile', type=int, default=160, help='height of each drawn view')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings, e.g. train_dataloader.dataset.data_root=DIR')
    return parser.parse_args()


def image_dataset_cfg(cfg):
    """``train_dataloader.dataset`` with dataset wrappers (a ``dataset`` key) peeled off."""
    dataset_cfg = cfg.train_dataloader.dataset
    while 'dataset' in dataset_cfg:
        dataset_cfg = dataset_cfg.dataset
    return dataset_cfg


def view_name(index, num_global):
    return f'g{index}' if index < num_global else f'l{index - num_global}'


def draw_boxes(image, boxes, num_global, scale):
    """The original (BGR) resized by ``scale`` with each crop box drawn and named."""
    canvas = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    for v, box in enumerate(boxes):
        colour = COLOURS[v % len(COLOURS)]
        x1, y1, x2, y2 = (np.asarray(box, dtype=np.float64) * scale).round().astype(int)
        cv2.rectangle(canvas, (x1, y1), (x2 - 1, y2 - 1), colour, 2)
        cv2.putText(canvas, view_name(v, num_global), (x1 + 3, y1 + 14),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    return canvas


def draw_view(view, index, num_global, flipped, tile):
    """One augmented view ``(3, H, W)`` (BGR uint8) at height ``tile``, framed and captioned."""
    array = np.ascontiguousarray(view.permute(1, 2, 0).numpy().astype(np.uint8))
    width = max(1, round(array.shape[1] * tile / array.shape[0]))
    array = cv2.resize(array, (width, tile), interpolation=cv2.INTER_NEAREST)
    colour = COLOURS[index % len(COLOURS)]
    array = cv2.copyMakeBorder(array, 3, 3, 3, 3, cv2.BORDER_CONSTANT, value=colour)
    caption = view_name(index, num_global) + (' flip' if flipped else '')
    cv2.putText(array, caption, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    return array


def hstack(tiles, gap=6):
    """Tiles side by side on white, top-aligned."""
    height = max(t.shape[0] for t in tiles)
    width = sum(t.shape[1] for t in tiles) + gap * (len(tiles) - 1)
    canvas = np.full((height, width, 3), 255, np.uint8)
    left = 0
    for t in tiles:
        canvas[:t.shape[0], left:left + t.shape[1]] = t
        left += t.shape[1] + gap
    return canvas


def num_global_views(dataset_cfg):
    for step in dataset_cfg.get('pipeline', []):
        if 'global_crops' in step:
            return step['global_crops'].get('num', 2)
    return 0


def main():
    args = parse_args()
    if args.num_images < 1 or args.tile < 16:
        raise UserValueError(f'need --num-images >= 1 and --tile >= 16, got {args.num_images} '
                             f'and {args.tile}')
    cfg = load_config(args.config, args.cfg_options)
    register_all_modules(init_default_scope=False)
    init_default_scope('mmdense')
    dataset_cfg = image_dataset_cfg(cfg)
    dataset = DATASETS.build(dataset_cfg)
    if len(dataset) == 0:
        raise UserError(f'{args.config}: train_dataloader.dataset holds no images')
    num_global = num_global_views(dataset_cfg)
    os.makedirs(args.out, exist_ok=True)
    loader = LoadRGBImage()
    for index in range(min(args.num_images, len(dataset))):
        sample = dataset[index]
        views = sample['inputs'] if isinstance(sample['inputs'], list) else [sample['inputs']]
        data_sample = sample['data_samples']
        boxes = data_sample.get('crop_boxes')
        flips = data_sample.get('flips')
        tiles = [draw_view(view, v, num_global, bool(flips[v]) if flips is not None else False,
                           args.tile) for v, view in enumerate(views)]
        path = dataset.get_data_info(index)['img_path']
        if boxes is not None:
            original = loader(dict(img_path=path))['img']
            scale = 2 * args.tile / max(original.shape[:2])
            tiles.insert(0, draw_boxes(original, boxes.tolist(), num_global, scale))
        name = osp.splitext(osp.basename(path))[0]
        out = osp.join(args.out, f'{index:03d}_{name}.png')
        if not cv2.imwrite(out, hstack(tiles)):
            raise UserError(f'could not write {out}')
        print(f'{out}: {len(views)} views' + ('' if boxes is None else ' with crop boxes'))


if __name__ == '__main__':
    run_cli(main)
