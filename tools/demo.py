"""`make demo`: show what dense pretraining learns on the embedded toy scenes, in minutes.

    python tools/demo.py [--device auto|cpu|cuda] [--schedule cpu|gpu|tiny] [--resume-demo]
                         [--methods all|dino,adclr,...] [--work-dir work_dirs/demo]
                         [--data-root data/toy_textures]

1. data: the colour-free toy textures (``tools/misc/make_toy_scenes.py --img-size 96
   --random-hues --texture-period 4 8``): every object gets a random hue, so the 8 classes differ
   only by shape and texture, and a random network's colour features do not give them away;
2. SlotCon pretraining of a small ResNet (``configs/demo/slotcon_r18-w16_toy-textures.py``);
3. the score of what it learnt against random-init draws of the same model (same evaluation):
   its teacher's prototype assignment matched one-to-one to the 9 labels (Hungarian) and
   many-to-one (majority label per prototype over the probe's train images;
   ``mmdense.evaluation.prototypes``), k-means on its frozen features (K = 9, Hungarian), and
   linear / kNN probes; the margin of the pretrained score over the best draw in standard
   deviations of the draws;
4. the CoTAP recipe end to end, briefly: DINO ViT-S/16, neighbour pairs by the DINO teacher,
   CoTAP post-training from it (per-term losses);
5. pictures (prototype maps, PCA-RGB of the features, a similarity map; pretrained beside
   random init), loss curves and ``<work-dir>/report.md`` embedding them with the numbers.

Schedules: ``cpu`` (the default without CUDA: 6 SlotCon epochs, the lr cosine ending with the
run, kNN and prototype scores), ``gpu`` (the default with ``--device cuda``: the same steps, 20x
the SlotCon epochs, longer DINO / CoTAP runs, and the linear probe and k-means too; not yet run
on a GPU), and ``tiny`` (the gpu schedule on 48 images, for tests). Without ``--resume-demo``
the work dir and the data are written afresh; with it, finished steps (data, checkpoints) are
reused. Every step's wall and CPU time go into the report. The console shows one line per step
(a progress bar while it runs), the table and the report's path; the programs it runs write to
``console.log`` in their work dirs.

``--methods all`` (or comma-separated names; not part of ``make demo``) runs in place of the
demo: on the same toy textures, each of DINO, ADCLR, iBOT, CoTAP, SlotCon and DSC is pretrained
with its demo config (:data:`METHOD_CONFIGS`: ViT-Ti/16 for the ViT methods, CoTAP post-training
DINO's teacher on neighbour pairs it finds; the SlotCon demo's R18-w16 for SlotCon and DSC), and
the frozen features of its transfer backbone are scored by kNN (k=10) on the val images against
``random_draws`` random inits of the same model (``mmdense.evaluation.against_random``). The
table (margins in std of the draws, loss first → last, wall and CPU seconds per method, the load
average) goes to the console and ``<work-dir>/methods.md``, every draw to ``methods.json``; the
``tiny`` schedule trains each method 1 epoch (2 iterations for CoTAP) on 48 images.
"""
import argparse
import json
import os
import os.path as osp
import resource
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Optional

import torch

from mmdense.utils.console import StepLine, run_logged, training_progress

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SLOTCON_CONFIG = 'configs/demo/slotcon_r18-w16_toy-textures.py'
DINO_CONFIG = 'configs/dino/vit-s_toy.py'
COTAP_CONFIG = 'configs/cotap/vit-s_toy.py'
COTAP_TERMS = ('loss_patch', 'loss_cls', 'loss_cross_patch', 'loss_cross_cls')
SLOTCON_TERMS = ('loss', 'loss_group', 'loss_slot')
SCORES = ('knn', 'linear', 'cluster', 'prototypes', 'prototypes_majority')
SCORE_NAMES = dict(prototypes='prototypes, one-to-one (Hungarian)',
                   prototypes_majority='prototypes, many-to-one (majority)',
                   cluster='k-means K=9, Hungarian', linear='linear probe', knn='kNN (k=10)')
# --methods: each method's demo config, in run order (CoTAP post-trains from DINO's teacher)
METHOD_CONFIGS = {
    'SlotCon': SLOTCON_CONFIG,
    'DSC': 'configs/demo/dsc_r18-w16_toy-textures.py',
    'DINO': 'configs/demo/dino_vit-ti_toy-textures.py',
    'CoTAP': 'configs/demo/cotap_vit-ti_toy-textures.py',
    'ADCLR': 'configs/demo/adclr_vit-ti_toy-textures.py',
    'iBOT': 'configs/demo/ibot_vit-ti_toy-textures.py',
}
METHOD_PROTOCOLS = ('knn', )
TEXTURE_DATA = dict(img_size=96, class_hues=False, texture_period=(4.0, 8.0))


