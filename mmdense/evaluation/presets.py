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

from .data import load_dataset_config, split_root

# Leopart's linear recipe (Ziegler & Asano, CVPR 2022, github.com/MkuuWaUjinga/leopart,
# experiments/linear_probing/linear_finetune.py and its configs): SGD, lr 0.01, momentum 0.9,
# weight decay 1e-4, 25 epochs, lr x0.1 after epoch 20, 60 images per step.
LEOPART_LINEAR = dict(epochs=25, batch_size=60, optimizer='sgd', lr=0.01, momentum=0.9,
                      weight_decay=1e-4, lr_step=20, lr_gamma=0.1)


@dataclasses.dataclass(frozen=True)
class DensePreset:
    """A named dense-evaluation protocol.

    Attributes:
        name: the preset's name.
        dataset: dense-eval dataset name (:data:`.data.DATASET_CONFIGS`) or config path.
        source: the papers / repositories the protocol follows.
        img_size: images are brought to ``img_size x img_size`` ...
        crop: ... by ``'center'`` (shorter side, centre square) or ``'resize'`` (no aspect).
        feature_stride: the protocols run on a ``(img_size / feature_stride)²`` grid; a backbone
            whose own grid differs has its feature maps resampled (bilinear) to it.
        label_size: predictions are scored on ``label_size²`` label maps (None: ``img_size``).
        num_train, num_val: images in the protocol's splits (None: the whole split as found).
        train_list, val_list: image-list files the splits are restricted to, relative to the
            data root unless given otherwise; ``list_source`` says where to obtain them.
        protocols: ``(protocol, options)`` pairs, options as in
            :func:`.streaming.run_stream_protocol`.
        notes: where this implementation departs from the source.
    """
    name: str
    dataset: str
    source: str
    img_size: int
    crop: str = 'center'
    feature_stride: int = 16
    label_size: Optional[int] = None
    num_train: Optional[int] = None
    num_val: Optional[int] = None
    train_list: Optional[str] = None
    val_list: Optional[str] = None
    list_source: str = ''
    protocols: Tuple[Tuple[str, dict], ...] = ()
    notes: str = ''

    @property
    def grid(self) -> Tuple[int, int]:
        side = self.img_size // self.feature_stride
        return side, side

    @property
    def needs_train(self) -> bool:
        return any(protocol in ('linear', 'knn') for protocol, _ in self.protocols)

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
        return f"K={options.get('num_clusters', 'C')} {options.get('matching', 'hungarian')}"
    if protocol == 'knn':
        return f"k={options.get('k', 10)}"
    if protocol == 'linear':
        return (f"{options.get('epochs', 30)} ep {options.get('optimizer', 'adam')} "
                f"lr {options.get('lr', 1e-2):g}")
    return ''


COCO_LISTS = ('https://github.com/janghyuncho/PiCIE: curated/train2017/ and curated/val2017/'
              'Coco164kFull_Stuff_Coarse_7.txt (also inside STEGO\'s cocostuff.zip, '
              'github.com/mhamilton723/STEGO, src/download_datasets.py)')

