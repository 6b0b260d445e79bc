"""Named dense-evaluation protocols: the published setups, with their sources.

A :class:`DensePreset` fixes everything a number depends on besides the checkpoint: the dataset
and its image lists, the resolution and crop, the scoring resolution, the feature stride (the
grid the protocols run on), the number of images of each split, and every protocol with its
options (probe epochs and optimiser, K and matching for clustering). Presets are printed before
a run and stored with its result (:mod:`.preset_eval`). A run on fewer images than its preset is
refused unless it is explicitly a subset (then it is marked as one).
"""
import dataclasses
import os.path as osp
from typing import Dict, Optional, Tuple

from .data import load_dataset_config
from .data_files import split_root
from .protocols import build_protocol

# Leopart's linear recipe (Ziegler & Asano, CVPR 2022, github.com/MkuuWaUjinga/leopart,
# experiments/linear_probing/linear_finetune.py and configs/pascal/*.yml): SGD, lr 0.01, momentum
# 0.9, weight decay 1e-4, 25 epochs, lr x0.1 after epoch 20 (StepLR), batch_size 60 per GPU on
# gpus: 2 (DDP: 120 images per step), drop_last=True, the backbone's tokens as they come (no
# standardisation).
LEOPART_LINEAR = dict(epochs=25, batch_size=120, optimizer='sgd', lr=0.01, momentum=0.9,
                      weight_decay=1e-4, lr_step=20, lr_gamma=0.1, standardize=False,
                      drop_last=True)
# Leopart's clustering (experiments/utils.py normalize_and_transform + cluster, run by
# experiments/overcluster/sup_overcluster.py with configs/pascal/*.yml: num_seeds 5, pca_dim 50):
# StandardScaler, faiss PCAMatrix to 50 dims, faiss.Kmeans(niter=100, nredo=5, spherical=False,
# seed=i) for i in 0..4, the mean over the 5 seeds; clusters scored on 100 x 100 label maps.
LEOPART_CLUSTER = dict(metric='euclidean', pca_dim=50, num_iters=100, num_init=5, num_seeds=5,
                       score_size=100)


@dataclasses.dataclass(frozen=True)
class Point:
    """One setting of a preset beside its reference protocol.

    Attributes:
        setting: what is set (e.g. ``'k-means fitted on'``).
        reference: the reference's value and where its code sets it.
        value: this preset's value.
        test: the test that pins ``value`` (``file::name``), or ``''``.
        departure: why ``value`` differs from ``reference``; ``''`` when they are equal.
    """
    setting: str
    reference: str
    value: str
    test: str = ''
    departure: str = ''


@dataclasses.dataclass(frozen=True)
class DensePreset:
    """A named dense-evaluation protocol.

    Attributes:
        name: the preset's name.
        dataset: dense-eval dataset name (:data:`.data.DATASET_CONFIGS`) or config path.
        source: the papers / repositories the protocol follows.
        img_size: images are brought to ``img_size x img_size`` ...
        crop: ... by ``'center'`` (shorter side, centre square) or ``'resize'`` (no aspect).
        feature_stride: None (features on the backbone's own grid: a ViT/8 at 448 px gives
            56 x 56) or a stride whose ``(img_size / feature_stride)²`` grid every backbone's
            feature maps are resampled to (bilinear).
        label_size: predictions are scored on ``label_size²`` label maps (None: ``img_size``).
        num_train, num_val: images in the protocol's splits (None: the whole split as found).
        train_list, val_list: image-list files the splits are restricted to, relative to the
            data root unless given otherwise; ``list_source`` says where to obtain them.
        protocols: ``(protocol, options)`` pairs, options as in
            :data:`.protocols.PROTOCOLS`.
        points: the preset's settings beside the reference protocol's, each with the test
            that pins it and, where they differ, why (:class:`Point`).
    """
    name: str
    dataset: str
    source: str
    img_size: int
    crop: str = 'center'
    feature_stride: Optional[int] = None
    label_size: Optional[int] = None
    num_train: Optional[int] = None
    num_val: Optional[int] = None
    train_list: Optional[str] = None
    val_list: Optional[str] = None
    list_source: str = ''
    protocols: Tuple[Tuple[str, dict], ...] = ()
    points: Tuple[Point, ...] = ()

    @property
    def grid(self) -> Optional[Tuple[int, int]]:
        """The grid features are resampled to, or None (the backbone's own)."""
        if self.feature_stride is None:
            return None
        side = self.img_size // self.feature_stride
        return side, side

    @property
    def departures(self) -> Tuple[Point, ...]:
        return tuple(point for point in self.points if point.departure)

    @property
    def needs_train(self) -> bool:
        """Whether a protocol reads the train split (``DenseProtocol.needs_train``)."""
        return any(build_protocol(protocol, **options).needs_train
                   for protocol, options in self.protocols)

    def record(self) -> dict:
        """The preset as plain data (JSON), protocols as ``[{protocol, setting, options}]``."""
        record = dataclasses.asdict(self)
        record['protocols'] = [
            dict(protocol=protocol, setting=describe_setting(protocol, options),
                 options=dict(options)) for protocol, options in self.protocols
        ]
        return record


