"""The demo's pictures: prototype maps, PCA-RGB of the features and a similarity map of a
pretrained model beside a random init of it, and the loss curves of its training runs."""
import os.path as osp

import cv2
import numpy as np
import torch
from matplotlib.figure import Figure

from mmdense.evaluation import extract_features, load_model, load_split
from mmdense.evaluation.prototypes import prototype_assignment
from mmdense.evaluation.visuals import (colorize, heatmap, image_grid, palette, pca_rgb,
                                        similarity_map)
from .demo_scores import texture_data_cfg


def query_point(labels):
    """``(image index, (y, x))``: the innermost pixel (relative coordinates) of the largest
    object in the first image whose class appears as two or more separate objects, so that a
    good similarity map lights up the other one too (else the largest object of image 0).
    ``labels``: ``(N, H, W)`` label maps, 0 background, 255 ignored."""
    fallback = None
    for index, label in enumerate(labels.numpy()):
        for cls in np.unique(label):
            if cls in (0, 255):
                continue
            count, components = cv2.connectedComponents((label == cls).astype(np.uint8))
            sizes = np.bincount(components.ravel())[1:]
            largest = (components == 1 + sizes.argmax()).astype(np.uint8)
            depth = cv2.distanceTransform(largest, cv2.DIST_L2, 3)
            y, x = np.unravel_index(depth.argmax(), depth.shape)
            point = (index, ((y + 0.5) / label.shape[0], (x + 0.5) / label.shape[1]))
            if count - 1 >= 2:
                return point
            if fallback is None or (index == 0 and sizes.max() > fallback[0]):
                fallback = (sizes.max(), point) if index == 0 else fallback
    return fallback[1] if fallback else (0, (0.5, 0.5))


def write_png(rgb, path):
    """Write the ``(H, W, 3)`` uint8 RGB image ``rgb`` to ``path``; return ``path``."""
    if not cv2.imwrite(path, rgb[..., ::-1]):
        raise OSError(f'could not write {path}')
    return path


def draw_pictures(config, checkpoint, data_root, work_dir, device='cpu', num_images=4):
    """Write the demo's PNGs (pretrained beside random init, seed 0) and return their paths:
    ``prototypes.png`` (image | labels | argmax prototype maps), ``features_pca.png`` (first
    three principal components of the backbone's feature map as RGB, fitted over the shown
    images) and ``similarity.png`` (cosine similarity of every feature to one query point)."""
    data_cfg = texture_data_cfg(data_root)
    val = load_split(data_cfg, 'val', max(num_images, 16))
    images = val['images'][:num_images]
    shown = [image.permute(1, 2, 0).numpy() for image in images]
    label_colours = np.concatenate([[[40, 40, 40]], palette(data_cfg['num_classes'] - 1)])
    truth = [colorize(label.numpy(), label_colours) for label in val['labels'][:num_images]]
    models = {}
    for name, ckpt in (('pretrained', checkpoint), ('random init', 'random')):
        torch.manual_seed(0)
        models[name] = load_model(config, ckpt, device, log=lambda *_: None)
    size, paths = 2 * data_cfg['img_size'], {}

    prototype_colours = palette(models['pretrained'].head.num_prototypes)
    maps = {name: prototype_assignment(model, images, channel_order='rgb').numpy()
            for name, model in models.items()}
    rows = [[shown[i], truth[i]] + [colorize(maps[name][i], prototype_colours) for name in maps]
            for i in range(num_images)]
    paths['prototypes'] = write_png(
        image_grid(rows, ['image', 'labels'] + [f'{name} prototypes' for name in maps], size),
        osp.join(work_dir, 'prototypes.png'))

    feats = {name: extract_features(model, images, channel_order='rgb')
             for name, model in models.items()}
    pcas = {name: pca_rgb(f) for name, f in feats.items()}
    rows = [[shown[i]] + [pcas[name][i] for name in pcas] for i in range(num_images)]
    paths['features_pca'] = write_png(
        image_grid(rows, ['image'] + [f'{name} PCA-RGB' for name in pcas], size),
        osp.join(work_dir, 'features_pca.png'))

    index, point = query_point(val['labels'])
    query_image = val['images'][index:index + 1]
    marked = heatmap(np.zeros((2, 2)), size, point)  # only the white circle is kept
    tile = cv2.resize(query_image[0].permute(1, 2, 0).numpy(), (size, size),
                      interpolation=cv2.INTER_NEAREST)
    tile[(marked == 255).all(-1)] = 255
    row = [tile, colorize(val['labels'][index].numpy(), label_colours)]
    for model in models.values():
        query_feats = extract_features(model, query_image, channel_order='rgb')
        row.append(heatmap(similarity_map(query_feats[0], point), size, point))
    paths['similarity'] = write_png(
        image_grid([row], ['image, query', 'labels'] +
                   [f'{name} similarity' for name in models], size),
        osp.join(work_dir, 'similarity.png'))
    return paths


def plot_losses(curves, path):
    """One panel per run of ``curves = {run: {term: [(step, value)]}}``, one line per loss
    term, against the iteration; written to ``path`` (matplotlib's Agg canvas)."""
    fig = Figure(figsize=(5 * len(curves), 3.6))
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for ax, (run, terms) in zip(axes, curves.items()):
        for term, points in terms.items():
            if points:
                ax.plot(*zip(*points), marker='.', label=term)
        ax.set_title(run)
        ax.set_xlabel('iteration')
        ax.set_ylabel('loss')
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
