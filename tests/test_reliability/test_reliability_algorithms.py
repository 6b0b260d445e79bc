"""The reliability guarantees, algorithm by algorithm (every row of ``algorithm_table.py``).

The hooks, the dataset wrappers and the loader are generic; these tests prove that each
algorithm's own configs, pipelines and loss terms reach them:

* configs: a mistyped argument or mismatched widths fail when the runner builds the model;
* non-finite losses: every loss term each algorithm returns (read from one real step) is named
  by ``NonFiniteLossHook``;
* multi-crop: images smaller than the crops or with extreme aspect ratios give full-size views
  whose recorded boxes are exactly the cropped regions, through each algorithm's transform;
* data: a folder of odd (grey, RGBA, CMYK, 16-bit, palette, EXIF-rotated, tiny, 1:50) and
  unreadable images trains each algorithm under ``SkipCorruptImages``, logging every skip and
  the count; without the wrapper the unreadable file is named in the error.
"""
import copy
import glob
import json
import math
import os.path as osp
from types import SimpleNamespace

import cv2
import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import default_collate
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from PIL import Image

import mmdense  # noqa: F401
from mmdense.datasets.transforms import ImageLoadError
from mmdense.engine.hooks import NonFiniteLossHook
from mmdense.registry import DATASETS, MODELS, TRANSFORMS
from mmdense.utils import register_all_modules
from mmdense.utils.method_records import apply_options
from algorithm_table import ALGORITHMS, tiny_config
from helpers import ROOT, ring_neighbours_file

pytestmark = pytest.mark.usefixtures('one_thread')
register_all_modules(init_default_scope=False)


def is_pair_dataset(dataset):
    """Whether a dataset (or its config) pairs images with neighbours (CoTAP's)."""
    return (dataset.type if isinstance(dataset, dict) else type(dataset).__name__) == \
        'NeighbourPairDataset'


def image_dataset_cfg(cfg):
    """The image dataset of a training config (CoTAP's sits inside its NeighbourPairDataset)."""
    dataset = cfg.train_dataloader.dataset
    return dataset.dataset if is_pair_dataset(dataset) else dataset


def runner_config(algorithm, data_root, work_dir, max_iters=2):
    cfg = tiny_config(algorithm, data_root, max_iters)
    cfg.work_dir = str(work_dir)
    # its own logger even when another runner of this process started in the same second
    cfg.experiment_name = f'{algorithm}_{osp.basename(str(work_dir))}_{id(cfg)}'
    cfg.default_hooks.checkpoint = None
    return cfg


# ------------------------------------------------------------------------------------- configs
# (algorithm, where the mistyped key goes, class named in the error): the records' ``Build
# Errors: Mistyped``
MISTYPED = [(name, where, named) for name, record in ALGORITHMS.items()
            for where, named in record.mistyped.items()]


def build_model(cfg):
    """What ``Runner.__init__`` does with ``cfg.model`` (before any data is loaded)."""
    with DefaultScope.overwrite_default_scope('mmdense'):
        return MODELS.build(cfg.model)


@pytest.mark.parametrize('algorithm,where,named', MISTYPED,
                         ids=[f'{a}-{w}' for a, w, _ in MISTYPED])
def test_mistyped_argument_fails_at_build_time(algorithm, where, named, toy_root, tmp_path):
    cfg = runner_config(algorithm, toy_root, tmp_path)
    (cfg.model if where == 'model' else cfg.model[where]).teacher_momentun = 0.9
    with pytest.raises(TypeError,
                       match=rf"{named}\.__init__\(\) got (an )?unexpected keyword "
                       r"argument.*'teacher_momentun'"):
        build_model(cfg)


# case -> (algorithm, config edit as cfg-options, the error naming both values): the records'
# ``Build Errors: Mismatched``
MISMATCHED = {case: (name, mismatch.edit, mismatch.error) for name, record in ALGORITHMS.items()
              for case, mismatch in record.mismatched.items()}


@pytest.mark.parametrize('case', list(MISMATCHED))
def test_mismatched_widths_fail_at_build_time(case, toy_root, tmp_path):
    algorithm, edit, message = MISMATCHED[case]
    cfg = runner_config(algorithm, toy_root, tmp_path)
    apply_options(cfg, edit)
    with pytest.raises((ValueError, KeyError), match=message):
        build_model(cfg)


