"""Run one dense protocol for a model on loaded train/val splits (see :mod:`.data`)."""
from typing import Dict, Optional

from torch import nn

from .features import extract_features
from .protocols import (PROTOCOLS, cluster_segmentation, dispersion_stats,
                        grid_majority_scores, knn_segmentation, linear_probe)


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f'unknown dense protocol {protocol!r}; choose from {PROTOCOLS}')
    return protocol


def run_protocol(model: nn.Module,
                 protocol: str,
                 train: Optional[dict],
                 val: dict,
                 num_classes: int,
                 ignore_index: int = 255,
                 num_clusters: Optional[int] = None,
                 matching: str = 'hungarian',
                 knn_k: int = 10,
                 linear_epochs: int = 30,
                 batch_size: int = 8) -> Dict[str, float]:
    """Metrics of ``protocol`` for ``model``'s frozen dense features.

    ``train``/``val`` are :func:`.data.load_split` dicts; ``linear`` and ``knn`` fit on ``train``
    and score ``val``; ``cluster`` and ``dispersion`` use ``val`` only. The segmentation
    protocols also report ``grid_mIoU``, the ceiling that the feature stride sets
    (:func:`.protocols.grid_majority_scores`).
    """
    check_protocol(protocol)
    val_feats = extract_features(model, val['images'], batch_size)
    common = dict(num_classes=num_classes, ignore_index=ignore_index)
    if protocol == 'dispersion':
        return dispersion_stats(val_feats, val['labels'], instances=val.get('instances'),
                                **common)
    if protocol == 'cluster':
        metrics = cluster_segmentation(val_feats, val['labels'], num_clusters=num_clusters,
                                       matching=matching, **common)
    elif train is None:
        raise ValueError(f'protocol {protocol!r} needs a training split')
    else:
        train_feats = extract_features(model, train['images'], batch_size)
        if protocol == 'knn':
            metrics = knn_segmentation(train_feats, train['labels'], val_feats, val['labels'],
                                       k=knn_k, **common)
        else:
            metrics = linear_probe(train_feats, train['labels'], val_feats, val['labels'],
                                   epochs=linear_epochs, **common)
    ceiling = grid_majority_scores(val['labels'], val_feats.shape[-2:], **common)
    return dict(metrics, grid_mIoU=ceiling['mIoU'])


def load_model(config: str, checkpoint: str, device: str = 'cpu') -> nn.Module:
    """Build ``config``'s model and load ``checkpoint`` (``'random'`` keeps the random init)."""
    import logging
    import os.path as osp

    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint

    from mmdense.registry import MODELS
    from mmdense.utils import register_all_modules
    if not osp.isfile(config):
        raise FileNotFoundError(f'config not found: {config}')
    if checkpoint != 'random' and not osp.isfile(checkpoint):
        raise FileNotFoundError(f"checkpoint not found: {checkpoint} (pass 'random' for the "
                                'randomly initialised model)')
    register_all_modules(init_default_scope=False)
    init_default_scope('mmdense')
    model = MODELS.build(Config.fromfile(config).model)
    if checkpoint == 'random':
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)  # init_weights logs every parameter
        try:
            model.init_weights()
        finally:
            logger.setLevel(level)
        if hasattr(model, 'teacher') and hasattr(model, 'student_modules'):
            # the EMA teacher was copied before init_weights: give it the student's weights
            student = nn.ModuleDict(model.student_modules())
            model.teacher.module.load_state_dict(student.state_dict())
    else:
        load_checkpoint(model, checkpoint, map_location='cpu', logger='silent')
    return model.to(device).eval()
