"""Frozen-backbone dense evaluation: linear probe, clustering, kNN retrieval, dispersion."""
from .data import (COCO_STUFF_27_CLASSES, DATASET_CONFIGS, coco_stuff_171_to_27,
                   load_dataset_config, load_split, resolve_dataset_config)
from .features import dense_backbone, dense_features, extract_features, normalize_images
from .metrics import confusion_matrix, segmentation_scores
from .protocols import (PROTOCOLS, cluster_segmentation, dispersion_stats,
                        grid_majority_scores, kmeans, knn_segmentation, linear_probe,
                        match_clusters, patch_labels)
from .runner import check_protocol, load_model, run_protocol

__all__ = [
    'COCO_STUFF_27_CLASSES', 'DATASET_CONFIGS', 'coco_stuff_171_to_27', 'load_dataset_config',
    'load_split', 'resolve_dataset_config', 'dense_backbone', 'dense_features', 'extract_features',
    'normalize_images', 'confusion_matrix', 'segmentation_scores', 'PROTOCOLS',
    'cluster_segmentation', 'dispersion_stats', 'grid_majority_scores', 'kmeans',
    'knn_segmentation', 'linear_probe', 'match_clusters', 'patch_labels', 'check_protocol',
    'load_model', 'run_protocol'
]