@pytest.mark.parametrize('algorithm', list(ALGORITHMS))
def test_config_errors_stop_the_runner_before_training(algorithm, toy_root, tmp_path):
    """``Runner.from_cfg`` (what tools/train.py calls first) raises; no iteration runs. The
    width check is the algorithm's first ``MISMATCHED`` case, if it has one."""
    cfg = runner_config(algorithm, toy_root, tmp_path)
    cfg.model.teacher_momentun = 0.9
    with pytest.raises(TypeError, match="unexpected keyword argument.*'teacher_momentun'"):
        Runner.from_cfg(cfg)
    for _, edit, message in [case for case in MISMATCHED.values() if case[0] == algorithm][:1]:
        cfg = runner_config(algorithm, toy_root, tmp_path)
        apply_options(cfg, edit)
        with pytest.raises((ValueError, KeyError), match=message):
            Runner.from_cfg(cfg)


@pytest.mark.parametrize('algorithm,channels', [('SlotCon', 256), ('DSC', 32)])
def test_a_matching_earlier_stage_output_is_accepted(algorithm, channels, toy_root):
    """mmpretrain's ResNet.feat_dim is the last stage's width whatever out_indices says; the
    check uses the stage the backbone really returns."""
    cfg = tiny_config(algorithm, toy_root, 1)
    cfg.model.backbone.out_indices = (2, )
    cfg.model.neck.in_channels = channels
    model = build_model(cfg)
    assert model.backbone(torch.zeros(1, 3, 64, 64))[-1].shape[1] == channels


# ------------------------------------------------------------------------------ NaN / Inf terms
PRETRAINING_CONFIGS = sorted({
    osp.relpath(p, ROOT) for row in ALGORITHMS.values()
    for p in glob.glob(osp.join(ROOT, osp.dirname(row.toy_config), '*.py'))})


@pytest.mark.parametrize('config', PRETRAINING_CONFIGS)
def test_every_pretraining_config_runs_the_reliability_hooks(config):
    """The guard, the RNG-state and skip-count hooks and atomic checkpoints are default hooks;
    no shipped config drops or replaces them."""
    hooks = Config.fromfile(osp.join(ROOT, config)).default_hooks
    assert hooks.nan_guard.type == 'NonFiniteLossHook'
    assert hooks.rng_state.type == 'RNGStateHook'
    assert hooks.skipped_images.type == 'SkippedImagesHook'
    assert hooks.checkpoint.type == 'AtomicCheckpointHook'


def poison(monkeypatch, owner, name, condition=lambda *args: True):
    """Make ``owner.name`` return NaN (keeping the autograd graph) when ``condition(*args)``."""
    original = getattr(owner, name)

    def poisoned(*args, **kwargs):
        out = original(*args, **kwargs)
        return out * float('nan') if condition(*args) else out

    monkeypatch.setattr(owner, name, poisoned)


def poison_term(monkeypatch, model, term, active=lambda: True):
    """Make the computation of one loss term of ``model`` non-finite, where it is computed,
    whenever ``active()``: in the model attribute that computes it (its record's ``Loss
    Terms``, else the attribute named as the term), a loss module or a method; else in the
    dict ``model.loss`` returns."""
    record = ALGORITHMS[type(model).__name__]
    source = record.loss_terms.get(term, None if term == 'loss' else term)  # not model.loss
    computes = getattr(model, source, None) if source else None
    when = lambda *args: active()  # noqa: E731
    if isinstance(computes, torch.nn.Module):
        poison(monkeypatch, computes, 'forward', when)
    elif callable(computes):
        poison(monkeypatch, model, source, when)
    else:
        loss = model.loss

        def poisoned(*args, **kwargs):
            losses = loss(*args, **kwargs)
            if active():
                losses[term] = losses[term] * float('nan')
            return losses

        monkeypatch.setattr(model, 'loss', poisoned)


