"""Deterministic procedural "toy scenes" for fast CPU experiments.

Each image shows 2-6 objects from :data:`CLASSES` on a textured background. A category has a
characteristic shape, hue and texture (all jittered per object); objects vary strongly in scale
and are rotated and placed at random, later objects occluding earlier ones. A placement that
would leave an earlier object with only a tiny visible part is rejected, so every annotated
instance is substantially visible, and its mask is exactly its visible part.

Layout under the output root (``<split>`` is ``train`` or ``val``)::

    images/<split>/000000.jpg ...       RGB scenes (JPEG)
    semantic/<split>/000000.png ...     uint8 labels: 0 background, 1..C class, 255 ignore
    annotations/instances_<split>.json  COCO instances (RLE masks, category ids 1..C)
    meta/<split>.txt                    image paths relative to the root, one a line
    meta/classes.json                   class names and palettes
    meta/summary.json                   generation settings and counts, written last

Every image is drawn from its own random stream seeded by ``(seed, split, index)``, so the same
seed gives byte-identical files and the validation split does not depend on ``num_train``.
"""
import json
import os
import os.path as osp
import shutil
from typing import Dict, Optional, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util

# (name, OpenCV hue in [0, 180), texture)
_CATEGORIES = (
    ('disc', 0, 'radial'),
    ('square', 110, 'checker'),
    ('triangle', 55, 'stripes'),
    ('star', 28, 'dots'),
    ('ring', 135, 'rings'),
    ('cross', 85, 'grid'),
    ('ellipse', 14, 'speckle'),
    ('hexagon', 162, 'hatch'),
)
CLASSES = tuple(name for name, _, _ in _CATEGORIES)
SEG_CLASSES = ('background', ) + CLASSES
IGNORE_INDEX = 255
SPLITS = ('train', 'val')


