"""Visualise which SlotCon prototype each pixel is assigned to.

    python tools/analysis_tools/visualize_slots.py CONFIG CKPT IMAGES... --out DIR
        [--size 224] [--branch teacher|student] [--max-images 64] [--rows 16] [--top-k 8]
        [--allow-partial]

IMAGES are image files or folders of images (searched recursively). Writes
``DIR/assignments/<name>.png`` (image | per-pixel argmax prototype, colour-coded, over the image)
and ``DIR/top_images_per_prototype.png`` (one row per most-used prototype: the images in which it
covers most pixels, other pixels darkened). A checkpoint that does not fill the whole model is
refused unless ``--allow-partial`` (a coverage line says how much it filled).
"""
import argparse
import os
import os.path as osp

import cv2
import mmcv
import numpy as np
import torch
import torch.nn.functional as F
from mmengine.registry import init_default_scope

from mmdense.datasets.transforms import LoadRGBImage
from mmdense.fileio.checkpoint import read_checkpoint
from mmdense.fileio.load_coverage import load_weights
from mmdense.evaluation.prototypes import prototype_dots
from mmdense.registry import MODELS
from mmdense.utils import register_all_modules
from mmdense.utils.cli import load_config, run_cli
from mmdense.utils.errors import UserError, UserValueError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')
THUMB = 112


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('images', nargs='+', help='image files or folders')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--size', type=int, default=224, help='images are resized to size²')
    parser.add_argument('--branch', choices=['teacher', 'student'], default='teacher')
    parser.add_argument('--max-images', type=int, default=64)
    parser.add_argument('--rows', type=int, default=16, help='prototypes in the top-image grid')
    parser.add_argument('--top-k', type=int, default=8, help='images per prototype')
    parser.add_argument('--allow-partial', action='store_true',
                        help='draw even if the checkpoint does not fill the whole model')
    return parser.parse_args()


def list_images(paths, limit):
    found = []
    for path in paths:
        if osp.isdir(path):
            for root, _, files in sorted(os.walk(path)):
                found += [osp.join(root, f) for f in sorted(files)
                          if f.lower().endswith(IMAGE_EXTENSIONS)]
        elif osp.isfile(path):
            found.append(path)
        else:
            raise FileNotFoundError(f'no image or folder at {path!r}')
    if not found:
        raise FileNotFoundError(f'no images found in {paths}')
    return found[:limit]


def palette(num_colors):
    """Well separated colours (BGR): hues spread by the golden ratio."""
    hues = (np.arange(num_colors) * 0.618034 % 1.0 * 180).astype(np.uint8)
    hsv = np.stack([hues, np.full_like(hues, 220), np.full_like(hues, 255)], axis=1)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2BGR)[0]


def assign(model, branch, images):
    """BGR uint8 images (N, S, S, 3) from ``LoadRGBImage`` → argmax prototype (N, S, S) and its
    score (N, S, S): the prototype scores the evaluation scores
    (:func:`mmdense.evaluation.prototypes.prototype_dots`), upsampled bilinearly."""
    dots = prototype_dots(model, torch.from_numpy(images).permute(0, 3, 1, 2),
                          channel_order=LoadRGBImage.channel_order, branch=branch)
    dots = F.interpolate(dots, size=images.shape[1:3], mode='bilinear', align_corners=False)
    scores, winners = dots.max(dim=1)
    return winners.numpy(), scores.numpy()


def overlay(image, labels, colors):
    mixed = (0.45 * image + 0.55 * colors[labels]).astype(np.uint8)
    edges = cv2.morphologyEx(labels.astype(np.uint16), cv2.MORPH_GRADIENT,
                             np.ones((3, 3), np.uint8)) > 0
    mixed[edges] = 255
    return mixed


def top_image_grid(images, labels, scores, num_prototypes, rows, top_k):
    """Rows of the ``rows`` most used prototypes, each with its ``top_k`` images by coverage
    (ties broken by the mean assignment score)."""
    coverage = np.stack([(labels == k).mean(axis=(1, 2)) for k in range(num_prototypes)])
    most_used = np.argsort(-coverage.sum(axis=1))[:rows]
    most_used = most_used[coverage[most_used].sum(axis=1) > 0]
    grid = []
    for k in most_used:
        order = np.lexsort((-scores.mean(axis=(1, 2)), -coverage[k]))[:top_k]
        cells = []
        for i in order:
            shown = images[i].copy()
            shown[labels[i] != k] //= 4
            cells.append(cv2.resize(shown, (THUMB, THUMB), interpolation=cv2.INTER_AREA))
        cells += [np.zeros((THUMB, THUMB, 3), np.uint8)] * (top_k - len(cells))
        label = np.zeros((THUMB, 60, 3), np.uint8)
        cv2.putText(label, f'#{k}', (4, THUMB // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (255, 255, 255), 1)
        grid.append(np.concatenate([label] + cells, axis=1))
    return np.concatenate(grid, axis=0)


def main():
    args = parse_args()
    register_all_modules(init_default_scope=False)
    init_default_scope('mmdense')
    cfg = load_config(args.config)
    model = MODELS.build(cfg.model)
    if not hasattr(model, 'encode_view'):
        raise UserValueError(f'{args.config}: the model is a {type(model).__name__}; this tool '
                             'draws SlotCon prototype assignments')
    load_weights(model, read_checkpoint(args.checkpoint), args.checkpoint,
                 allow_partial=args.allow_partial)
    model.eval()

    paths = list_images(args.images, args.max_images)
    loader = LoadRGBImage()
    images = np.stack([mmcv.imresize(loader(dict(img_path=p))['img'], (args.size, args.size))
                       for p in paths])
    labels, scores = zip(*[assign(model, args.branch, images[i:i + 16])
                           for i in range(0, len(images), 16)])
    labels, scores = np.concatenate(labels), np.concatenate(scores)

    colors = palette(model.head.num_prototypes)
    os.makedirs(osp.join(args.out, 'assignments'), exist_ok=True)
    for path, image, image_labels in zip(paths, images, labels):
        name = osp.splitext(osp.basename(path))[0]
        side_by_side = np.concatenate([image, overlay(image, image_labels, colors)], axis=1)
        cv2.imwrite(osp.join(args.out, 'assignments', f'{name}.png'), side_by_side)
    grid = top_image_grid(images, labels, scores, model.head.num_prototypes, args.rows,
                          args.top_k)
    if not cv2.imwrite(osp.join(args.out, 'top_images_per_prototype.png'), grid):
        raise UserError(f'could not write {args.out}/top_images_per_prototype.png')
    used = len(np.unique(labels))
    print(f'{len(paths)} images, {used} of {model.head.num_prototypes} prototypes in use; '
          f'wrote {args.out}/assignments/*.png and {args.out}/top_images_per_prototype.png')


if __name__ == '__main__':
    run_cli(main)