def describe_setting(protocol: str, options: dict) -> str:
    """A short name of a protocol setting, e.g. ``'K=27 hungarian'``, ``'25 ep sgd lr 0.01'``."""
    if protocol == 'cluster':
        setting = f"K={options.get('num_clusters', 'C')} {options.get('matching', 'hungarian')}"
        if options.get('fit') == 'train':
            setting += ' fit train'
        if options.get('num_seeds', 1) > 1:
            setting += f" mean of {options['num_seeds']} seeds"
        return setting
    if protocol == 'knn':
        return f"k={options.get('k', 10)}"
    if protocol == 'linear':
        return (f"{options.get('epochs', 30)} ep {options.get('optimizer', 'adam')} "
                f"lr {options.get('lr', 1e-2):g}")
    return ''


COCO_LISTS = ('https://github.com/janghyuncho/PiCIE: curated/train2017/ and curated/val2017/'
              'Coco164kFull_Stuff_Coarse_7.txt (also inside STEGO\'s cocostuff.zip, '
              'github.com/mhamilton723/STEGO, src/download_datasets.py)')

PROTOCOL_TESTS = 'tests/test_evaluation/test_preset_protocols.py::'
NATIVE_STRIDE = Point(
    'feature grid', 'the backbone\'s own output grid (a ViT/8 at 448 px: 56 x 56; PiCIE, STEGO '
    'and Leopart take the tokens or maps their backbone returns)', 'the backbone\'s own grid '
    '(feature_stride None)', PROTOCOL_TESTS + 'test_features_are_taken_at_the_native_stride')
CACHED_PROBE_INPUT = ('features are extracted once into a store and the probe reads them, so '
                      'no per-epoch augmentation')


def _leopart_probe_points(size: str) -> Tuple[Point, ...]:
    """The points of :data:`LEOPART_LINEAR` shared by the presets that use it."""
    source = 'Leopart experiments/linear_probing/linear_finetune.py + configs/pascal/*.yml'
    return (
        Point('linear probe optimiser', f'SGD lr 0.01, momentum 0.9, weight decay 1e-4, 25 '
              f'epochs, lr x0.1 after 20 ({source})', 'the same',
              PROTOCOL_TESTS + 'test_leopart_linear_probe_step_by_hand'),
        Point('linear probe batch', f'60 per GPU x gpus: 2 (DDP) = 120 per step, drop_last '
              f'({source})', '120 per step, drop_last',
              PROTOCOL_TESTS + 'test_leopart_linear_probe_step_by_hand'),
        Point('linear probe input', f'the backbone\'s tokens as they come ({source})',
              'stored features, not standardised',
              PROTOCOL_TESTS + 'test_leopart_linear_probe_step_by_hand'),
        Point('linear probe loss', 'mean cross-entropy per GPU, gradients averaged over the 2 '
              'GPUs (DDP)', 'mean cross-entropy over the valid pixels of the whole batch', '',
              'equal when both GPUs see as many valid pixels; one process reproduces it '
              'whatever the number of ranks'),
        Point('linear probe augmentation', f'RandomResizedCrop({size}, scale=(0.8, 1)) of the '
              f'original image and horizontal flip ({source})', f'none: the {size} px '
              'evaluation view of each image', '', CACHED_PROBE_INPUT),
    )