# every algorithm of the table, and the variants its record names (DSC's prototype-matching
# semantic contrast)
VARIANTS = {name: (name, {}) for name in ALGORITHMS}
VARIANTS.update({variant: (name, options) for name, record in ALGORITHMS.items()
                 for variant, options in record.variants.items()})


@pytest.fixture(scope='module')
def batches(toy_root):
    """One real training batch (4 images, CoTAP: 4 pairs) per algorithm, through its
    config's dataset and pipeline."""
    found = {}
    with DefaultScope.overwrite_default_scope('mmdense'):
        for algorithm in ALGORITHMS:
            cfg = tiny_config(algorithm, toy_root, 1)
            np.random.seed(0)
            dataset = DATASETS.build(cfg.train_dataloader.dataset)
            found[algorithm] = default_collate([dataset[i] for i in range(4)])
    return found


def train_step(variant, toy_root, batches):
    """A real ``train_step`` (preprocessing, loss, parse_losses, backward, SGD step); returns
    the model, the step (which returns the log variables the runner hands to the hooks) and
    the optimiser wrapper."""
    algorithm, options = VARIANTS[variant]
    cfg = tiny_config(algorithm, toy_root, 1)
    apply_options(cfg, options)
    with DefaultScope.overwrite_default_scope('mmdense'):
        torch.manual_seed(0)
        model = MODELS.build(cfg.model)
        model.init_weights()
    model.set_teacher_schedule(100)
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-3))
    batch = batches[algorithm]
    return model, lambda: model.train_step(copy.deepcopy(batch), optim_wrapper), optim_wrapper


def loss_terms(outputs):
    """The loss terms among a step's log variables, in the order the model returns them; the
    total alone when the model returns one ``loss``."""
    return [name for name in outputs if name.startswith('loss') and name != 'loss'] or ['loss']


def guard(outputs, optim_wrapper, iteration):
    """``NonFiniteLossHook.after_train_iter`` as the runner calls it at ``iteration``."""
    runner = SimpleNamespace(iter=iteration - 1, epoch=0, optim_wrapper=optim_wrapper)
    hook = NonFiniteLossHook()
    hook.before_train_iter(runner, iteration - 1)
    hook.after_train_iter(runner, iteration - 1, outputs=outputs)


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_every_term_is_finite_and_the_loss_is_their_sum(variant, toy_root, batches):
    _, step, optim_wrapper = train_step(variant, toy_root, batches)
    outputs = step()
    values = {name: float(torch.as_tensor(value).detach()) for name, value in outputs.items()}
    terms = loss_terms(outputs)
    assert all(math.isfinite(values[term]) for term in terms), values
    assert math.isclose(values['loss'], sum(values[term] for term in terms), rel_tol=1e-5,
                        abs_tol=1e-6), values
    guard(outputs, optim_wrapper, iteration=5)  # does not raise


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_a_non_finite_term_is_named_with_the_iteration(variant, toy_root, batches,
                                                       monkeypatch):
    """Each term the model returns in turn made NaN where it is computed: the guard stops at
    iteration 5 naming that term and no other."""
    _, step, _ = train_step(variant, toy_root, batches)
    terms = loss_terms(step())
    for term in terms:
        model, step, optim_wrapper = train_step(variant, toy_root, batches)
        poison_term(monkeypatch, model, term)
        outputs = step()
        with pytest.raises(FloatingPointError, match=rf'iteration 5 .*\b{term}=nan') as error:
            guard(outputs, optim_wrapper, iteration=5)
        others = set(terms) - {term}
        assert not [t for t in others if f'{t}=' in str(error.value)], (term, str(error.value))
        monkeypatch.undo()


