"""Frozen-backbone dense evaluation: linear probe, clustering, kNN retrieval, dispersion; in
memory (:mod:`.protocols`) or streamed at any scale (:mod:`.streaming`), by named preset
(:mod:`.presets`, :func:`evaluate_preset`)."""
from .data import (COCO_STUFF_27_CLASSES, DATASET_CONFIGS, DenseEvalDataset,
                   coco_stuff_171_to_27, load_dataset_config, load_split, read_image_list,
                   resolve_dataset_config)
from .feature_store import FeatureStore
from .features import (dense_backbone, dense_features, extract_features, input_normalization,
                       model_inputs)
from .metrics import confusion_matrix, segmentation_scores
from .preset_eval import SubsetError, check_counts, evaluate_preset, write_report
from .presets import PRESETS, DensePreset, format_preset, get_preset, preset_data_cfg
from .protocols import (PROTOCOLS, cluster_segmentation, dispersion_stats,
                        grid_majority_scores, kmeans, knn_segmentation, linear_probe,
                        match_clusters, patch_labels)
from .runner import check_protocol, load_model, run_protocol
from .streaming import run_stream_protocol

__all__ = [
    'COCO_STUFF_27_CLASSES', 'DATASET_CONFIGS', 'DenseEvalDataset', 'coco_stuff_171_to_27',
    'load_dataset_config', 'load_split', 'read_image_list', 'resolve_dataset_config',
    'dense_backbone', 'dense_features', 'extract_features', 'input_normalization', 'model_inputs',
    'confusion_matrix', 'segmentation_scores', 'PROTOCOLS', 'cluster_segmentation',
    'dispersion_stats', 'grid_majority_scores', 'kmeans', 'knn_segmentation', 'linear_probe',
    'match_clusters', 'patch_labels', 'SubsetError', 'check_counts', 'evaluate_preset',
    'write_report', 'PRESETS', 'DensePreset', 'format_preset', 'get_preset', 'preset_data_cfg',
    'check_protocol', 'load_model', 'run_protocol', 'FeatureStore', 'run_stream_protocol'
]
