"""Run one dense protocol for a model on loaded train/val splits (see :mod:`.data`)."""
import logging
import os.path as osp
from typing import Dict, Optional

from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from torch import nn

from mmdense.fileio.checkpoint import read_checkpoint
from mmdense.fileio.load_coverage import (PartialLoadError, checkpoint_weights, load_weights,
                                          module_prefix)
from mmdense.registry import MODELS
from mmdense.utils import register_all_modules
from mmdense.utils.cli import load_config
from .feature_store import MemoryFeatureStore
from .features import dense_backbone, extract_features
from .protocols import build_protocol


def split_store(model: nn.Module, split: dict, batch_size: int = 8) -> MemoryFeatureStore:
    """A RAM store of ``model``'s frozen dense features of a :func:`.data.load_split` dict
    (RGB ``images``, ``labels``, optional ``instances``)."""
    feats = extract_features(model, split['images'], channel_order='rgb', batch_size=batch_size)
    return MemoryFeatureStore.from_tensors(feats, split['labels'], split.get('instances'))


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
    """Metrics of ``protocol`` for ``model``'s frozen dense features of splits held in memory.

    ``train``/``val`` are :func:`.data.load_split` dicts (RGB images, normalised as ``model``'s
    data preprocessor says: :func:`.features.model_inputs`), extracted into RAM stores
    (:func:`split_store`) and scored by the protocol class of :mod:`.protocols`, the engine the
    presets run on disk: ``linear`` and ``knn`` fit on ``train`` and score ``val``; ``cluster``
    (``num_clusters``, ``matching``) and ``dispersion`` use ``val`` only. The segmentation
    protocols also report ``grid_mIoU``, the ceiling that the feature stride sets
    (:func:`.protocols.grid_majority_scores`).
    """
    options = dict(linear=dict(epochs=linear_epochs), knn=dict(k=knn_k),
                   cluster=dict(num_clusters=num_clusters, matching=matching)).get(protocol, {})
    evaluate = build_protocol(protocol, **options)
    if evaluate.needs_train and train is None:
        raise ValueError(f'protocol {protocol!r} needs a training split')
    train_store = split_store(model, train, batch_size) if evaluate.needs_train else None
    return evaluate(train_store, split_store(model, val, batch_size), num_classes, ignore_index)


def load_model(config, checkpoint: str, device: str = 'cpu', allow_partial: bool = False,
               log=print) -> nn.Module:
    """Build ``config``'s model (a config file or a ``Config``) and load ``checkpoint``
    (``'random'`` keeps the random init).

    The checkpoint is read with ``weights_only=True`` and loaded through
    :func:`mmdense.fileio.load_coverage.load_weights`: a coverage line is logged, and a file that
    does not fill every tensor of the evaluated backbone (another architecture, an exported
    backbone, a dict without ``state_dict``), or holds NaN/Inf there, is refused unless
    ``allow_partial``; so is a backbone whose object prototypes were never initialised (a
    DINO checkpoint in CoTAP's model: half of each embedding would be a random projection).
    """
    cfg = load_config(config) if isinstance(config, str) else config
    if checkpoint != 'random' and not osp.isfile(checkpoint):
        raise FileNotFoundError(f"checkpoint not found: {checkpoint} (pass 'random' for the "
                                'randomly initialised model)')
    register_all_modules(init_default_scope=False)
    init_default_scope('mmdense')
    model = MODELS.build(cfg.model)
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
        return model.to(device).eval()
    backbone = dense_backbone(model)
    prefix = module_prefix(model, backbone)
    weights = checkpoint_weights(read_checkpoint(checkpoint), checkpoint)
    uninitialised = [prefix + name for name, _ in backbone.named_buffers()
                     if name.endswith('prototypes_initialised')
                     and not bool(weights.get(prefix + name, False))]
    if uninitialised and not allow_partial:
        raise PartialLoadError(
            f'{checkpoint}: the object prototypes of the backbone were never initialised '
            f'({uninitialised[0]} is False or absent in the file): its features would be half a '
            'random projection. Use the config of the model that wrote the checkpoint (e.g. the '
            'DINO config for a DINO checkpoint), or pass --allow-partial')
    load_weights(model, weights, checkpoint, required=lambda name: name.startswith(prefix),
                 part='the evaluated backbone' if prefix else 'the model',
                 allow_partial=allow_partial, log=log)
    return model.to(device).eval()
