"""Draw a model's dense features on labelled images as a PNG grid.

    python tools/analysis_tools/visualize_dense.py CONFIG CKPT [--dataset toy] [--split val]
        [--num-images 4] [--img-size S] [--num-clusters K] [--points Y,X ...] [--out-dir DIR]
        [--allow-partial]

One row per image: the image, its ground truth, PCA-to-RGB of the patch features (first three
components over all shown images), the k-means cluster map (K clusters, default the class
count, fitted over all shown images) and one cosine-similarity heatmap per query point (relative
``Y,X`` in [0, 1], marked by a circle; each map stretched to its own min-max, which it prints).
Writes ``DIR/dense_grid.png``. CKPT may be ``random``.
"""
import argparse
import os
import os.path as osp

import cv2

from mmdense.evaluation import (Clustering, MemoryFeatureStore, extract_features,
                                load_dataset_config, load_model, load_split)
from mmdense.evaluation.visuals import (colorize, heatmap, image_grid, palette, pca_rgb,
                                        similarity_map)
from mmdense.utils.cli import run_cli
from mmdense.utils.errors import UserError


def parse_point(text):
    try:
        y, x = (float(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'query point must be "Y,X" in [0, 1], got {text!r}')
    if not (0 <= y <= 1 and 0 <= x <= 1):
        raise argparse.ArgumentTypeError(f'query point {text!r} is outside [0, 1]²')
    return y, x


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', help="checkpoint file, or 'random'")
    parser.add_argument('--dataset', default='toy', help='dataset name or dense-eval config')
    parser.add_argument('--data-root', help="override the dataset's data_root")
    parser.add_argument('--split', default='val')
    parser.add_argument('--num-images', type=int, default=4)
    parser.add_argument('--img-size', type=int, help="override the dataset's img_size")
    parser.add_argument('--num-clusters', type=int, help='default: the number of classes')
    parser.add_argument('--points', type=parse_point, nargs='+',
                        default=[(0.5, 0.5), (0.25, 0.25)], help='query points Y,X')
    parser.add_argument('--tile', type=int, default=160, help='tile size in the grid (px)')
    parser.add_argument('--out-dir', default='work_dirs/dense_vis')
    parser.add_argument('--allow-partial', action='store_true',
                        help='draw even if the checkpoint does not fill the whole backbone')
    return parser.parse_args()


def main():
    args = parse_args()
    data_cfg = load_dataset_config(args.dataset, args.data_root)
    if args.img_size:
        data_cfg['img_size'] = args.img_size
    model = load_model(args.config, args.checkpoint, allow_partial=args.allow_partial)
    data = load_split(data_cfg, args.split, args.num_images)
    feats = extract_features(model, data['images'], channel_order='rgb')  # load_split: RGB
    n, _, h, w = feats.shape
    num_clusters = args.num_clusters or data_cfg['num_classes']
    store = MemoryFeatureStore.from_tensors(feats, data['labels'])
    clusters = Clustering(num_clusters=num_clusters).cluster_maps(store).numpy()
    class_colors, cluster_colors = palette(data_cfg['num_classes']), palette(num_clusters)
    pca = pca_rgb(feats)
    rows = []
    for i in range(n):
        image = data['images'][i].permute(1, 2, 0).numpy()
        row = [image, colorize(data['labels'][i].numpy(), class_colors), pca[i],
               colorize(clusters[i], cluster_colors)]
        for point in args.points:
            sims = similarity_map(feats[i], point)
            print(f'image {i} query {point}: cosine similarity {sims.min():.3f}..{sims.max():.3f}')
            row.append(heatmap(sims, args.tile, point))
        rows.append(row)
    titles = ['image', 'ground truth', 'PCA RGB', f'k-means K={num_clusters}'] + [
        f'sim. to ({y:.2f},{x:.2f})' for y, x in args.points]
    grid = image_grid(rows, titles, args.tile)
    os.makedirs(args.out_dir, exist_ok=True)
    out = osp.join(args.out_dir, 'dense_grid.png')
    if not cv2.imwrite(out, grid[..., ::-1]):
        raise UserError(f'could not write {out} (is its folder writable?)')
    print(f'wrote {out} ({n} images, feature grid {h}x{w})')


if __name__ == '__main__':
    run_cli(main)