@dataclass(frozen=True)
class Schedule:
    """How long each step runs; everything else is the same in every schedule."""
    num_train: int  # toy texture images written (SlotCon trains on all of them)
    num_val: int  # validation images (all scored)
    probe_train: int  # training images the linear and kNN probes are fit on
    slotcon_epochs: int
    slotcon_batch: int
    dino_images: int  # DINO ViT-S/16 runs one epoch over this many images, batch 8
    cotap_iters: int  # CoTAP post-training iterations, 4 pairs each
    random_draws: int
    num_workers: int
    scores: tuple  # of SCORES; the linear probe and k-means cost about 1 min a model on 2 cores
    # --methods: the length of every method's run (None: its demo config's own)
    method_epochs: Optional[int] = None
    method_iters: Optional[int] = None
    method_batch: Optional[int] = None  # (None: each demo config's own)


SCHEDULES = dict(
    cpu=Schedule(num_train=600, num_val=100, probe_train=200, slotcon_epochs=6, slotcon_batch=32,
                 dino_images=40, cotap_iters=5, random_draws=5, num_workers=2,
                 scores=('knn', 'prototypes', 'prototypes_majority')),
    gpu=Schedule(num_train=600, num_val=100, probe_train=200, slotcon_epochs=120,
                 slotcon_batch=32, dino_images=600, cotap_iters=100, random_draws=5,
                 num_workers=8, scores=SCORES),
)
# The gpu schedule's steps and scores at test size, on any device: the test suite runs it on the
# CPU, which is as far as the gpu schedule's code has been run (no GPU was available).
SCHEDULES['tiny'] = replace(SCHEDULES['gpu'], num_train=48, num_val=8, probe_train=16,
                            slotcon_epochs=1, slotcon_batch=8, dino_images=40, cotap_iters=2,
                            random_draws=2, num_workers=0, method_epochs=1, method_iters=2,
                            method_batch=8)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default='auto',
                        help='auto: cuda when available')
    parser.add_argument('--schedule', choices=sorted(SCHEDULES),
                        help='default: gpu on cuda, cpu otherwise')
    parser.add_argument('--resume-demo', action='store_true',
                        help='reuse the data and the finished training runs of an earlier demo')
    parser.add_argument('--methods', type=parse_methods,
                        help="'all' or comma-separated names of " + ', '.join(METHOD_CONFIGS) +
                        ': pretrain each on the toy textures and score its kNN against random '
                        'inits of the same model, instead of the demo (CoTAP brings DINO, '
                        'whose teacher it starts from)')
    parser.add_argument('--work-dir',
                        help='default: work_dirs/demo, work_dirs/demo_methods with --methods')
    parser.add_argument('--data-root', default='data/toy_textures')
    args = parser.parse_args(argv)
    if args.device == 'auto':
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    args.schedule = args.schedule or ('gpu' if args.device == 'cuda' else 'cpu')
    args.work_dir = args.work_dir or ('work_dirs/demo_methods' if args.methods else
                                      'work_dirs/demo')
    return args


def parse_methods(value):
    """``'all'`` or comma-separated method names (any case) → the names in the order of
    :data:`METHOD_CONFIGS`; CoTAP brings DINO along (it post-trains DINO's teacher)."""
    if value == 'all':
        return list(METHOD_CONFIGS)
    by_lower = {name.lower(): name for name in METHOD_CONFIGS}
    names = set()
    for item in value.split(','):
        if item.strip().lower() not in by_lower:
            raise argparse.ArgumentTypeError(
                f'unknown method {item!r}: choose all or names of ' + ', '.join(METHOD_CONFIGS))
        names.add(by_lower[item.strip().lower()])
    if 'CoTAP' in names:
        names.add('DINO')
    return [name for name in METHOD_CONFIGS if name in names]


# --- scores ----------------------------------------------------------------------------------
def texture_data_cfg(data_root):
    """The dense-evaluation dataset config of the toy set at ``data_root`` (96 px)."""
    from mmdense.evaluation import load_dataset_config
    data_cfg = load_dataset_config('toy', data_root)
    data_cfg['img_size'] = TEXTURE_DATA['img_size']
    return data_cfg