PRESETS: Dict[str, DensePreset] = {
    preset.name: preset
    for preset in (
        DensePreset(
            name='coco_stuff27',
            dataset='coco_stuff27',
            source='COCO-Stuff-27 curated split of IIC/PiCIE (Cho et al., CVPR 2021: image lists '
            'Coco164kFull_Stuff_Coarse_7.txt, 49,629 train2017 / 2,175 val2017 images, the 171 '
            'classes merged into 27 coarse ones, evaluated at 320 px: shorter side to 320, '
            'centre crop), as used by STEGO (Hamilton et al., ICLR 2022) and later '
            'unsupervised-segmentation work; unsupervised segmentation by k-means with K=27 and '
            'Hungarian matching, over-clustering with K=100 and 300 and majority matching',
            img_size=320,
            num_train=49_629,
            num_val=2_175,
            train_list='curated/train2017/Coco164kFull_Stuff_Coarse_7.txt',
            val_list='curated/val2017/Coco164kFull_Stuff_Coarse_7.txt',
            list_source=COCO_LISTS,
            protocols=(('linear', LEOPART_LINEAR), ('cluster', dict(num_clusters=27,
                                                                    matching='hungarian')),
                       ('cluster', dict(num_clusters=100, matching='majority')),
                       ('cluster', dict(num_clusters=300, matching='majority'))),
            notes='The curated-split papers train their linear probe alongside their own '
            'heads; this preset uses Leopart\'s stand-alone linear recipe on cached features '
            '(no augmentation). Clustering: spherical k-means on L2-normalised features (best '
            'of 3 seeded runs, 50 iterations); Hungarian matching maximises matched pixels, as '
            'STEGO does. Labels: mmseg\'s coco_stuff164k.py conversion (171 classes), then the '
            '171->27 table of dense_eval_coco_stuff27.py.'),
        DensePreset(
            name='voc12_leopart',
            dataset='voc12aug',
            source='Leopart (Ziegler & Asano, CVPR 2022; github.com/MkuuWaUjinga/leopart): '
            'PASCAL VOC 2012, linear probe trained on trainaug (10,582 images) and scored on '
            'val (1,449), over-clustering of the val features with K=100, 300, 500 and '
            'many-to-one (majority) matching, and K=21 with Hungarian matching; images resized '
            'to 448x448, predictions scored on 100x100 label maps',
            img_size=448,
            crop='resize',
            label_size=100,
            num_train=10_582,
            num_val=1_449,
            protocols=(('linear', LEOPART_LINEAR), ('cluster', dict(num_clusters=21,
                                                                    matching='hungarian')),
                       ('cluster', dict(num_clusters=100, matching='majority')),
                       ('cluster', dict(num_clusters=300, matching='majority')),
                       ('cluster', dict(num_clusters=500, matching='majority'))),
            notes='Leopart trains the probe with random resized crops and flips; here it reads '
            'cached features of the plain resized images. Leopart clusters PCA-50 features with '
            'faiss k-means and averages 5 seeds; here spherical k-means on the full features, '
            'best of 3 seeded runs. Leopart\'s K=21 Hungarian matching maximises IoU; here it '
            'maximises matched pixels.'),
        DensePreset(
            name='ade20k_linear',
            dataset='ade20k',
            source='ADE20K SceneParsing (Zhou et al., CVPR 2017; 150 classes, 20,210 train / '
            '2,000 val images): frozen-backbone linear segmentation, the "linear" protocol of '
            'iBOT (Zhou et al., ICLR 2022) and DINOv2 (Oquab et al., TMLR 2024), at 512 px '
            '(the crop size of the mmseg ADE20K configs)',
            img_size=512,
            num_train=20_210,
            num_val=2_000,
            protocols=(('linear', LEOPART_LINEAR), ),
            notes='iBOT and DINOv2 train the linear layer inside mmseg (augmented crops, '
            'sliding-window test); here the probe reads cached features of one centre crop per '
            'image, with Leopart\'s linear recipe.'),
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
            notes='The centre crop keeps the middle 1024x1024 of each 1024x2048 frame (shorter '
            'side to 512); DINOv2 trains inside mmseg with augmented crops and sliding-window '
            'test. Recipe: Leopart\'s linear.'),
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
            notes='Not a published protocol; counts are those of the split on disk.'),
    )
}


def get_preset(name: str) -> DensePreset:
    if name not in PRESETS:
        raise KeyError(f'unknown dense-eval preset {name!r}; choose from {sorted(PRESETS)}')
    return PRESETS[name]


def format_preset(preset: DensePreset) -> str:
    """The preset as the lines printed before a run."""
    count = lambda n: 'whole split' if n is None else f'{n:,}'  # noqa: E731
    lines = [
        f'preset {preset.name}: dataset {preset.dataset}, {preset.img_size} px '
        f'({preset.crop}), feature stride {preset.feature_stride} '
        f'(grid {preset.grid[0]}x{preset.grid[1]}), scored at '
        f'{preset.label_size or preset.img_size} px',
        f'  images: train {count(preset.num_train)}, val {count(preset.num_val)}' +
        (f'; lists {preset.train_list}, {preset.val_list}' if preset.train_list else ''),
    ]
    lines += [f'  {protocol} {describe_setting(protocol, options)}: {options}'
              for protocol, options in preset.protocols]
    lines += [f'  source: {preset.source}', f'  notes: {preset.notes}']
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
