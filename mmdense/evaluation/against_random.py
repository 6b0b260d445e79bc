"""A pretrained model scored against random initialisations of the same model, one protocol.

The evidence that pretraining learnt something: the checkpoint and ``num_draws`` random inits of
the same config (torch seed ``d`` set before draw ``d = 0..num_draws-1`` is built) are scored by
the same frozen-feature protocol on the same images. With the draws' scores ``r_1..r_n``, their
mean ``m`` and sample standard deviation ``s``, a pretrained score ``p`` has the margins

* over the best draw: ``(p - max_d r_d) / s`` (negative: some random init scores higher);
* over the mean: ``(p - m) / s``.
"""
import copy
import statistics
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from torch import nn

from ..registry import MODELS
from ..utils import register_all_modules
from .features import extract_features
from .protocols import grid_majority_scores
from .runner import load_model, run_protocol

PRETRAINED = 'pretrained'


def draw_name(seed: int) -> str:
    """The results key of the random init drawn with torch seed ``seed``."""
    return f'random init {seed}'


def random_init_config(config) -> Config:
    """``config`` (a file or a ``Config``) without ``model.backbone_checkpoint``: a random draw
    must not start from the checkpoint the pretraining run started from (CoTAP's DINO
    backbone), which ``init_weights`` would load."""
    cfg = Config.fromfile(config) if isinstance(config, str) else copy.deepcopy(config)
    cfg.model.pop('backbone_checkpoint', None)
    return cfg


def score_models(config, models: Sequence[Tuple[str, str, int]],
                 score: Callable[[nn.Module], Dict[str, float]], device: str = 'cpu',
                 progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, dict]:
    """``{name: score(model)}`` for ``models = [(name, checkpoint or 'random', seed), ...]``,
    each built from ``config`` (:func:`~mmdense.evaluation.load_model`) after
    ``torch.manual_seed(seed)``; a random one from :func:`random_init_config`.
    ``progress(done, total)`` is called after each model."""
    random_cfg = random_init_config(config)
    results = {}
    for name, checkpoint, seed in models:
        torch.manual_seed(seed)
        model = load_model(random_cfg if checkpoint == 'random' else config, checkpoint, device,
                           log=lambda *_: None)
        results[name] = score(model)
        if progress is not None:
            progress(len(results), len(models))
    return results


def pretrained_and_draws(checkpoint: str, num_draws: int) -> List[Tuple[str, str, int]]:
    """The ``models`` of :func:`score_models`: the checkpoint (seed 0) and ``num_draws`` random
    inits (seeds ``0..num_draws-1``)."""
    return [(PRETRAINED, checkpoint, 0)] + [(draw_name(seed), 'random', seed)
                                           for seed in range(num_draws)]


def protocol_scorer(train: dict, val: dict, *, num_classes: int, ignore_index: int = 255,
                    protocols: Iterable[str] = ('knn', ), batch_size: int = 16
                    ) -> Callable[[nn.Module], Dict[str, float]]:
    """``score(model)``: val mIoU of each protocol (:func:`~mmdense.evaluation.run_protocol`:
    ``'knn'``, ``'linear'``, ``'cluster'``), plus the ceiling the model's feature grid sets
    (``'grid_ceiling'``, :func:`grid_majority_scores`: the same for every draw, the grid depends
    on the architecture only). ``train`` / ``val`` are :func:`~mmdense.evaluation.load_split`
    dicts; the probes fit on ``train``."""
    common = dict(num_classes=num_classes, ignore_index=ignore_index)
    protocols = tuple(protocols)

    def score(model):
        scores = {protocol: run_protocol(model, protocol, train, val, batch_size=batch_size,
                                         **common)['mIoU'] for protocol in protocols}
        grid = extract_features(model, val['images'][:1], channel_order='rgb').shape[-2:]
        scores['grid_ceiling'] = grid_majority_scores(val['labels'], grid, **common)['mIoU']
        return scores

    return score


def score_against_random_init(config, checkpoint: str, train: dict, val: dict, *,
                              num_classes: int, ignore_index: int = 255, num_draws: int = 5,
                              protocols: Iterable[str] = ('knn', ), device: str = 'cpu',
                              batch_size: int = 16,
                              progress: Optional[Callable[[int, int], None]] = None
                              ) -> Dict[str, Dict[str, float]]:
    """The :func:`protocol_scorer` scores of the checkpoint and of ``num_draws`` random inits,
    by name (:func:`pretrained_and_draws`)."""
    score = protocol_scorer(train, val, num_classes=num_classes, ignore_index=ignore_index,
                            protocols=protocols, batch_size=batch_size)
    return score_models(config, pretrained_and_draws(checkpoint, num_draws), score, device,
                        progress)


def other_branch(config) -> str:
    """The branch of ``config``'s teacher-student model that is *not* transferred: ``'student'``
    where the teacher is (``feat_branch``, else the class's ``default_transfer_branch``: DINO,
    SlotCon, ...), ``'teacher'`` where the student is (DSC's momentum encoder, PixPro's)."""
    register_all_modules(init_default_scope=False)
    transferred = (config.model.get('feat_branch')
                   or MODELS.get(config.model.type).default_transfer_branch)
    return 'student' if transferred == 'teacher' else 'teacher'


def score_other_branch(config, checkpoint: str, train: dict, val: dict, *, num_classes: int,
                       ignore_index: int = 255, protocols: Iterable[str] = ('knn', ),
                       device: str = 'cpu', batch_size: int = 16
                       ) -> Tuple[str, Dict[str, float]]:
    """``(branch, scores)`` of the checkpoint's :func:`other_branch`, scored as
    :func:`score_against_random_init` scores the transferred one. A random draw gives both
    branches the same weights (:func:`~mmdense.evaluation.load_model` copies the student into
    the teacher), so these scores stand against the same draws: an EMA teacher that still holds
    most of its random init beside a student that has learnt shows as a student above the draws
    and a teacher within them."""
    cfg = Config.fromfile(config) if isinstance(config, str) else copy.deepcopy(config)
    branch = other_branch(cfg)
    cfg.model.feat_branch = branch
    score = protocol_scorer(train, val, num_classes=num_classes, ignore_index=ignore_index,
                            protocols=protocols, batch_size=batch_size)
    scores = score_models(cfg, [(PRETRAINED, checkpoint, 0)], score, device)
    return branch, scores[PRETRAINED]


def margins(results: Dict[str, Dict[str, float]],
            scores: Optional[Iterable[str]] = None) -> Dict[str, dict]:
    """Per score (default: every score of ``results['pretrained']`` but ``grid_ceiling``): the
    pretrained value, every draw's (``results``' other entries, in order), their ``mean`` /
    ``std`` (sample) / ``max``, ``margin_over_max_std`` and ``margin_over_mean_std`` (module
    docstring; ``None`` when the draws do not vary). Needs at least two draws."""
    draws = [name for name in results if name != PRETRAINED]
    if len(draws) < 2:
        raise ValueError(f'margins need at least two random draws, got {len(draws)} '
                         f'({draws}): a standard deviation of one value is undefined')
    if scores is None:
        scores = [s for s in results[PRETRAINED] if s != 'grid_ceiling']
    summary = {}
    for score in scores:
        values = [results[name][score] for name in draws]
        mean, std = statistics.mean(values), statistics.stdev(values)
        value = results[PRETRAINED][score]
        summary[score] = dict(pretrained=value, draws=values, mean=mean, std=std, max=max(values),
                              margin_over_max_std=(value - max(values)) / std if std else None,
                              margin_over_mean_std=(value - mean) / std if std else None)
    return summary