PRESETS: Dict[str, DensePreset] = {
    preset.name: preset
    for preset in (
        DensePreset(
            name='coco_stuff27',
            dataset='coco_stuff27',
            source='COCO-Stuff-27 curated split of IIC/PiCIE (Cho et al., CVPR 2021, '
            'github.com/janghyuncho/PiCIE: image lists Coco164kFull_Stuff_Coarse_7.txt, 49,629 '
            'train2017 / 2,175 val2017 images, the 171 classes merged into 27 coarse ones, '
            'evaluated at 320 px: shorter side to 320, centre crop), as used by STEGO (Hamilton '
            'et al., ICLR 2022); unsupervised segmentation as PiCIE evaluates it: K=27 k-means '
            'centroids fitted on the train features, val pixels assigned to them, Hungarian '
            'matching. Also reported, without a published counterpart: Leopart\'s linear '
            'probe recipe and over-clustering (K=100, 300) of the val features with majority '
            'matching',
            img_size=320,
            num_train=49_629,
            num_val=2_175,
            train_list='curated/train2017/Coco164kFull_Stuff_Coarse_7.txt',
            val_list='curated/val2017/Coco164kFull_Stuff_Coarse_7.txt',
            list_source=COCO_LISTS,
            protocols=(('linear', LEOPART_LINEAR),
                       ('cluster', dict(num_clusters=27, matching='hungarian', fit='train',
                                        upsample='bilinear', num_iters=30, num_init=1)),
                       ('cluster', dict(num_clusters=100, matching='majority')),
                       ('cluster', dict(num_clusters=300, matching='majority'))),
            points=(
                Point('images', 'PiCIE curated lists, 320 px, shorter side then centre crop '
                      '(PiCIE data/coco_eval_dataset.py, train_picie.py --res 320)', 'the same',
                      'tests/test_evaluation/test_dense_presets.py::'
                      'test_curated_lists_select_and_order_the_images'),
                NATIVE_STRIDE,
                Point('K=27 k-means fitted on', 'the train split (PiCIE train_picie.py '
                      'eval: get_dataset(mode=\'eval_val\') reads --val_type train, '
                      'run_mini_batch_kmeans on it)', 'the train split',
                      PROTOCOL_TESTS + 'test_coco_stuff27_assigns_val_to_centroids_fit_on_train'),
                Point('K=27 k-means metric', 'cosine: features L2-normalised '
                      '(--metric_test cosine), faiss L2 k-means on them; the centroids are the '
                      'L2 means, val assigned by the dot product with them', 'spherical k-means: '
                      'unit centroids, val assigned by the cosine', '',
                      'one k-means for every preset (mmdense.models.utils.kmeans); the '
                      'assignment differs only where centroid norms differ'),
                Point('K=27 k-means fit', 'mini-batch k-means (commons.run_mini_batch_kmeans: '
                      'faiss k-means, niter 30, on the first 30 batches of 256 images, then '
                      'running-mean updates per 30 batches), one run', 'k-means++ seeds from '
                      '<= 50,000 train points, 30 full Lloyd passes over all train points, '
                      'one run', '', 'a full-batch fit of the same objective: no dependence on '
                      'the loader order'),
                Point('K=27 val assignment', 'similarity maps upsampled bilinearly to the '
                      'label size, then argmax (commons.evaluate)', 'the same',
                      PROTOCOL_TESTS + 'test_coco_stuff27_assigns_val_to_centroids_fit_on_train'),
                Point('K=27 matching', 'Hungarian on the pixel-count histogram '
                      '(commons.evaluate: linear_assignment(histogram.max() - histogram))',
                      'Hungarian on pixel counts', PROTOCOL_TESTS +
                      'test_hungarian_on_iou_and_on_pixels_pick_differently'),
                Point('STEGO variant', 'STEGO (src/eval_segmentation.py, eval_config.yml): a '
                      'cluster probe trained on train features of its segmentation head, '
                      'features averaged with those of the flipped image, dense CRF '
                      '(run_crf: True)', 'PiCIE\'s protocol on the backbone\'s features', '',
                      'STEGO\'s published numbers include its head, the flip average and the '
                      'CRF; they are not a frozen-backbone protocol'),
                Point('K=100, 300 majority', 'none published on COCO-Stuff-27 (Leopart '
                      'over-clusters COCO-Stuff with its own 15-class split at 448 px)',
                      'k-means of the val features, best of 3 spherical runs, 50 iterations, '
                      'majority matching', '', 'a diagnostic of this project: do not compare '
                      'it with a paper'),
                Point('linear probe', 'PiCIE and STEGO train their linear probe with their '
                      'own heads; none stand-alone', 'Leopart\'s linear recipe on stored '
                      'features at 320 px', '', 'no stand-alone reference; Leopart\'s is the '
                      'published frozen-feature recipe closest to it'),
            ) + _leopart_probe_points('320')[:3]),
        DensePreset(
            name='voc12_leopart',
            dataset='voc12aug',
            source='Leopart (Ziegler & Asano, CVPR 2022; github.com/MkuuWaUjinga/leopart): '
            'PASCAL VOC 2012, linear probe trained on trainaug (10,582 images) and scored on '
            'val (1,449) at 448 px; clustering of the val features (standardised, PCA to 50 '
            'dims, Euclidean k-means, 100 iterations, best of 5 restarts, mean over 5 seeds) '
            'with K=21 and Hungarian matching on IoU, and over-clustering K=100, 300, 500 with '
            'majority matching, scored at 100 px; images resized to 448x448',
            img_size=448,
            crop='resize',
            label_size=448,
            num_train=10_582,
            num_val=1_449,
            protocols=(('linear', dict(LEOPART_LINEAR, train_label_size=100)),
                       ('cluster', dict(LEOPART_CLUSTER, num_clusters=21,
                                        matching='hungarian_iou')),
                       ('cluster', dict(LEOPART_CLUSTER, num_clusters=100, matching='majority')),
                       ('cluster', dict(LEOPART_CLUSTER, num_clusters=300, matching='majority')),
                       ('cluster', dict(LEOPART_CLUSTER, num_clusters=500, matching='majority'))),
            points=(
                Point('images', 'T.Resize((448, 448)), masks nearest (sup_overcluster.py, '
                      'eval_linear.py)', '448 x 448, no aspect, masks nearest (cv2)',
                      'tests/test_evaluation/test_dense_presets.py::'
                      'test_voc_palette_masks_are_read_as_class_indices'),
                NATIVE_STRIDE,
                Point('linear probe scored at', '448 px (eval_linear.py --mask_eval_size 448)',
                      '448 px', PROTOCOL_TESTS + 'test_leopart_linear_probe_step_by_hand'),
                Point('linear probe trained at', '100 px masks (linear_finetune.py '
                      'train_mask_size 100)', '100 px (labels nearest from 448)',
                      PROTOCOL_TESTS + 'test_leopart_linear_probe_step_by_hand'),
            ) + _leopart_probe_points('448') + (
                Point('clustering input', 'StandardScaler (ddof 0), faiss PCAMatrix to 50 dims '
                      '(utils.normalize_and_transform, pca_dim: 50)', 'the same, from float64 '
                      'moments of all val points', PROTOCOL_TESTS +
                      'test_standardised_pca_equals_numpy'),
                Point('k-means', 'faiss.Kmeans(niter=100, nredo=5, spherical=False) '
                      '(utils.cluster): Euclidean, the restart with the lowest inertia',
                      'Euclidean, 100 iterations, best of 5 restarts by inertia',
                      PROTOCOL_TESTS + 'test_euclidean_kmeans_keeps_the_restart_of_lowest_'
                      'inertia'),
                Point('k-means seeding and sample', 'faiss: seeds are random training points, '
                      'and it trains on a random sample of 256 K points (max_points_per_centroid '
                      'default: 5,376 of the ~1.1 M val points for K=21)', 'k-means++ seeds '
                      '(from <= 50,000 points), Lloyd on all points', '', 'k-means++ is the '
                      'one seeding of mmdense.models.utils.kmeans; fitting every point removes '
                      'the sampling noise'),
                Point('seeds', 'num_seeds: 5 (seed=i, i = 0..4), np.mean of the 5 mIoUs',
                      '5 seeds, mean and population std (mIoU_std)', PROTOCOL_TESTS +
                      'test_leopart_clustering_reports_mean_and_std_over_seeds'),
                Point('K=21 matching', 'Hungarian on IoU (PredsmIoU._hungarian_match: '
                      'linear_sum_assignment(1 - iou_mat))', 'Hungarian on IoU',
                      PROTOCOL_TESTS + 'test_hungarian_on_iou_and_on_pixels_pick_differently'),
                Point('K=100, 300, 500 matching', 'many-to-one by precision '
                      '(compute_miou(many_to_one=True, precision_based=True)): each cluster '
                      'to the class holding most of its pixels', 'majority (the same)',
                      'tests/test_evaluation/test_dense_protocols.py::'
                      'test_hungarian_leaves_extra_clusters_unmatched_and_majority_merges_'
                      'them'),
                Point('clusters scored at', '100 px (mask_eval_size=100), cluster maps nearest',
                      '100 px, nearest', PROTOCOL_TESTS +
                      'test_leopart_clustering_reports_mean_and_std_over_seeds'),
                Point('mIoU averaged over', 'all 21 classes (an absent class counts 0)',
                      'the classes present in labels or predictions', '', 'equal on the full '
                      'val split, where all 21 classes are present'),
            )),
        DensePreset(
            name='ade20k_linear',
            dataset='ade20k',
            source='ADE20K SceneParsing (Zhou et al., CVPR 2017; 150 classes, 20,210 train / '
            '2,000 val images): frozen-backbone linear segmentation, the "linear" protocol of '
            'iBOT (Zhou et al., ICLR 2022) and DINOv2 (Oquab et al., TMLR 2024), at 512 px',
            img_size=512,
            num_train=20_210,
            num_val=2_000,
            protocols=(('linear', LEOPART_LINEAR), ),
            points=(
                NATIVE_STRIDE,
                Point('val images', 'whole images: shorter side to 512, sliding window 512 x '
                      '512 at stride 341 (DINOv2\'s mmseg config dinov2_vits14_ade20k_linear_'
                      'config.py, published at dl.fbaipublicfiles.com, not in the repository; '
                      'mmseg test_cfg mode slide)', 'one 512 x 512 centre crop per image', '',
                      'the feature store holds one fixed grid per split; whole images of '
                      'varying size are not stored yet'),
                Point('linear head training', 'inside mmseg: BN + 1x1 conv on the last '
                      'layer(s), random scale 0.5-2 crops at 512, flip, photometric '
                      'distortion, 40k iterations', 'Leopart\'s linear recipe on stored '
                      'features of the centre crop', '', CACHED_PROBE_INPUT),
            ) + _leopart_probe_points('512')[:3]),
        DensePreset(
            name='cityscapes_linear',
            dataset='cityscapes',
            source='Cityscapes (Cordts et al., CVPR 2016; 19 classes, 2,975 train / 500 val '
            'images): frozen-backbone linear segmentation as reported by DINOv2 (Oquab et al., '
            'TMLR 2024), at 512 px',
            img_size=512,
            num_train=2_975,
            num_val=500,
            protocols=(('linear', LEOPART_LINEAR), ),
            points=(
                NATIVE_STRIDE,
                Point('val images', 'whole 1024 x 2048 frames, sliding window (mmseg '
                      'Cityscapes configs: test_cfg mode slide; DINOv2 publishes no Cityscapes '
                      'config)', 'the centre 1024 x 1024 of each frame, resized to 512', '',
                      'the feature store holds one fixed grid per split; whole frames are not '
                      'stored yet: half of each frame is not scored'),
                Point('linear head training', 'inside mmseg with augmented crops (DINOv2)',
                      'Leopart\'s linear recipe on stored features of the centre crop', '',
                      CACHED_PROBE_INPUT),
            ) + _leopart_probe_points('512')[:3]),
        DensePreset(
            name='toy',
            dataset='toy',
            source='This project\'s toy scenes (tools/misc/make_toy_scenes.py: 600 train / 100 '
            'val images by default; 9 labels) at 96 px, every protocol, so that the whole '
            'pipeline runs on a CPU in minutes',
            img_size=96,
            protocols=(('linear', dict(epochs=30, batch_size=16, lr=1e-2)), ('knn', dict(k=10)),
                       ('cluster', dict(num_clusters=9, matching='hungarian')),
                       ('cluster', dict(num_clusters=100, matching='majority')),
                       ('dispersion', {})),
            points=(Point('protocol', 'none: not a published protocol', 'this project\'s', '',
                          'counts are those of the split on disk'), )),
    )
}