class IterationFlag(Hook):
    """Records the (1-based) iteration being run."""

    def __init__(self, state):
        self.state = state

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.state['iter'] = runner.iter + 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason='AmpOptimWrapper needs a GPU')
@pytest.mark.parametrize('algorithm', list(ALGORITHMS))
def test_under_amp_a_non_finite_step_is_skipped_and_counted(algorithm, toy_root, batches,
                                                            tmp_path, monkeypatch):
    """As ``tools/train.py --amp`` sets it up: the loss scaler skips the step whose term (the
    last one the model returns) is NaN, the guard counts it instead of stopping, and training
    goes on."""
    _, step, _ = train_step(algorithm, toy_root, batches)
    term = loss_terms(step())[-1]
    cfg = runner_config(algorithm, toy_root, tmp_path / 'work', max_iters=3)
    cfg.optim_wrapper.update(type='AmpOptimWrapper', loss_scale='dynamic')
    runner = Runner.from_cfg(cfg)
    state = {}
    runner.register_hook(IterationFlag(state))
    poison_term(monkeypatch, runner.model, term, active=lambda: state.get('iter') == 2)
    runner.train()

    assert runner.iter == 3
    log, = glob.glob(str(tmp_path / 'work/*/*.log'))
    with open(log) as f:
        skips = [line for line in f if 'skipped by the loss scaler' in line]
    assert any('AMP: iteration 2 skipped' in line and f"'{term}': nan" in line
               for line in skips), skips
    assert runner.message_hub.get_scalar('train/amp_skipped_steps').current() == len(skips)
    assert all(torch.isfinite(p).all() for p in runner.model.parameters())


# --------------------------------------------------------------------------------- multi-crop
def crop_transform(algorithm):
    """The multi-crop transform of an algorithm's toy config, without photometric jitter (so
    every view must equal its recorded crop box, resized and flipped)."""
    cfg = Config.fromfile(osp.join(ROOT, ALGORITHMS[algorithm].toy_config))
    crop = copy.deepcopy(image_dataset_cfg(cfg).pipeline[1])
    crop.update(global_pipelines=[[]], local_pipeline=[])
    if 'query_pipeline' in crop:
        crop.query_pipeline = []
    with DefaultScope.overwrite_default_scope('mmdense'):
        return TRANSFORMS.build(crop)


SHAPES = {'smaller-than-crop': (20, 30), 'wide-1-to-50': (8, 400), 'tall-50-to-1': (400, 8),
          'one-pixel': (1, 1)}


@pytest.mark.parametrize('shape', list(SHAPES))
@pytest.mark.parametrize('algorithm', list(ALGORITHMS))
def test_small_and_extreme_images_give_views_of_their_exact_crop_boxes(algorithm, shape):
    transform = crop_transform(algorithm)
    height, width = SHAPES[shape]
    img = np.random.RandomState(0).randint(0, 256, (height, width, 3), dtype=np.uint8)
    np.random.seed(1)
    out = transform(dict(img=img.copy()))
    views, boxes, flips = out['img'], out['crop_boxes'], out['flips']

    sizes = ([transform.global_crops['size']] * transform.global_crops['num']
             + [transform.local_crops['size']] * transform.local_crops['num'])
    if transform.clean_global_copies:
        sizes += sizes[:transform.global_crops['num']]
    if 'num_queries' in out:
        sizes += [transform.query_crops['size']] * out['num_queries']
    assert len(views) == len(boxes) == len(flips) == len(sizes)
    assert (boxes == np.round(boxes)).all()  # whole pixels: the box is what was cropped
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all()
    assert (boxes[:, 3] <= height).all() and (boxes[:, 2:] > boxes[:, :2]).all()
    for view, box, flip, size in zip(views, boxes.astype(int), flips, sizes):
        x1, y1, x2, y2 = box
        # PIL with the config's filter (bicubic; PixPro bilinear), as torchvision on PIL images
        expected = np.asarray(Image.fromarray(img[y1:y2, x1:x2]).resize(
            (size, size), Image.Resampling[transform.interpolation.upper()]))
        if flip:
            expected = mmcv.imflip(expected, direction='horizontal')
        assert view.shape == (size, size, 3) and np.array_equal(view, expected)
    if transform.clean_global_copies:  # CoTAP's teacher copies: same crops, same flips
        num = transform.global_crops['num']
        first, copies = slice(0, num), slice(len(sizes) - num, len(sizes))
        assert np.array_equal(boxes[first], boxes[copies])
        assert np.array_equal(flips[first], flips[copies])


# ------------------------------------------------------------------------- odd and bad images
CORRUPT = ('c_truncated.png', 'g_empty.jpg')


