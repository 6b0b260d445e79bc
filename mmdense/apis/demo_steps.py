"""The demo's steps on the toy textures: its schedules, the training runs it starts
(``tools/train.py``, ``tools/misc/build_nn_pairs.py``, each logging to ``console.log`` in its work
dir) and their wall / CPU time, one console line per step.

:class:`Demo`: the data, SlotCon pretraining, its scores against random inits, the CoTAP recipe
(DINO, neighbour pairs, CoTAP). :class:`MethodsDemo`: every method of :data:`METHOD_CONFIGS`
pretrained with its demo config and its kNN scored against random inits of the same model."""
import json
import os
import os.path as osp
import resource
import shutil
import sys
import time
from dataclasses import dataclass, replace
from typing import Optional

from mmengine.config import Config

from mmdense.datasets.toy_scenes import generate_toy_scenes, toy_scenes_exist
from mmdense.evaluation.against_random import (PRETRAINED, margins, score_against_random_init,
                                               score_other_branch)
from mmdense.utils.console import StepLine, run_logged, training_progress
from .demo_report import loss_ends
from .demo_scores import SCORES, TEXTURE_DATA, evaluate_models, load_probe_splits

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SLOTCON_CONFIG = 'configs/demo/slotcon_r18-w16_toy-textures.py'
DINO_CONFIG = 'configs/dino/vit-s_toy.py'
COTAP_CONFIG = 'configs/cotap/vit-s_toy.py'
COTAP_TERMS = ('loss_patch', 'loss_cls', 'loss_cross_patch', 'loss_cross_cls')
SLOTCON_TERMS = ('loss', 'loss_group', 'loss_slot')
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


def select_methods(value):
    """``'all'`` or comma-separated method names (any case) → the names in the order of
    :data:`METHOD_CONFIGS`; CoTAP brings DINO along (it post-trains DINO's teacher). An unknown
    name raises ``ValueError`` naming it."""
    if value == 'all':
        return list(METHOD_CONFIGS)
    by_lower = {name.lower(): name for name in METHOD_CONFIGS}
    names = set()
    for item in value.split(','):
        if item.strip().lower() not in by_lower:
            raise ValueError(
                f'unknown method {item!r}: choose all or names of ' + ', '.join(METHOD_CONFIGS))
        names.add(by_lower[item.strip().lower()])
    if 'CoTAP' in names:
        names.add('DINO')
    return [name for name in METHOD_CONFIGS if name in names]


