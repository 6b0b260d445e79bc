"""Named dense-evaluation presets: documented, refused on subsets, reading image lists and
label encodings, reported with the checkpoint's hash. (Each preset end to end on its official
archive layout: test_official_layouts.py.)"""
import dataclasses
import hashlib
import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from mmdense.evaluation import DenseEvalDataset, build_protocol, coco_stuff_171_to_27
from mmdense.evaluation.preset_eval import (SubsetError, evaluate_preset, format_markdown,
                                            write_report)
from mmdense.evaluation.presets import PRESETS, format_preset, get_preset, preset_data_cfg
from official_layouts import tiny_preset, tiny_vit

IDS = [f'{i:012d}' for i in (25, 30, 42, 64, 73, 74)]
COCO_FINE = (0, 2, 100, 150)  # person, car, and two stuff classes of the 171


def scene(seed, values, size=(48, 64)):
    """An RGB image and a label map: four vertical bands, each class with its own colour."""
    rng = np.random.default_rng(seed)
    label = np.zeros(size, np.uint8)
    image = rng.integers(0, 40, (*size, 3), dtype=np.uint8)
    for band, value in enumerate(rng.permutation(values)):
        cols = slice(band * size[1] // 4, (band + 1) * size[1] // 4)
        label[:, cols] = value
        image[:, cols] += np.uint8(50 * (list(values).index(value) + 1) % 200)
    label[:4] = 255  # an ignored border
    return image, label


def write(path, array, palette=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3:
        cv2.imwrite(str(path), array)
    else:
        image = Image.fromarray(array, mode='P' if palette else 'L')
        if palette:
            image.putpalette([c for i in range(256) for c in (i, 255 - i, 7 * i % 256)])
        image.save(path)


def coco_stuff_mini(root):
    """COCO-Stuff-164k as mmseg converts it (171-class ``*_labelTrainIds.png``) with curated
    image lists that name 4 of the 6 train and 3 of the 4 val images."""
    for split, ids, listed in (('train2017', IDS, IDS[1:5]), ('val2017', IDS[:4], IDS[:3])):
        for i, image_id in enumerate(ids):
            image, label = scene(i + len(split), COCO_FINE)
            write(root / 'images' / split / f'{image_id}.jpg', image)
            write(root / 'annotations' / split / f'{image_id}_labelTrainIds.png', label)
        lst = root / 'curated' / split / 'Coco164kFull_Stuff_Coarse_7.txt'
        lst.parent.mkdir(parents=True, exist_ok=True)
        lst.write_text(''.join(f'{image_id}\n' for image_id in listed))
    return root


def voc_mini(root):
    """VOC 2012 as the VOC tar + mmseg's voc_aug.py leave it: palette PNG masks of VOC's train
    and val in SegmentationClass/, SBD's in SegmentationClassAug/ (listed in aug.txt)."""
    sets = dict(train=(['2007_000032', '2007_000039'], 'SegmentationClass'),
                aug=(['2008_000002', '2008_000003'], 'SegmentationClassAug'),
                val=(['2007_000033', '2007_000042', '2009_000001'], 'SegmentationClass'))
    for split, (ids, masks) in sets.items():
        for i, image_id in enumerate(ids):
            image, label = scene(i + 10 * len(split), (0, 1, 15, 20))
            write(root / 'JPEGImages' / f'{image_id}.jpg', image)
            write(root / masks / f'{image_id}.png', label, palette=True)
        lst = root / 'ImageSets' / 'Segmentation' / f'{split}.txt'
        lst.parent.mkdir(parents=True, exist_ok=True)
        lst.write_text('\n'.join(ids) + '\n')
    return root


@pytest.fixture(scope='module')
def vit():
    return tiny_vit()


@pytest.mark.parametrize('name', sorted(PRESETS))
def test_every_preset_names_its_source_and_settings(name):
    preset = get_preset(name)
    assert preset.source and preset.points and preset.protocols
    assert {protocol for protocol, _ in preset.protocols} <= {'linear', 'knn', 'cluster',
                                                              'dispersion'}
    if name != 'toy':
        assert preset.num_train > 1000 and preset.num_val > 400
    text = format_preset(preset)
    for fact in (f'{preset.img_size} px', "features at the backbone's native stride",
                 preset.source):
        assert fact in text
    assert json.loads(json.dumps(preset.record()))['protocols'][0]['protocol'] == \
        preset.protocols[0][0]
    with pytest.raises(KeyError, match="unknown dense-eval preset 'nope'"):
        get_preset('nope')
    # every setting is a valid protocol object, and the preset's needs follow from them
    protocols = [build_protocol(protocol, **options) for protocol, options in preset.protocols]
    assert preset.needs_train == any(protocol.needs_train for protocol in protocols)


def test_an_unknown_protocol_option_is_one_clear_error():
    with pytest.raises(ValueError, match=r"protocol 'knn' has no option 'num_clusters'; its "
                       r"options are \('k', 'temperature', 'query_points', 'chunk_images'\)"):
        build_protocol('knn', num_clusters=3)
    with pytest.raises(ValueError, match="unknown dense protocol 'segformer'"):
        build_protocol('segformer')


def test_curated_lists_select_and_order_the_images(tmp_path):
    root = coco_stuff_mini(tmp_path / 'coco')
    data_cfg = preset_data_cfg(get_preset('coco_stuff27'), str(root))
    train = DenseEvalDataset(data_cfg, 'train')
    assert [info['img_path'].split('/')[-1] for info in train.infos] == \
        [f'{i}.jpg' for i in IDS[1:5]]
    # the 171 fine classes arrive as their 27 coarse ones
    lut = coco_stuff_171_to_27()
    coarse = {int(lut[c]) for c in COCO_FINE} | {255}
    assert set(train[0]['label'].unique().tolist()) == coarse
    (root / 'curated/val2017/Coco164kFull_Stuff_Coarse_7.txt').write_text('000000999999\n')
    data_cfg = preset_data_cfg(get_preset('coco_stuff27'), str(root))
    with pytest.raises(FileNotFoundError, match=r'val: 1 of 1 images not found in '
                       r'.*/images/val2017 \(first: 000000999999.jpg\)'):
        DenseEvalDataset(data_cfg, 'val')
    data_cfg = preset_data_cfg(get_preset('coco_stuff27'), str(root),
                               val_list=str(tmp_path / 'x'))
    with pytest.raises(FileNotFoundError, match=f'dataset path not found: {tmp_path}/x '
                       r'\(image list\)\n    make it: get it from .*janghyuncho/PiCIE'):
        DenseEvalDataset(data_cfg, 'val')


def test_voc_palette_masks_are_read_as_class_indices(tmp_path):
    from mmdense.evaluation import load_dataset_config, load_split
    root = voc_mini(tmp_path / 'voc')
    labels = load_split(dict(load_dataset_config('voc12', str(root)), img_size=32), 'val',
                        2)['labels']
    assert labels.shape == (2, 32, 32)  # one channel: palette indices, not the colours
    assert set(labels.unique().tolist()) == {0, 1, 15, 20, 255}
    leopart = preset_data_cfg(get_preset('voc12_leopart'), str(root))
    item = DenseEvalDataset(leopart, 'train')[0]  # 448x448 without aspect, scored at 448
    assert item['image'].shape == (3, 448, 448) and item['label'].shape == (448, 448)


def test_a_run_on_fewer_images_than_its_preset_is_refused_or_marked(tmp_path, vit, toy_root):
    root = coco_stuff_mini(tmp_path / 'coco')
    with pytest.raises(SubsetError, match=r'train uses 4 images, the preset 49,629; '
                       r'val uses 3 images, the preset 2,175'):
        evaluate_preset(vit, tiny_preset(get_preset('coco_stuff27')), str(root),
                        log=lambda *_: None)
    toy = tiny_preset(get_preset('toy'))
    toy = dataclasses.replace(toy, protocols=(('dispersion', {}), ))
    lines = []
    record = evaluate_preset(vit, toy, toy_root, num_val=3, allow_subset=True, num_workers=0,
                             log=lines.append)
    assert record['subset'] and record['num_val'] == 3
    assert any('WARNING: preset toy: val uses 3 images, the preset 8' in line for line in lines)
    assert not evaluate_preset(vit, toy, toy_root, num_workers=0, log=lines.append)['subset']


def test_report_is_written_as_json_and_markdown_with_the_checkpoint_hash(tmp_path, vit,
                                                                         toy_root):
    checkpoint = tmp_path / 'model.pth'
    torch.save(dict(state_dict=vit.state_dict()), checkpoint)
    preset = dataclasses.replace(tiny_preset(get_preset('toy')), protocols=(('knn', dict(k=5)), ))
    record = evaluate_preset(vit, preset, toy_root, num_val=4, allow_subset=True,
                             num_workers=0, log=lambda *_: None)
    paths = write_report(record, str(tmp_path / 'out' / 'result.json'), str(checkpoint),
                         'configs/x.py')
    stored = json.loads(open(paths['json']).read())
    assert stored['checkpoint_sha256'] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert stored['preset']['img_size'] == 64 and stored['results'] == record['results']
    markdown = open(paths['markdown']).read()
    assert markdown == format_markdown(stored)
    assert stored['checkpoint_sha256'] in markdown and '| knn | k=5 |' in markdown
    assert 'SUBSET of the preset' in markdown


def without_mmseg(monkeypatch):
    """Make ``import mmseg...`` fail as in the ``lite`` environment (no mmseg, or an mmseg whose
    datasets import compiled mmcv ops that mmcv-lite lacks)."""
    import sys
    for name in [n for n in sys.modules if n == 'mmseg' or n.startswith('mmseg.')]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, 'mmseg', None)


def test_the_toy_set_is_listed_without_mmseg_as_mmseg_lists_it(toy_root, monkeypatch):
    """``make demo`` runs in the lite environment: the toy set's plain ``BaseSegDataset`` parts
    are listed without mmseg, sample for sample as mmseg's own ``BaseSegDataset`` lists them."""
    from mmdense.evaluation import load_dataset_config, load_split
    from mmdense.evaluation.data_files import build_seg_dataset
    data_cfg = dict(load_dataset_config('toy', toy_root), img_size=32)
    keys = ('img_path', 'seg_map_path', 'label_map', 'reduce_zero_label')
    with_mmseg = {split: build_seg_dataset(data_cfg[split]) for split in ('train', 'val')}
    expected = {split: [{k: d.get_data_info(i)[k] for k in keys} for i in range(len(d))]
                for split, d in with_mmseg.items()}
    assert type(with_mmseg['train']).__module__.startswith('mmseg.')
    loaded = load_split(data_cfg, 'val', 4)

    without_mmseg(monkeypatch)
    for split in ('train', 'val'):
        listed = build_seg_dataset(data_cfg[split])
        assert not type(listed).__module__.startswith('mmseg.')
        assert [{k: listed.get_data_info(i)[k] for k in keys}
                for i in range(len(listed))] == expected[split]
    again = load_split(data_cfg, 'val', 4)
    assert again['img_paths'] == loaded['img_paths']
    assert torch.equal(again['labels'], loaded['labels'])
    assert torch.equal(again['images'], loaded['images'])


def test_data_that_needs_mmseg_names_the_install_without_it(tmp_path, monkeypatch):
    from mmdense.evaluation import load_dataset_config
    from mmdense.evaluation.data_files import build_seg_dataset
    voc = load_dataset_config('voc12', str(tmp_path))
    without_mmseg(monkeypatch)
    with pytest.raises(ImportError, match=r"'PascalVOCDataset'.*make install"):
        build_seg_dataset(voc['val'])