def get_preset(name: str) -> DensePreset:
    if name not in PRESETS:
        raise KeyError(f'unknown dense-eval preset {name!r}; choose from {sorted(PRESETS)}')
    return PRESETS[name]


def format_preset(preset: DensePreset) -> str:
    """The preset as the lines printed before a run: its settings, its source, then each point
    beside the reference protocol (``=`` the same, ``≠`` a departure, with the reason)."""
    count = lambda n: 'whole split' if n is None else f'{n:,}'  # noqa: E731
    grid = ('features at the backbone\'s native stride' if preset.grid is None else
            f'feature stride {preset.feature_stride} (grid {preset.grid[0]}x{preset.grid[1]})')
    lines = [
        f'preset {preset.name}: dataset {preset.dataset}, {preset.img_size} px '
        f'({preset.crop}), {grid}, scored at {preset.label_size or preset.img_size} px',
        f'  images: train {count(preset.num_train)}, val {count(preset.num_val)}' +
        (f'; lists {preset.train_list}, {preset.val_list}' if preset.train_list else ''),
    ]
    lines += [f'  {protocol} {describe_setting(protocol, options)}: {options}'
              for protocol, options in preset.protocols]
    lines += [f'  source: {preset.source}', '  reference protocol, point by point:']
    for point in preset.points:
        mark = '!=' if point.departure else '=='
        lines.append(f'  {mark} {point.setting}: {point.value}; reference: {point.reference}')
        if point.departure:
            lines.append(f'       departure: {point.departure}')
    return '\n'.join(lines)