def cpu_seconds():
    """CPU time (user + sys) of this process and of its finished subprocesses (the training runs
    and their data-loader workers): on a machine shared with other jobs it measures the demo's
    own work, which wall time does not."""
    own, children = (resource.getrusage(who)
                     for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def load_demo_config(config):
    """The config at ``config`` (a path relative to the repository root)."""
    return Config.fromfile(osp.join(ROOT, config))


def scheduler_index(cfg, config, scheduler_type):
    """Position in ``cfg.param_scheduler`` of its one entry of type ``scheduler_type``."""
    found = [i for i, entry in enumerate(cfg.param_scheduler) if entry['type'] == scheduler_type]
    if len(found) != 1:
        raise ValueError(f'{config}: param_scheduler holds {len(found)} entries of type '
                         f'{scheduler_type}; the demo sets the one warm-up and the one cosine')
    return found[0]


def lr_schedule_options(config, warmup, length):
    """``--cfg-options`` that make ``config``'s learning rate warm up linearly over epochs
    ``[0, warmup)`` (its ``LinearLR`` entry) and follow a cosine over ``[warmup, length)`` (its
    ``CosineAnnealingLR`` entry), so that the cosine ends with a run of ``length`` epochs."""
    cfg = load_demo_config(config)
    ramp, cosine = (f'param_scheduler.{scheduler_index(cfg, config, kind)}'
                    for kind in ('LinearLR', 'CosineAnnealingLR'))
    return [f'{ramp}.end={warmup}', f'{cosine}.begin={warmup}',
            f'{cosine}.T_max={length - warmup}', f'{cosine}.end={length}']


def dataset_key(cfg):
    """``'train_dataloader.dataset.'`` followed by ``'dataset.'`` for every dataset wrapper
    (e.g. CoTAP's neighbour pairs): the prefix of the keys of the dataset that reads images."""
    key, dataset = 'train_dataloader.dataset.', cfg.train_dataloader.dataset
    while 'dataset' in dataset:
        key, dataset = key + 'dataset.', dataset.dataset
    return key


class Demo:
    """The demo's steps, sharing the work dir, the schedule and the timings. Each step is one
    line on the console (a progress bar while it runs); the programs it runs write to
    ``console.log`` in their work dirs. ``resume``: reuse the data and the checkpoints an
    earlier run left in ``work_dir``."""
    num_steps = 5

    def __init__(self, work_dir, schedule, device='cpu', data_root='data/toy_textures',
                 resume=False):
        self.work_dir, self.device, self.data_root, self.resume = (work_dir, device, data_root,
                                                                   resume)
        self.schedule = SCHEDULES[schedule]
        self.times = {}
        self.step, self.note = None, ''
        self.env = dict(os.environ)
        if device == 'cpu':
            self.env['CUDA_VISIBLE_DEVICES'] = ''  # MMEngine would pick a visible GPU

    def path(self, *parts):
        return osp.join(self.work_dir, *parts)

    def start(self):
        """Make the work dir (emptied first unless resuming)."""
        if not self.resume:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        os.makedirs(self.work_dir, exist_ok=True)

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
        """``tools/train.py`` unless resuming finds ``checkpoint`` already written."""
        if self.resume and osp.isfile(checkpoint):
            self.note = f'reusing {checkpoint}'
            return
        shutil.rmtree(work_dir, ignore_errors=True)
        self.run([sys.executable, 'tools/train.py', config, '--work-dir', work_dir,
                  '--cfg-options'] + options, work_dir, max_epochs)

    def build_pairs(self, config, dino_checkpoint, out):
        """CoTAP's neighbour pairs in ``out``: the 5 nearest train images by DINO's teacher."""
        if self.resume and osp.isfile(out):
            self.note = f'reusing {out}'
            return
        self.run([sys.executable, 'tools/misc/build_nn_pairs.py', config, dino_checkpoint,
                  '--out', out, '--topk', '5', '--img-size', '96', '--data-root', self.data_root,
                  '--num-workers', str(self.schedule.num_workers), '--device', self.device],
                 self.path('build_nn_pairs'))

    def loader_options(self):
        """The data loader's workers, from the schedule."""
        workers = self.schedule.num_workers
        return [f'train_dataloader.num_workers={workers}',
                f'train_dataloader.persistent_workers={workers > 0}']

    # --- steps -------------------------------------------------------------------------------
    def make_data(self):
        settings = dict(TEXTURE_DATA, num_train=self.schedule.num_train,
                        num_val=self.schedule.num_val)
        if self.resume and toy_scenes_exist(self.data_root, **settings):
            self.note = f'reusing the toy textures in {self.data_root}'
            return
        generate_toy_scenes(self.data_root, **settings)
        self.note = f'{settings["num_train"]} + {settings["num_val"]} scenes in {self.data_root}'

    def pretrain_slotcon(self):
        s = self.schedule
        work_dir = self.path('pretrain_slotcon')
        checkpoint = osp.join(work_dir, f'epoch_{s.slotcon_epochs}.pth')
        warmup = min(1, s.slotcon_epochs / 2)
        dataset = dataset_key(load_demo_config(SLOTCON_CONFIG))
        self.train(SLOTCON_CONFIG, work_dir, checkpoint, [
            f'{dataset}data_root={self.data_root}',
            f'train_dataloader.batch_size={s.slotcon_batch}',
            *self.loader_options(),
            f'train_cfg.max_epochs={s.slotcon_epochs}',
            *lr_schedule_options(SLOTCON_CONFIG, warmup, s.slotcon_epochs),
            f'default_hooks.checkpoint.interval={s.slotcon_epochs}',
        ], max_epochs=s.slotcon_epochs)
        return checkpoint

    def cotap_recipe(self):
        """DINO ViT-S/16 → neighbour pairs by its teacher → CoTAP post-training from it; returns
        the work dirs of the two training runs."""
        s = self.schedule
        common = self.loader_options() + ['default_hooks.logger.interval=1']
        dino_dir = self.path('pretrain_dino')
        dino_ckpt = osp.join(dino_dir, 'epoch_1.pth')
        dino_data = dataset_key(load_demo_config(DINO_CONFIG))
        self.train(DINO_CONFIG, dino_dir, dino_ckpt, [
            f'{dino_data}data_root={self.data_root}',
            f'{dino_data}indices={s.dino_images}'] + common, max_epochs=1)
        neighbours = self.path('toy_neighbours.json')
        self.build_pairs(COTAP_CONFIG, dino_ckpt, neighbours)
        cotap_dir = self.path('pretrain_cotap')
        cotap_ckpt = osp.join(cotap_dir, f'iter_{s.cotap_iters}.pth')
        self.train(COTAP_CONFIG, cotap_dir, cotap_ckpt, [
            f'{dataset_key(load_demo_config(COTAP_CONFIG))}data_root={self.data_root}',
            f'train_dataloader.dataset.neighbours_file={neighbours}',
            f'model.backbone_checkpoint.path={dino_ckpt}',
            f'train_cfg.max_iters={s.cotap_iters}',
            f'default_hooks.checkpoint.interval={s.cotap_iters}'] + common)
        return dino_dir, cotap_dir

    def evaluate(self, checkpoint):
        """Scores of the pretrained checkpoint and of ``random_draws`` random inits, also
        written to ``scores.json``."""
        models = [('pretrained', checkpoint, 0)] + [
            (f'random init {seed}', 'random', seed) for seed in range(self.schedule.random_draws)]
        results = evaluate_models(SLOTCON_CONFIG, models, self.data_root,
                                  self.schedule.probe_train, self.schedule.num_val, self.device,
                                  self.schedule.scores, self.step.update)
        with open(self.path('scores.json'), 'w') as f:
            json.dump(results, f, indent=2)
        return results

    def loss_runs(self, dino_dir, cotap_dir):
        """``{run: (work_dir, loss terms)}`` of the demo's three training runs."""
        return dict(SlotCon=(self.path('pretrain_slotcon'), SLOTCON_TERMS),
                    DINO=(dino_dir, ('loss', )), CoTAP=(cotap_dir, COTAP_TERMS))


class MethodsDemo(Demo):
    """``--methods``: the toy textures, then per method its pretraining run (its demo config,
    :data:`METHOD_CONFIGS`) and its kNN score against ``random_draws`` random inits of the same
    model (:func:`mmdense.evaluation.against_random.score_against_random_init`); CoTAP's run
    starts from DINO's checkpoint, on neighbour pairs found by DINO's teacher."""

    def __init__(self, work_dir, schedule, methods, **kwargs):
        super().__init__(work_dir, schedule, **kwargs)
        self.methods = methods
        self.num_steps = 1 + 2 * len(methods) + ('CoTAP' in methods)
        self.checkpoints = {}
        self.splits = None

    def run_length(self, cfg):
        """``('epoch' or 'iter', length)`` of ``cfg``'s training run in this schedule."""
        if 'max_iters' in cfg.train_cfg:
            return 'iter', self.schedule.method_iters or cfg.train_cfg.max_iters
        return 'epoch', self.schedule.method_epochs or cfg.train_cfg.max_epochs

    def pretrain(self, method):
        s, config = self.schedule, METHOD_CONFIGS[method]
        cfg = load_demo_config(config)
        unit, length = self.run_length(cfg)
        work_dir = self.path(f'pretrain_{method.lower()}')
        checkpoint = osp.join(work_dir, f'{unit}_{length}.pth')
        options = [f'{dataset_key(cfg)}data_root={self.data_root}', *self.loader_options(),
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

    def method_pairs(self):
        """CoTAP's neighbour pairs from DINO's checkpoint of this run."""
        self.build_pairs(METHOD_CONFIGS['CoTAP'], self.checkpoints['DINO'],
                         self.neighbours_file())

    def score(self, method):
        """kNN val mIoU of the method's checkpoint and of ``random_draws`` random inits, then of
        the checkpoint's other branch (the one not transferred: DINO's student, DSC's momentum
        encoder), which stands against the same draws; ``(results, (branch, scores))``."""
        if self.splits is None:
            self.splits = load_probe_splits(self.data_root, self.schedule.probe_train,
                                            self.schedule.num_val)
        data_cfg, train, val = self.splits
        config, checkpoint = METHOD_CONFIGS[method], self.checkpoints[method]
        common = dict(num_classes=data_cfg['num_classes'], ignore_index=data_cfg['ignore_index'],
                      protocols=METHOD_PROTOCOLS, device=self.device)
        total = self.schedule.random_draws + 2
        results = score_against_random_init(
            config, checkpoint, train, val, num_draws=self.schedule.random_draws,
            progress=lambda done, _: self.step.update(done, total), **common)
        other = score_other_branch(config, checkpoint, train, val, **common)
        self.step.update(total, total)
        return results, other

    def run_method(self, method):
        """Pretrain ``method`` (after CoTAP's neighbour pairs) and score it against random
        inits, one console step each; its record: config, checkpoint, every score, the kNN
        margins, the other branch's kNN and margins, the grid ceiling, every loss term's first
        and last value, the times."""
        if method == 'CoTAP':
            self.timed('CoTAP neighbour pairs (DINO teacher)', self.method_pairs)
        pretrain, score = f'{method} pretraining', f'{method} vs random init'
        self.timed(pretrain, self.pretrain, method)
        results, (branch, other_scores) = self.timed(score, self.score, method)
        draws = {name: value for name, value in results.items() if name != PRETRAINED}
        return dict(config=METHOD_CONFIGS[method], checkpoint=self.checkpoints[method],
                    results=results, margins=margins(results, METHOD_PROTOCOLS),
                    other_branch=dict(branch=branch, scores=other_scores, margins=margins(
                        {PRETRAINED: other_scores, **draws}, METHOD_PROTOCOLS)),
                    grid_ceiling=results['pretrained']['grid_ceiling'],
                    losses=loss_ends(self.path(f'pretrain_{method.lower()}')),
                    times=dict(pretrain=self.times[pretrain], score=self.times[score]))
