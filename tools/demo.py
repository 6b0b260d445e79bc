"""`make demo`: show what dense pretraining learns on the embedded toy scenes, in minutes.

    python tools/demo.py [--device auto|cpu|cuda] [--schedule cpu|gpu|tiny] [--resume-demo]
                         [--work-dir work_dirs/demo] [--data-root data/toy_textures]

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
"""
import argparse
import json
import os
import os.path as osp
import resource
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace

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
                            random_draws=2, num_workers=0)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default='auto',
                        help='auto: cuda when available')
    parser.add_argument('--schedule', choices=sorted(SCHEDULES),
                        help='default: gpu on cuda, cpu otherwise')
    parser.add_argument('--resume-demo', action='store_true',
                        help='reuse the data and the finished training runs of an earlier demo')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/toy_textures')
    args = parser.parse_args(argv)
    if args.device == 'auto':
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    args.schedule = args.schedule or ('gpu' if args.device == 'cuda' else 'cpu')
    return args


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
    the same ``num_train`` / ``num_val`` images; the seed is set before each model is built (it
    picks a random init's draw). ``progress(done, total)`` is called after each model."""
    from mmdense.evaluation import load_model, load_split
    data_cfg = texture_data_cfg(data_root)
    train = load_split(data_cfg, 'train', num_train)
    val = load_split(data_cfg, 'val', num_val)
    results = {}
    for name, checkpoint, seed in models:
        torch.manual_seed(seed)
        model = load_model(config, checkpoint, device, log=lambda *_: None)
        results[name] = score_model(model, train, val, data_cfg, which)
        if progress is not None:
            progress(len(results), len(models))
    return results


def summarise(results):
    """Per score: the pretrained value, every random draw, their mean / std / max, and the
    margins ``(pretrained - max) / std`` and ``(pretrained - mean) / std``."""
    summary = {}
    for score in (s for s in SCORES if s in results['pretrained']):
        draws = [scores[score] for name, scores in results.items() if name != 'pretrained']
        mean, std = statistics.mean(draws), statistics.stdev(draws)
        value = results['pretrained'][score]
        summary[score] = dict(pretrained=value, draws=draws, mean=mean, std=std, max=max(draws),
                              margin_over_max_std=(value - max(draws)) / std if std else None,
                              margin_over_mean_std=(value - mean) / std if std else None)
    return summary


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


def main(argv=None):
    args = parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('error: --device cuda, but torch sees no CUDA device')
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