def _hsv_to_rgb(hue: float, sat: float, val: float) -> np.ndarray:
    hsv = np.array([[[hue % 180, sat, val]]], dtype=np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


PALETTE = tuple(tuple(int(c) for c in _hsv_to_rgb(hue, 220, 230)) for _, hue, _ in _CATEGORIES)
SEG_PALETTE = ((0, 0, 0), ) + PALETTE

_MIN_OBJECTS, _MAX_OBJECTS = 2, 6
_RADIUS_RANGE = (0.06, 0.30)  # circumradius as a fraction of the image size (log-uniform)
_MIN_VISIBLE_FRACTION = 0.3  # of the object's own area
_MIN_VISIBLE_AREA = 0.002  # of the image area
_JPEG_QUALITY = 95


def _polygon(num_vertices: int, radii, cx: float, cy: float, angle: float) -> np.ndarray:
    theta = angle + np.arange(num_vertices) * 2 * np.pi / num_vertices
    return np.stack([cx + radii * np.cos(theta), cy + radii * np.sin(theta)], axis=1)


def _shape_mask(name: str, size: int, cx: float, cy: float, radius: float, angle: float,
                rng: np.random.Generator) -> np.ndarray:
    """Binary mask (uint8 0/1) of one object drawn on a ``size`` x ``size`` canvas."""
    mask = np.zeros((size, size), np.uint8)
    shift = 4  # sub-pixel vertex precision
    scale = 1 << shift
    centre = (int(round(cx * scale)), int(round(cy * scale)))
    if name in ('disc', 'ring'):
        cv2.circle(mask, centre, int(round(radius * scale)), 1, -1, cv2.LINE_8, shift)
        if name == 'ring':
            inner = radius * rng.uniform(0.45, 0.6)
            cv2.circle(mask, centre, int(round(inner * scale)), 0, -1, cv2.LINE_8, shift)
        return mask
    if name == 'ellipse':
        axes = (int(round(radius * scale)), int(round(radius * rng.uniform(0.4, 0.65) * scale)))
        cv2.ellipse(mask, centre, axes, float(np.degrees(angle)), 0, 360, 1, -1, cv2.LINE_8,
                    shift)
        return mask
    if name == 'cross':
        half = rng.uniform(0.25, 0.35)
        # vertices of a plus sign in units of the radius, rotated by ``angle``
        unit = np.array([(half, 1), (half, half), (1, half), (1, -half), (half, -half),
                         (half, -1), (-half, -1), (-half, -half), (-1, -half), (-1, half),
                         (-half, half), (-half, 1)])
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        points = unit @ rot.T * radius + (cx, cy)
    elif name == 'star':
        radii = np.where(np.arange(10) % 2 == 0, radius, radius * rng.uniform(0.4, 0.5))
        points = _polygon(10, radii, cx, cy, angle)
    else:
        sides = {'triangle': 3, 'square': 4, 'hexagon': 6}[name]
        points = _polygon(sides, radius, cx, cy, angle)
    cv2.fillPoly(mask, [np.round(points * scale).astype(np.int32)], 1, cv2.LINE_8, shift)
    return mask


def _texture(kind: str, u: np.ndarray, v: np.ndarray, radius: float, period: float,
             rng: np.random.Generator) -> np.ndarray:
    """Mixing weight in [0, 1] between an object's dark (0) and bright (1) colour.

    ``u`` and ``v`` are pixel offsets from the object's centre in its rotated frame.
    """
    line = 0.25 * period
    if kind == 'radial':
        return 1 - 0.8 * np.clip(np.hypot(u, v) / radius, 0, 1)
    if kind == 'checker':
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    if kind == 'stripes':
        return (np.sin(2 * np.pi * u / period) > 0).astype(np.float32)
    if kind == 'dots':
        du = u - period * np.round(u / period)
        dv = v - period * np.round(v / period)
        return (np.hypot(du, dv) > 0.3 * period).astype(np.float32)
    if kind == 'rings':
        return (np.sin(2 * np.pi * np.hypot(u, v) / period) > 0).astype(np.float32)
    if kind == 'grid':
        return ((u % period >= line) & (v % period >= line)).astype(np.float32)
    if kind == 'speckle':
        return (rng.random(u.shape) > 0.4).astype(np.float32)
    if kind == 'hatch':
        return (((u + v) % period >= line) & ((u - v) % period >= line)).astype(np.float32)
    raise ValueError(f'unknown texture {kind!r}')


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Float32 RGB background in one of three styles: smooth noise, gradient or stripes."""

    def muted_colour():
        return _hsv_to_rgb(rng.uniform(0, 180), rng.uniform(0, 70), rng.uniform(50, 210))

    style = rng.integers(3)
    if style == 0:  # smooth colour noise: a coarse random grid upsampled
        cells = int(rng.integers(2, 7))
        colours = np.stack([muted_colour() for _ in range(cells * cells)])
        grid = colours.reshape(cells, cells, 3)
        return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    proj = xs * np.cos(angle) + ys * np.sin(angle)
    if style == 1:  # linear gradient across the image
        weight = (proj - proj.min()) / (proj.max() - proj.min())
    else:  # soft stripes
        period = size * rng.uniform(0.05, 0.15)
        weight = 0.5 + 0.5 * np.sin(2 * np.pi * proj / period)
    first, second = muted_colour(), muted_colour()
    return first + weight[..., None] * (second - first)


def _render_scene(size: int, rng: np.random.Generator, class_hues: bool = True,
                  texture_period: Optional[Tuple[float, float]] = None,
                  object_radius: Tuple[float, float] = _RADIUS_RANGE):
    """Draw one scene; returns (RGB uint8 image, instance id map, category id per instance).

    With ``class_hues=False`` every object gets a random hue, so only shape and texture tell the
    categories apart. ``texture_period`` is the (low, high) range, in pixels, of an object's
    texture period; by default it is 5-10 px scaled by ``size / 224``. ``object_radius`` is the
    (low, high) range of an object's circumradius as a fraction of ``size``, drawn log-uniformly.
    """
    canvas = _background(size, rng)
    instance_map = np.zeros((size, size), np.uint8)  # 0 background, k = k-th placed instance
    category_ids, full_areas, visible_areas = [], [], []
    min_area = _MIN_VISIBLE_AREA * size * size
    target = int(rng.integers(_MIN_OBJECTS, _MAX_OBJECTS + 1))
    for _ in range(20 * target):
        if len(category_ids) == target:
            break
        label = int(rng.integers(len(_CATEGORIES)))
        name, hue, texture = _CATEGORIES[label]
        radius = size * np.exp(rng.uniform(*np.log(object_radius)))
        cx, cy = rng.uniform(0.1, 0.9, size=2) * size
        angle = rng.uniform(0, 2 * np.pi)
        mask = _shape_mask(name, size, cx, cy, radius, angle, rng)
        area = int(mask.sum())
        if area < min_area:
            continue
        covered = np.bincount(instance_map[mask.astype(bool)],
                              minlength=len(category_ids) + 1)[1:]
        remaining = np.asarray(visible_areas, dtype=np.int64) - covered
        if np.any(remaining < np.maximum(min_area,
                                         _MIN_VISIBLE_FRACTION * np.asarray(full_areas))):
            continue

        x, y, w, h = cv2.boundingRect(mask)
        ys, xs = np.mgrid[y:y + h, x:x + w].astype(np.float32)
        u = (xs - cx) * np.cos(angle) + (ys - cy) * np.sin(angle)
        v = (ys - cy) * np.cos(angle) - (xs - cx) * np.sin(angle)
        period = (rng.uniform(*texture_period) if texture_period else
                  size / 224 * rng.uniform(5, 10))
        weight = _texture(texture, u, v, radius, period, rng)[..., None]
        hue = hue + rng.uniform(-4, 4) if class_hues else rng.uniform(0, 180)
        bright = _hsv_to_rgb(hue, rng.uniform(170, 255), rng.uniform(190, 255))
        dark = _hsv_to_rgb(hue, rng.uniform(140, 220), rng.uniform(70, 120))
        inside = mask[y:y + h, x:x + w].astype(bool)
        canvas[y:y + h, x:x + w][inside] = (dark + weight * (bright - dark))[inside]

        visible_areas = list(remaining) + [area]
        full_areas.append(area)
        category_ids.append(label + 1)
        instance_map[mask.astype(bool)] = len(category_ids)
    canvas += rng.normal(0, 3, canvas.shape).astype(np.float32)
    image = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    return image, instance_map, category_ids


def _semantic_map(instance_map: np.ndarray, category_ids) -> np.ndarray:
    """Class per pixel, with a thin ignore band where the instance id changes."""
    lookup = np.array([0] + list(category_ids), np.uint8)
    semantic = lookup[instance_map]
    kernel = np.ones((3, 3), np.uint8)
    boundary = cv2.dilate(instance_map, kernel) != cv2.erode(instance_map, kernel)
    semantic[boundary] = IGNORE_INDEX
    return semantic


def _coco_annotations(instance_map: np.ndarray, category_ids, image_id: int,
                      first_ann_id: int) -> list:
    annotations = []
    for index, category_id in enumerate(category_ids, start=1):
        mask = np.asfortranarray((instance_map == index).astype(np.uint8))
        rle = mask_util.encode(mask)
        annotations.append(
            dict(id=first_ann_id + len(annotations), image_id=image_id,
                 category_id=int(category_id),
                 segmentation=dict(size=[int(s) for s in rle['size']],
                                   counts=rle['counts'].decode('ascii')),
                 area=int(mask_util.area(rle)),
                 bbox=[float(c) for c in mask_util.toBbox(rle)], iscrowd=0))
    return annotations


def _write_json(path: str, obj) -> None:
    with open(path, 'w') as f:
        json.dump(obj, f, separators=(',', ':'))


def _generate_split(root: str, split: str, num_images: int, img_size: int, seed: int,
                    class_hues: bool, texture_period: Optional[Tuple[float, float]],
                    object_radius: Tuple[float, float]) -> int:
    split_code = SPLITS.index(split)
    image_dir = osp.join(root, 'images', split)
    semantic_dir = osp.join(root, 'semantic', split)
    for folder in (image_dir, semantic_dir):
        shutil.rmtree(folder, ignore_errors=True)  # drop stale files of a larger earlier run
        os.makedirs(folder)
    images, annotations, listed = [], [], []
    for index in range(num_images):
        rng = np.random.default_rng([seed, split_code, index])
        image, instance_map, category_ids = _render_scene(img_size, rng, class_hues,
                                                            texture_period, object_radius)
        stem = f'{index:06d}'
        cv2.imwrite(osp.join(image_dir, stem + '.jpg'), image[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
        cv2.imwrite(osp.join(semantic_dir, stem + '.png'),
                    _semantic_map(instance_map, category_ids))
        image_id = index + 1
        images.append(dict(id=image_id, file_name=stem + '.jpg', height=img_size, width=img_size))
        annotations += _coco_annotations(instance_map, category_ids, image_id,
                                         len(annotations) + 1)
        listed.append(f'images/{split}/{stem}.jpg')
    categories = [dict(id=i, name=name, supercategory='shape')
                  for i, name in enumerate(CLASSES, start=1)]
    _write_json(
        osp.join(root, 'annotations', f'instances_{split}.json'),
        dict(info=dict(description='mmdense toy scenes', version='1.0'), licenses=[],
             images=images, annotations=annotations, categories=categories))
    with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
        f.writelines(line + '\n' for line in listed)
    return len(annotations)


def generate_toy_scenes(out_dir: str, num_train: int = 600, num_val: int = 100,
                        img_size: int = 224, seed: int = 0, class_hues: bool = True,
                        texture_period: Optional[Tuple[float, float]] = None,
                        object_radius: Optional[Tuple[float, float]] = None) -> Dict:
    """Write the toy-scene dataset under ``out_dir`` and return a summary dict.

    ``class_hues=False`` writes the colour-free variant: objects get random hues, so a category is
    recognisable only by its shape and texture (a test of what features encode beyond colour).
    ``texture_period=(low, high)`` fixes the texture period range in pixels (default: 5-10 px
    scaled by ``img_size / 224``, which leaves small images with 1-3 px textures).
    ``object_radius=(low, high)`` is the range of an object's circumradius as a fraction of
    ``img_size``, drawn log-uniformly (default: 0.06-0.30); larger objects cover more of the
    image (objects still must keep 30 % of their area visible, so fewer may fit).
    Existing ``images/<split>`` and ``semantic/<split>`` folders under ``out_dir`` are replaced.
    The summary (also saved as ``meta/summary.json``) holds the settings, the classes and the
    image and instance counts per split.
    """
    if num_train < 1 or num_val < 0:
        raise ValueError(f'need num_train >= 1 and num_val >= 0, got {num_train}, {num_val}')
    if img_size < 32:
        raise ValueError(f'img_size must be at least 32 pixels, got {img_size}')
    if seed < 0:
        raise ValueError(f'seed must be non-negative, got {seed}')
    if texture_period is not None and not 0 < texture_period[0] <= texture_period[1]:
        raise ValueError(f'texture_period must be (low, high) with 0 < low <= high pixels, '
                         f'got {texture_period}')
    if object_radius is not None and not 0 < object_radius[0] <= object_radius[1] <= 1:
        raise ValueError(f'object_radius must be (low, high) with 0 < low <= high <= 1 (fractions '
                         f'of img_size), got {object_radius}')
    summary_path = osp.join(out_dir, 'meta', 'summary.json')
    if osp.exists(summary_path):
        os.remove(summary_path)  # an interrupted run must not look complete
    for folder in ('annotations', 'meta'):
        os.makedirs(osp.join(out_dir, folder), exist_ok=True)
    _write_json(
        osp.join(out_dir, 'meta', 'classes.json'),
        dict(classes=CLASSES, palette=PALETTE, seg_classes=SEG_CLASSES, seg_palette=SEG_PALETTE,
             ignore_index=IGNORE_INDEX))
    counts = dict(train=num_train, val=num_val)
    summary = dict(root=osp.abspath(out_dir), img_size=img_size, seed=seed,
                   class_hues=class_hues, classes=CLASSES, splits={})
    if texture_period is not None:
        summary['texture_period'] = [float(p) for p in texture_period]
    if object_radius is not None:
        summary['object_radius'] = [float(r) for r in object_radius]
    for split in SPLITS:
        instances = _generate_split(out_dir, split, counts[split], img_size, seed, class_hues,
                                    texture_period, object_radius or _RADIUS_RANGE)
        summary['splits'][split] = dict(images=counts[split], instances=instances)
    _write_json(summary_path, {key: val for key, val in summary.items() if key != 'root'})
    return summary


def toy_scenes_exist(root: str, num_train: Optional[int] = None, num_val: Optional[int] = None,
                     img_size: Optional[int] = None, seed: Optional[int] = None,
                     class_hues: Optional[bool] = None,
                     texture_period: Optional[Tuple[float, float]] = None,
                     object_radius: Optional[Tuple[float, float]] = None) -> bool:
    """Whether ``root`` holds a complete toy-scene set (matching the given settings, if any).

    ``texture_period`` and ``object_radius`` are always compared: ``None`` matches only a set
    drawn with the default size-scaled periods / the default radius range."""
    summary_path = osp.join(root, 'meta', 'summary.json')
    if not osp.isfile(summary_path):
        return False
    with open(summary_path) as f:
        summary = json.load(f)
    summary.setdefault('class_hues', True)  # written before the colour-free variant existed
    wanted = dict(img_size=img_size, seed=seed, class_hues=class_hues)
    if any(value is not None and summary.get(key) != value for key, value in wanted.items()):
        return False
    given_period = None if texture_period is None else [float(p) for p in texture_period]
    if summary.get('texture_period') != given_period:
        return False
    given_radius = None if object_radius is None else [float(r) for r in object_radius]
    if summary.get('object_radius') != given_radius:
        return False
    for split, count in (('train', num_train), ('val', num_val)):
        expected = summary['splits'][split]['images']
        if count is not None and count != expected:
            return False
        list_path = osp.join(root, 'meta', f'{split}.txt')
        if not (osp.isfile(list_path) and osp.isfile(
                osp.join(root, 'annotations', f'instances_{split}.json'))):
            return False
        with open(list_path) as f:
            image_paths = f.read().split()
        if len(image_paths) != expected:
            return False
        for image_path in image_paths:
            stem = osp.splitext(osp.basename(image_path))[0]
            if not (osp.isfile(osp.join(root, image_path))
                    and osp.isfile(osp.join(root, 'semantic', split, stem + '.png'))):
                return False
    return osp.isfile(osp.join(root, 'meta', 'classes.json'))