def score_model(model, train, val, data_cfg, which=SCORES):
    """mIoU of each score named in ``which`` (of :data:`SCORES`) for one model, and the ceiling
    the feature grid sets (``grid_ceiling``)."""
    from mmdense.evaluation import grid_majority_scores, run_protocol
    from mmdense.evaluation.prototypes import prototype_assignment, prototype_scores
    common = dict(num_classes=data_cfg['num_classes'], ignore_index=data_cfg['ignore_index'])
    scores = {}
    if {'prototypes', 'prototypes_majority'} & set(which):
        matched = prototype_scores(model, train, val, channel_order='rgb', **common)
        scores.update(prototypes=matched['hungarian']['mIoU'],
                      prototypes_majority=matched['majority']['mIoU'])
    for score in which:
        if score not in scores:
            scores[score] = run_protocol(model, score, train, val, batch_size=16,
                                         **common)['mIoU']
    scores = {score: scores[score] for score in which}
    grid = prototype_assignment(model, val['images'][:1], channel_order='rgb').shape[-2:]
    scores['grid_ceiling'] = grid_majority_scores(val['labels'], grid, **common)['mIoU']
    return scores


def evaluate_models(config, models, data_root, num_train, num_val, device='cpu',
                    which=SCORES, progress=None):
    """``{name: scores}`` for ``models = [(name, checkpoint or 'random', seed), ...]``, all on
    the same ``num_train`` / ``num_val`` images (:func:`mmdense.evaluation.against_random.
    score_models`: the seed picks a random init's draw). ``progress(done, total)`` is called
    after each model."""
    from mmdense.evaluation import load_split
    from mmdense.evaluation.against_random import score_models
    data_cfg = texture_data_cfg(data_root)
    train = load_split(data_cfg, 'train', num_train)
    val = load_split(data_cfg, 'val', num_val)
    return score_models(config, models,
                        lambda model: score_model(model, train, val, data_cfg, which), device,
                        progress)


def summarise(results):
    """Per score of :data:`SCORES` that was run: the pretrained value, every random draw, their
    mean / std / max and the margins (:func:`mmdense.evaluation.against_random.margins`)."""
    from mmdense.evaluation.against_random import margins
    return margins(results, [s for s in SCORES if s in results['pretrained']])


def format_summary(summary, times):
    lines = ['[demo] ===== what SlotCon pretraining learnt vs random init (val mIoU) =====',
             '[demo] score                              | pretrained | random draws (mean ± std,'
             ' max)          | margin over max']
    for score, row in summary.items():
        margin = row['margin_over_max_std']
        lines.append(f'[demo] {SCORE_NAMES[score]:<34} | {row["pretrained"]:.4f}     | '
                     f'{row["mean"]:.4f} ± {row["std"]:.4f}, max {row["max"]:.4f}    | '
                     + ('n/a' if margin is None else f'{margin:+.1f} std'))
    lines += [f'[demo] time: {name} {t["wall"]:.0f} s wall, {t["cpu"]:.0f} s CPU'
              for name, t in times.items()]
    return '\n'.join(lines)


# --- pictures --------------------------------------------------------------------------------
def query_point(labels, instances=None):
    """``(image index, (y, x))``: the innermost pixel (relative coordinates) of the largest
    object in the first image whose class appears as two or more separate objects, so that a
    good similarity map lights up the other one too (else the largest object of image 0)."""
    import cv2
    import numpy as np
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


def draw_pictures(config, checkpoint, data_root, work_dir, device='cpu', num_images=4):
    """Write the demo's PNGs (pretrained beside random init, seed 0) and return their paths:
    ``prototypes.png`` (image | labels | argmax prototype maps), ``features_pca.png`` (first
    three principal components of the backbone's feature map as RGB, fitted over the shown
    images) and ``similarity.png`` (cosine similarity of every feature to one query point)."""
    import cv2
    import numpy as np
    from mmdense.evaluation import extract_features, load_model, load_split
    from mmdense.evaluation.prototypes import prototype_assignment
    from mmdense.evaluation.visuals import (colorize, heatmap, image_grid, palette, pca_rgb,
                                            similarity_map)
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
    paths['prototypes'] = _write_png(
        image_grid(rows, ['image', 'labels'] + [f'{name} prototypes' for name in maps], size),
        osp.join(work_dir, 'prototypes.png'))

    feats = {name: extract_features(model, images, channel_order='rgb')
             for name, model in models.items()}
    pcas = {name: pca_rgb(f) for name, f in feats.items()}
    rows = [[shown[i]] + [pcas[name][i] for name in pcas] for i in range(num_images)]
    paths['features_pca'] = _write_png(
        image_grid(rows, ['image'] + [f'{name} PCA-RGB' for name in pcas], size),
        osp.join(work_dir, 'features_pca.png'))

    index, point = query_point(val['labels'], val.get('instances'))
    query_image = val['images'][index:index + 1]
    marked = heatmap(np.zeros((2, 2)), size, point)  # only the white circle is kept
    tile = cv2.resize(query_image[0].permute(1, 2, 0).numpy(), (size, size),
                      interpolation=cv2.INTER_NEAREST)
    tile[(marked == 255).all(-1)] = 255
    row = [tile, colorize(val['labels'][index].numpy(), label_colours)]
    for model in models.values():
        query_feats = extract_features(model, query_image, channel_order='rgb')
        row.append(heatmap(similarity_map(query_feats[0], point), size, point))
    paths['similarity'] = _write_png(
        image_grid([row], ['image, query', 'labels'] +
                   [f'{name} similarity' for name in models], size),
        osp.join(work_dir, 'similarity.png'))
    return paths