def preset_data_cfg(preset: DensePreset, data_root: Optional[str] = None,
                    train_list: Optional[str] = None, val_list: Optional[str] = None) -> dict:
    """The ``dense_eval_data`` dict of ``preset``'s dataset with the preset's resolution, crop,
    scoring size and image lists (``train_list`` / ``val_list`` override the preset's paths).

    Instance annotations serve only the dispersion protocol (on val): they are dropped from the
    train split, and from val unless the preset runs dispersion. Whether the lists and files
    exist is :func:`.data_check.check_data`'s to say (the dataset config's ``prepare`` table
    names where each comes from; a list path given here that is missing is reported with the
    preset's ``list_source``).
    """
    data_cfg = load_dataset_config(preset.dataset, data_root)
    data_cfg.update(img_size=preset.img_size, crop=preset.crop, label_size=preset.label_size)
    data_cfg['train'].pop('instance_ann_file', None)
    if not any(protocol == 'dispersion' for protocol, _ in preset.protocols):
        data_cfg['val'].pop('instance_ann_file', None)
    for split, given in (('train', train_list), ('val', val_list)):
        if getattr(preset, f'{split}_list') or given:
            root = split_root(data_cfg[split])
            path = osp.abspath(given or osp.join(root, getattr(preset, f'{split}_list')))
            data_cfg[split]['img_list'] = path
            if given:
                data_cfg.setdefault('prepare', {})[osp.relpath(path, osp.abspath(root or '.'))] = \
                    f'get it from {preset.list_source}'
    return data_cfg
