"""Frozen-backbone dense evaluation: one engine (:mod:`.protocols`: linear probe, kNN
retrieval, clustering, dispersion, prototype assignment, one class each) on feature stores in
RAM or on disk (:mod:`.feature_store`), run ad hoc (:func:`run_protocol`) or by named preset
(:mod:`.presets`, :func:`evaluate_preset`)."""
from .data import (COCO_STUFF_27_CLASSES, DATASET_CONFIGS, DenseEvalDataset,
                   coco_stuff_171_to_27, load_dataset_config, load_split, resolve_dataset_config)
from .data_files import read_image_list
from .feature_store import FeatureStore, MemoryFeatureStore
from .features import (dense_backbone, dense_features, extract_features, input_normalization,
                       model_inputs)
from .metrics import confusion_matrix, segmentation_scores
from .preset_eval import SubsetError, check_counts, evaluate_preset, write_report
from .presets import PRESETS, DensePreset, format_preset, get_preset, preset_data_cfg
from .protocols import (PROTOCOLS, Clustering, DenseProtocol, Dispersion, KNNRetrieval,
                        LinearProbe, PrototypeAssignment, build_protocol, check_protocol,
                        evaluate_protocol, grid_majority_scores, match_clusters, patch_labels)
from .runner import load_model, run_protocol, split_store

__all__ = [
    'COCO_STUFF_27_CLASSES', 'DATASET_CONFIGS', 'DenseEvalDataset', 'coco_stuff_171_to_27',
    'load_dataset_config', 'load_split', 'read_image_list', 'resolve_dataset_config',
    'dense_backbone', 'dense_features', 'extract_features', 'input_normalization', 'model_inputs',
    'confusion_matrix', 'segmentation_scores', 'PROTOCOLS', 'Clustering', 'DenseProtocol',
    'Dispersion', 'KNNRetrieval', 'LinearProbe', 'PrototypeAssignment', 'build_protocol',
    'check_protocol', 'evaluate_protocol', 'grid_majority_scores', 'match_clusters',
    'patch_labels', 'SubsetError', 'check_counts', 'evaluate_preset', 'write_report', 'PRESETS',
    'DensePreset', 'format_preset', 'get_preset', 'preset_data_cfg', 'load_model',
    'run_protocol', 'split_store', 'FeatureStore', 'MemoryFeatureStore'
]