def _write_png(rgb, path):
    import cv2
    if not cv2.imwrite(path, rgb[..., ::-1]):
        raise OSError(f'could not write {path}')
    return path


def cpu_seconds():
    """CPU time (user + sys) of this process and of its finished subprocesses (the training runs
    and their data-loader workers): on a machine shared with other jobs it measures the demo's
    own work, which wall time does not."""
    own, children = (resource.getrusage(who)
                     for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# --- curves and report -----------------------------------------------------------------------
def read_scalars(work_dir):
    """Training records of MMEngine's ``vis_data/scalars.json`` (latest run under ``work_dir``)."""
    runs = sorted(d for d in os.listdir(work_dir)
                  if osp.isfile(osp.join(work_dir, d, 'vis_data', 'scalars.json')))
    if not runs:
        raise FileNotFoundError(f'no vis_data/scalars.json under {work_dir}: did training log?')
    with open(osp.join(work_dir, runs[-1], 'vis_data', 'scalars.json')) as f:
        return [json.loads(line) for line in f if line.strip()]


def loss_curve(records, key):
    """``[(step, value)]``, one per logged step holding ``key``."""
    by_step = {}
    for record in records:
        if key in record:
            by_step.setdefault(record['step'], record[key])
    return sorted(by_step.items())


def read_curves(slotcon_dir, dino_dir, cotap_dir):
    """``{run: {term: [(step, value)]}}`` of the three training runs."""
    runs = dict(SlotCon=(slotcon_dir, SLOTCON_TERMS), DINO=(dino_dir, ('loss', )),
                CoTAP=(cotap_dir, COTAP_TERMS))
    curves = {}
    for run, (work_dir, terms) in runs.items():
        records = read_scalars(work_dir)
        curves[run] = {term: loss_curve(records, term) for term in terms}
    return curves


def plot_losses(curves, path):
    """One panel per run, one line per loss term, against the iteration (matplotlib)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6))
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
    plt.close(fig)
    return path


def write_report(path, args, schedule, summary, results, curves, pictures, times):
    """``report.md``: the margin table with every draw, the pictures, the loss curves, timings."""
    rel = {name: osp.relpath(p, osp.dirname(path)) for name, p in pictures.items()}
    draws = [name for name in results if name != 'pretrained']
    lines = [
        '# mmdense demo report', '',
        f'Schedule `{args.schedule}` on `{args.device}`; data `{args.data_root}` (colour-free toy '
        f'textures: {schedule.num_train} train / {schedule.num_val} val scenes, 96 px, random '
        'hue per object, 8 classes that differ only by shape and texture).', '',
        f'SlotCon (`{SLOTCON_CONFIG}`), {schedule.slotcon_epochs} epochs at batch '
        f'{schedule.slotcon_batch}, against {len(draws)} random initialisations of the same model '
        '(torch seeds 0..), all scored the same way on the val images: the teacher\'s frozen '
        f'features, kNN / linear probes fit on {schedule.probe_train} train images; k-means and '
        'the prototype assignment matched to the labels by the Hungarian algorithm (one-to-one), '
        'and the prototypes also many-to-one: each takes the majority label of its pixels on '
        f'those {schedule.probe_train} train images.', '',
        '## Pretrained vs random init (val mIoU)', '',
        '| score | pretrained | ' + ' | '.join(draws) +
        ' | draws mean ± std | margin over best draw | over mean |',
        '|---|---|' + '---|' * len(draws) + '---|---|---|',
    ]
    for score, row in summary.items():
        over_max, over_mean = row['margin_over_max_std'], row['margin_over_mean_std']
        lines.append(
            f'| {SCORE_NAMES[score]} | **{row["pretrained"]:.4f}** | ' +
            ' | '.join(f'{value:.4f}' for value in row['draws']) +
            f' | {row["mean"]:.4f} ± {row["std"]:.4f} | ' +
            ('n/a' if over_max is None else f'{row["pretrained"] - row["max"]:+.4f} = '
             f'{over_max:+.1f} std') + ' | ' +
            ('n/a' if over_mean is None else f'{over_mean:+.1f} std') + ' |')
    ceiling = results['pretrained'].get('grid_ceiling')
    if ceiling is not None:
        lines += ['', f'Ceiling the feature grid sets (majority label per cell): mIoU '
                  f'{ceiling:.4f}. Chance-level mIoU is about 1/9 of the background IoU.']
    lines += [
        '', '## What the pictures show', '',
        'Prototype maps: each colour is one of the 16 SlotCon prototypes, the argmax over the '
        'teacher\'s projected feature map (12 x 12 cells at 96 px).', '',
        f'![prototype maps]({rel["prototypes"]})', '',
        'PCA-RGB: the first three principal components of the backbone\'s feature maps of these '
        'images, as colour; similar features get similar colours.', '',
        f'![PCA-RGB]({rel["features_pca"]})', '',
        'Similarity: cosine similarity of every feature cell to the one under the white circle '
        '(red: most similar).', '',
        f'![similarity]({rel["similarity"]})', '',
        '## Loss curves', '',
        f'![losses]({rel["losses"]})', '',
    ]
    for run, terms in curves.items():
        for term, points in terms.items():
            if points:
                lines.append(f'- {run} `{term}`: {points[0][1]:.3f} at iteration {points[0][0]} '
                             f'→ {points[-1][1]:.3f} at iteration {points[-1][0]}')
    lines += ['', '## Time', '',
              'Wall and CPU seconds (user + sys of the demo and its subprocesses). CPU time '
              'counts only the demo\'s own work, so other jobs on the machine change it far less '
              'than the wall time; with 2 cores to itself, the demo\'s wall time lies roughly '
              'between half of it (both cores busy) and all of it (one core busy).',
              '', '| step | wall s | CPU s |', '|---|---|---|']
    lines += [f'| {name} | {t["wall"]:.0f} | {t["cpu"]:.0f} |' for name, t in times.items()]
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return path


class Demo:
    """The demo's steps, sharing the work dir, the schedule and the timings. Each step is one
    line on the console (a progress bar while it runs); the programs it runs write to
    ``console.log`` in their work dirs."""
    num_steps = 5

    def __init__(self, args):
        self.args = args
        self.schedule = SCHEDULES[args.schedule]
        self.work_dir = args.work_dir
        self.times = {}
        self.step, self.note = None, ''
        self.env = dict(os.environ)
        if args.device == 'cpu':
            self.env['CUDA_VISIBLE_DEVICES'] = ''  # MMEngine would pick a visible GPU

    def path(self, *parts):
        return osp.join(self.work_dir, *parts)

    def run(self, cmd, work_dir, max_epochs=None):
        """``cmd`` with its output in ``<work_dir>/console.log``; an MMEngine training run's
        logged iterations move the step's progress bar."""
        def on_line(line):
            progress = training_progress(line, max_epochs)
            if progress and self.step is not None:
                self.step.update(*progress)
        run_logged(cmd, osp.join(work_dir, 'console.log'), on_line, cwd=ROOT, env=self.env)

    def timed(self, name, fn, *args):
        """``fn(*args)`` as one console step, recording its wall and CPU seconds under
        ``name``."""
        self.step = StepLine(f'{len(self.times) + 1}/{self.num_steps} {name}')
        self.note = ''
        wall, cpu = time.time(), cpu_seconds()
        try:
            result = fn(*args)
        except BaseException:
            self.step.finish('failed')
            raise
        self.times[name] = dict(wall=time.time() - wall, cpu=cpu_seconds() - cpu)
        self.step.finish(f'{self.times[name]["wall"]:.0f} s wall, {self.times[name]["cpu"]:.0f} '
                         's CPU' + (f' ({self.note})' if self.note else ''))
        return result

    def train(self, config, work_dir, checkpoint, options, max_epochs=None):
        """``tools/train.py`` unless ``--resume-demo`` finds ``checkpoint`` already written."""
        if self.args.resume_demo and osp.isfile(checkpoint):
            self.note = f'reusing {checkpoint}'
            return
        shutil.rmtree(work_dir, ignore_errors=True)
        self.run([sys.executable, 'tools/train.py', config, '--work-dir', work_dir,
                  '--cfg-options'] + options, work_dir, max_epochs)

    # --- steps -------------------------------------------------------------------------------
    def make_data(self):
        from mmdense.datasets.toy_scenes import generate_toy_scenes, toy_scenes_exist
        settings = dict(TEXTURE_DATA, num_train=self.schedule.num_train,
                        num_val=self.schedule.num_val)
        root = self.args.data_root
        if self.args.resume_demo and toy_scenes_exist(root, **settings):
            self.note = f'reusing the toy textures in {root}'
            return
        generate_toy_scenes(root, **settings)
        self.note = f'{settings["num_train"]} + {settings["num_val"]} scenes in {root}'


    def pretrain_slotcon(self):
        s = self.schedule
        work_dir = self.path('pretrain_slotcon')
        checkpoint = osp.join(work_dir, f'epoch_{s.slotcon_epochs}.pth')
        warmup = min(1, s.slotcon_epochs / 2)
        self.train(SLOTCON_CONFIG, work_dir, checkpoint, [
            f'train_dataloader.dataset.data_root={self.args.data_root}',
            f'train_dataloader.batch_size={s.slotcon_batch}',
            f'train_dataloader.num_workers={s.num_workers}',
            f'train_dataloader.persistent_workers={s.num_workers > 0}',
            f'train_cfg.max_epochs={s.slotcon_epochs}',
            f'param_scheduler.0.end={warmup}',
            f'param_scheduler.1.begin={warmup}',
            f'param_scheduler.1.T_max={s.slotcon_epochs - warmup}',
            f'param_scheduler.1.end={s.slotcon_epochs}',
            f'default_hooks.checkpoint.interval={s.slotcon_epochs}',
        ], max_epochs=s.slotcon_epochs)
        return checkpoint

    def cotap_recipe(self):
        """DINO ViT-S/16 → neighbour pairs by its teacher → CoTAP post-training from it."""
        s, root = self.schedule, self.args.data_root
        workers = [f'train_dataloader.num_workers={s.num_workers}',
                   f'train_dataloader.persistent_workers={s.num_workers > 0}',
                   'default_hooks.logger.interval=1']
        dino_dir = self.path('pretrain_dino')
        dino_ckpt = osp.join(dino_dir, 'epoch_1.pth')
        self.train(DINO_CONFIG, dino_dir, dino_ckpt, [
            f'train_dataloader.dataset.data_root={root}',
            f'train_dataloader.dataset.indices={s.dino_images}'] + workers, max_epochs=1)
        neighbours = self.path('toy_neighbours.json')
        if not (self.args.resume_demo and osp.isfile(neighbours)):
            self.run([sys.executable, 'tools/misc/build_nn_pairs.py', COTAP_CONFIG, dino_ckpt,
                      '--out', neighbours, '--topk', '5', '--img-size', '96', '--data-root',
                      root, '--num-workers', str(s.num_workers), '--device', self.args.device],
                     self.path('build_nn_pairs'))
        cotap_dir = self.path('pretrain_cotap')
        cotap_ckpt = osp.join(cotap_dir, f'iter_{s.cotap_iters}.pth')
        self.train(COTAP_CONFIG, cotap_dir, cotap_ckpt, [
            f'train_dataloader.dataset.dataset.data_root={root}',
            f'train_dataloader.dataset.neighbours_file={neighbours}',
            f'model.backbone_checkpoint.path={dino_ckpt}',
            f'train_cfg.max_iters={s.cotap_iters}',
            f'default_hooks.checkpoint.interval={s.cotap_iters}'] + workers)
        return dino_dir, cotap_dir

    def evaluate(self, checkpoint):
        """Scores of the pretrained checkpoint and of ``random_draws`` random inits."""
        models = [('pretrained', checkpoint, 0)] + [
            (f'random init {seed}', 'random', seed) for seed in range(self.schedule.random_draws)]
        results = evaluate_models(SLOTCON_CONFIG, models, self.args.data_root,
                                  self.schedule.probe_train, self.schedule.num_val,
                                  self.args.device, self.schedule.scores, self.step.update)
        with open(self.path('scores.json'), 'w') as f:
            json.dump(results, f, indent=2)
        return results


class MethodsDemo(Demo):
    """``--methods``: the toy textures, then per method its pretraining run (its demo config,
    :data:`METHOD_CONFIGS`) and its kNN score against ``random_draws`` random inits of the same
    model (:func:`mmdense.evaluation.against_random.score_against_random_init`); CoTAP's run
    starts from DINO's checkpoint, on neighbour pairs found by DINO's teacher."""

    def __init__(self, args):
        super().__init__(args)
        self.num_steps = 1 + 2 * len(args.methods) + ('CoTAP' in args.methods)
        self.checkpoints = {}
        self.splits = None

    def run_length(self, config):
        """``('epoch' or 'iter', length)`` of ``config``'s training run in this schedule."""
        from mmengine.config import Config
        train_cfg = Config.fromfile(osp.join(ROOT, config)).train_cfg
        if 'max_iters' in train_cfg:
            return 'iter', self.schedule.method_iters or train_cfg.max_iters
        return 'epoch', self.schedule.method_epochs or train_cfg.max_epochs

    def pretrain(self, method):
        s, config = self.schedule, METHOD_CONFIGS[method]
        unit, length = self.run_length(config)
        work_dir = self.path(f'pretrain_{method.lower()}')
        checkpoint = osp.join(work_dir, f'{unit}_{length}.pth')
        dataset = 'train_dataloader.dataset.' + ('dataset.' if method == 'CoTAP' else '')
        options = [f'{dataset}data_root={self.args.data_root}',
                   f'train_dataloader.num_workers={s.num_workers}',
                   f'train_dataloader.persistent_workers={s.num_workers > 0}',
                   f'train_cfg.max_{unit}s={length}',
                   f'default_hooks.checkpoint.interval={length}']
        if s.method_batch:  # tiny: 6 iterations an epoch, so a warm-up of 0.2 epochs is one
            options.append(f'train_dataloader.batch_size={s.method_batch}')
        if s.method_epochs or s.method_iters:
            options.append('default_hooks.logger.interval=1')
        if method == 'CoTAP':
            options += [f'train_dataloader.dataset.neighbours_file={self.neighbours_file()}',
                        f'model.backbone_checkpoint.path={self.checkpoints["DINO"]}']
        self.train(config, work_dir, checkpoint, options,
                   max_epochs=length if unit == 'epoch' else None)
        self.checkpoints[method] = checkpoint
        return checkpoint

    def neighbours_file(self):
        return self.path('toy_neighbours.json')

    def build_pairs(self):
        """CoTAP's neighbour pairs: the 5 nearest train images by DINO's teacher."""
        if self.args.resume_demo and osp.isfile(self.neighbours_file()):
            self.note = f'reusing {self.neighbours_file()}'
            return
        self.run([sys.executable, 'tools/misc/build_nn_pairs.py', METHOD_CONFIGS['CoTAP'],
                  self.checkpoints['DINO'], '--out', self.neighbours_file(), '--topk', '5',
                  '--img-size', '96', '--data-root', self.args.data_root, '--num-workers',
                  str(self.schedule.num_workers), '--device', self.args.device],
                 self.path('build_nn_pairs'))

    def score(self, method):
        """kNN val mIoU of the method's checkpoint and of ``random_draws`` random inits."""
        from mmdense.evaluation import load_split
        from mmdense.evaluation.against_random import score_against_random_init
        data_cfg = texture_data_cfg(self.args.data_root)
        if self.splits is None:
            self.splits = (load_split(data_cfg, 'train', self.schedule.probe_train),
                           load_split(data_cfg, 'val', self.schedule.num_val))
        return score_against_random_init(
            METHOD_CONFIGS[method], self.checkpoints[method], *self.splits,
            num_classes=data_cfg['num_classes'], ignore_index=data_cfg['ignore_index'],
            num_draws=self.schedule.random_draws, protocols=METHOD_PROTOCOLS,
            device=self.args.device, progress=self.step.update)

    def losses(self, method):
        """``{term: (first, last)}`` of every logged loss term of the method's run."""
        records = read_scalars(self.path(f'pretrain_{method.lower()}'))
        terms = sorted({key for record in records for key in record if key.startswith('loss')})
        curves = {term: loss_curve(records, term) for term in terms}
        return {term: (points[0][1], points[-1][1]) for term, points in curves.items() if points}


def method_table(evidence):
    """Markdown rows, one per method: kNN of the pretrained model and of every draw, the margins,
    the grid ceiling, the loss and the wall / CPU seconds of pretraining and of scoring."""
    lines = ['| method | config | pretrained kNN | random draws | draws mean ± std | '
             'margin over best draw | over mean | grid ceiling | loss first → last | '
             'pretrain wall / CPU s | scoring wall / CPU s |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for method, row in evidence.items():
        knn, over_max = row['margins']['knn'], row['margins']['knn']['margin_over_max_std']
        loss = row['losses'].get('loss')
        pretrain, scoring = row['times']['pretrain'], row['times']['score']
        lines.append(
            f'| {method} | `{osp.basename(row["config"])}` | **{knn["pretrained"]:.4f}** | ' +
            ', '.join(f'{value:.4f}' for value in knn['draws']) +
            f' | {knn["mean"]:.4f} ± {knn["std"]:.4f} | ' +
            ('n/a' if over_max is None else f'{knn["pretrained"] - knn["max"]:+.4f} = '
             f'{over_max:+.1f} std') + ' | ' +
            ('n/a' if over_max is None else f'{knn["margin_over_mean_std"]:+.1f} std') +
            f' | {row["grid_ceiling"]:.4f} | ' +
            ('—' if loss is None else f'{loss[0]:.3f} → {loss[1]:.3f}') +
            f' | {pretrain["wall"]:.0f} / {pretrain["cpu"]:.0f} | '
            f'{scoring["wall"]:.0f} / {scoring["cpu"]:.0f} |')
    return lines


def main_methods(args):
    """``--methods``: every named method pretrained and scored against random inits; the table
    goes to the console, ``<work-dir>/methods.md`` and ``methods.json`` (every draw, every loss
    term's first and last value, the times and the load average)."""
    from mmdense.evaluation.against_random import margins
    demo = MethodsDemo(args)
    if not args.resume_demo:
        shutil.rmtree(args.work_dir, ignore_errors=True)
    os.makedirs(args.work_dir, exist_ok=True)
    start, start_cpu, load_start = time.time(), cpu_seconds(), os.getloadavg()
    print(f'[demo] methods {", ".join(args.methods)}, schedule {args.schedule} on {args.device}')
    print(f'[demo] the training runs log to console.log in their work dirs under {args.work_dir}')
    demo.timed('toy textures', demo.make_data)
    evidence = {}
    for method in args.methods:
        if method == 'CoTAP':
            demo.timed('CoTAP neighbour pairs (DINO teacher)', demo.build_pairs)
        demo.timed(f'{method} pretraining', demo.pretrain, method)
        results = demo.timed(f'{method} vs random init', demo.score, method)
        evidence[method] = dict(
            config=METHOD_CONFIGS[method], checkpoint=demo.checkpoints[method], results=results,
            margins=margins(results, METHOD_PROTOCOLS),
            grid_ceiling=results['pretrained']['grid_ceiling'], losses=demo.losses(method),
            times=dict(pretrain=demo.times[f'{method} pretraining'],
                       score=demo.times[f'{method} vs random init']))
        total = dict(wall=time.time() - start, cpu=cpu_seconds() - start_cpu)
        load = dict(start=load_start, end=os.getloadavg(), cpus=os.cpu_count())
        with open(demo.path('methods.json'), 'w') as f:  # after each method: a cut run keeps them
            json.dump(dict(schedule=asdict(demo.schedule), device=args.device, evidence=evidence,
                           total=total, load_average=load), f, indent=2)
    table = method_table(evidence)
    footer = (f'Total {total["wall"]:.0f} s wall, {total["cpu"]:.0f} s CPU on {load["cpus"]} '
              f'CPUs; 1-minute load average {load["start"][0]:.1f} at the start, '
              f'{load["end"][0]:.1f} at the end.')
    with open(demo.path('methods.md'), 'w') as f:
        f.write('\n'.join(table + ['', footer]) + '\n')
    print('[demo] ===== kNN (k=10) val mIoU: each method vs random inits of its model =====')
    print('\n'.join(f'[demo] {line}' for line in table))
    print(f'[demo] {footer}')
    print(f'[demo] table and every draw: {demo.path("methods.md")}, {demo.path("methods.json")}')


def main(argv=None):
    args = parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('error: --device cuda, but torch sees no CUDA device')
    if args.methods:
        return main_methods(args)
    demo = Demo(args)
    if not args.resume_demo:
        shutil.rmtree(args.work_dir, ignore_errors=True)
    os.makedirs(args.work_dir, exist_ok=True)
    start, start_cpu = time.time(), cpu_seconds()
    print(f'[demo] schedule {args.schedule} on {args.device}: {asdict(demo.schedule)}')
    print(f'[demo] the training runs log to console.log in their work dirs under {args.work_dir}')
    demo.timed('toy textures', demo.make_data)
    checkpoint = demo.timed('SlotCon pretraining', demo.pretrain_slotcon)
    results = demo.timed('scores vs random init', demo.evaluate, checkpoint)
    dino_dir, cotap_dir = demo.timed('CoTAP recipe (DINO, pairs, CoTAP)', demo.cotap_recipe)
    pictures = demo.timed('pictures', draw_pictures, SLOTCON_CONFIG, checkpoint,
                          args.data_root, args.work_dir, args.device)
    curves = read_curves(demo.path('pretrain_slotcon'), dino_dir, cotap_dir)
    pictures['losses'] = plot_losses(curves, demo.path('losses.png'))
    demo.times['total'] = dict(wall=time.time() - start, cpu=cpu_seconds() - start_cpu)
    summary = summarise(results)
    report = write_report(demo.path('report.md'), args, demo.schedule, summary, results, curves,
                          pictures, demo.times)
    print(format_summary(summary, demo.times))
    print(f'[demo] report with the pictures and loss curves: {report}')


if __name__ == '__main__':
    main()