@pytest.fixture(scope='module')
def odd_images(tmp_path_factory):
    """12 images in list mode: 10 odd but readable ones and 2 unreadable ones, never next to
    each other in the list."""
    root = tmp_path_factory.mktemp('odd_images')
    rng = np.random.RandomState(0)

    def rand(*shape):
        return rng.randint(0, 256, shape, dtype=np.uint8)

    Image.fromarray(rand(96, 96, 3)).save(root / 'a_normal.jpg')
    Image.fromarray(rand(20, 30)).save(root / 'b_grey_smaller_than_crops.png')
    Image.fromarray(rand(64, 64, 3)).save(root / 'c_full.png')
    (root / 'c_truncated.png').write_bytes((root / 'c_full.png').read_bytes()[:200])
    (root / 'c_full.png').unlink()
    Image.fromarray(rand(8, 400, 4)).save(root / 'd_rgba_wide_1_to_50.png')
    Image.fromarray(rand(400, 8, 3)).convert('CMYK').save(root / 'e_cmyk_tall_50_to_1.jpg')
    Image.fromarray(rng.randint(0, 65536, (33, 17)).astype(np.uint16)).save(
        root / 'f_grey_16bit.png')
    (root / 'g_empty.jpg').write_bytes(b'')
    Image.fromarray(rand(40, 40)).convert('P').save(root / 'h_palette.png')
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees
    Image.fromarray(rand(20, 40, 3)).save(root / 'i_exif_rotated.jpg', exif=exif)
    Image.fromarray(rand(1, 1, 3)).save(root / 'j_one_pixel.png')
    cv2.imwrite(str(root / 'k_rgb_16bit.png'),
                rng.randint(0, 65536, (24, 32, 3)).astype(np.uint16))
    Image.fromarray(rand(48, 64, 3)).save(root / 'l_normal.png')
    names = sorted(p.name for p in root.iterdir())
    (root / 'meta').mkdir()
    (root / 'meta/train.txt').write_text('\n'.join(names) + '\n')
    assert len(names) == 12
    ring_neighbours_file(str(root))  # CoTAP pairs image i with i+1, i+2
    return str(root)


def skip_logs(work_dir):
    log, = glob.glob(osp.join(work_dir, '*', '*.log'))
    with open(log) as f:
        lines = [line for line in f if 'skip_corrupt:' in line]
    return [line for line in lines if 'skipped sample' in line], \
        [line for line in lines if 'unreadable image(s) skipped' in line]


@pytest.mark.parametrize('algorithm', list(ALGORITHMS))
def test_odd_images_train_and_unreadable_ones_are_named_or_skipped_and_counted(
        algorithm, odd_images, tmp_path):
    cfg = runner_config(algorithm, odd_images, tmp_path / 'work', max_iters=3)
    cfg.train_dataloader.batch_size = 4  # 3 iterations = the 12 samples once
    with DefaultScope.overwrite_default_scope('mmdense'):
        plain = DATASETS.build(copy.deepcopy(cfg.train_dataloader.dataset))
    images = plain.dataset if is_pair_dataset(plain) else plain
    for name in CORRUPT:
        index = [osp.basename(images.get_data_info(i)['img_path'])
                 for i in range(len(images))].index(name)
        with pytest.raises(ImageLoadError, match=rf"cannot load image '.*/{name}'"):
            plain[index]

    cfg.train_dataloader.dataset = dict(type='SkipCorruptImages',
                                        dataset=cfg.train_dataloader.dataset)
    runner = Runner.from_cfg(cfg)
    runner.train()

    with open(glob.glob(str(tmp_path / 'work/*/vis_data/scalars.json'))[0]) as f:
        losses = [entry['loss'] for entry in map(json.loads, f) if 'loss' in entry]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    skipped, totals = skip_logs(str(tmp_path / 'work'))
    named = {name for line in skipped for name in CORRUPT if f'/{name}' in line}
    assert named == set(CORRUPT)
    count = runner.message_hub.get_info('train/skipped_images')
    assert count == len(skipped)
    if is_pair_dataset(plain):  # a bad neighbour too
        assert count >= 2
    else:
        assert count == 2
    assert len(totals) == 1 and f'{count} unreadable image(s) skipped' in totals[0]
