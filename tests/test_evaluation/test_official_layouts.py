"""Each dense-eval preset on a miniature of its official archives, prepared by the commands
configs/dense_eval/README.md documents (tests/official_layouts.py builds the archives and runs
the commands, mmseg's converters included), then evaluated end to end; and the data check that
names what an incomplete root lacks and the command that makes it."""
import os
import os.path as osp
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import official_layouts as layouts
from helpers import ROOT
from mmdense.evaluation import DenseEvalDataset
from mmdense.evaluation.preset_eval import evaluate_preset
from mmdense.evaluation.presets import get_preset, preset_data_cfg

pytestmark = pytest.mark.usefixtures('one_thread')
TOOL = osp.join(ROOT, 'tools', 'test_dense.py')


@pytest.fixture(scope='module')
def voc(tmp_path_factory):
    folder = tmp_path_factory.mktemp('voc')
    archives = layouts.voc_archives(folder / 'downloads')
    return dict(archives, root=layouts.prepare_voc(archives, folder / 'data'))


@pytest.fixture(scope='module')
def coco_stuff(tmp_path_factory):
    folder = tmp_path_factory.mktemp('coco_stuff')
    archives = layouts.coco_stuff_archives(folder / 'downloads')
    return dict(archives, root=layouts.prepare_coco_stuff(archives, folder / 'data'))


@pytest.fixture(scope='module')
def cityscapes(tmp_path_factory):
    folder = tmp_path_factory.mktemp('cityscapes')
    archives = layouts.cityscapes_archives(folder / 'downloads')
    return dict(archives, root=layouts.prepare_cityscapes(archives, folder / 'data'))


@pytest.fixture(scope='module')
def ade20k(tmp_path_factory):
    folder = tmp_path_factory.mktemp('ade20k')
    archives = layouts.ade20k_archives(folder / 'downloads')
    return dict(archives, root=layouts.prepare_ade20k(archives, folder / 'data'))


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    root = layouts.prepare_toy(tmp_path_factory.mktemp('toy'))
    labels = {
        split: {name[:-4]: np.array(Image.open(osp.join(root, 'semantic', split, name)))
                for name in sorted(os.listdir(osp.join(root, 'semantic', split)))}
        for split in ('train', 'val')
    }
    return dict(root=root, **labels)


LAYOUT_OF = dict(voc12_leopart='voc', coco_stuff27='coco_stuff', cityscapes_linear='cityscapes',
                 ade20k_linear='ade20k', toy='toy')


@pytest.fixture(scope='module')
def vit():
    return layouts.tiny_vit()


def test_voc_aug_leaves_trainaug_masks_in_two_folders(voc):
    """What mmseg's voc_aug.py writes (the facts the VOC preset is built on): SBD's masks only,
    a trainaug.txt that also lists VOC-train ids SBD lacks, and aug.txt (SBD minus VOC)."""
    sets = osp.join(voc['root'], 'ImageSets', 'Segmentation')
    aug_masks = sorted(name[:-4] for name in os.listdir(osp.join(voc['root'],
                                                                 'SegmentationClassAug')))
    assert aug_masks == sorted(set(layouts.SBD_TRAIN + layouts.SBD_VAL))
    trainaug = open(osp.join(sets, 'trainaug.txt')).read().split()
    assert sorted(trainaug) == sorted(voc['train'])
    assert layouts.VOC_ONLY_TRAIN in trainaug and layouts.VOC_ONLY_TRAIN not in aug_masks
    aug = open(osp.join(sets, 'aug.txt')).read().split()
    assert sorted(aug) == sorted(set(voc['train']) - set(layouts.VOC_TRAIN))
    # the .mat masks arrive as written: SBD's mask, not VOC's, for the VOC-train id SBD has
    sbd_copy = np.array(Image.open(osp.join(voc['root'], 'SegmentationClassAug',
                                            '2007_000032.png')))
    assert not np.array_equal(sbd_copy, voc['train']['2007_000032'])


@pytest.mark.parametrize('name, constant_line', [
    ('voc_aug.py', 'len(aug_train_list) != 10582'),
    ('coco_stuff164k.py', 'Wrong length of list'),
])
def test_the_converters_assert_the_full_dataset_size(name, constant_line, voc, coco_stuff):
    """Why the miniatures run the converters with their size constant set (and nothing else):
    the plain documented command stops at the full-size assertion."""
    args = ((osp.dirname(voc['root']), osp.join(osp.dirname(osp.dirname(voc['root'])),
                                                'benchmark_RELEASE'))
            if name == 'voc_aug.py' else (coco_stuff['root'], '--nproc', '1'))
    result = layouts.run_converter_as_documented(name, *args)
    assert result.returncode != 0 and constant_line in result.stderr


def image_id(path):
    """An image's id: its file name without the image suffix."""
    name = osp.basename(path)
    for suffix in ('_leftImg8bit.png', '.jpg', '.png'):
        if name.endswith(suffix):
            return name[:-len(suffix)]
    raise ValueError(path)


@pytest.mark.parametrize('preset_name', sorted(LAYOUT_OF))
def test_each_preset_reads_the_labels_its_official_archives_define(preset_name, request):
    """Every sample of each split, through the preset's data config at the images' own size:
    the label map the archive defines for that image (VOC trainaug: VOC's mask for VOC-train
    ids, SBD's for the others; COCO-Stuff: the 27 coarse classes of the curated ids; Cityscapes:
    the polygons' trainIds; ADE20K: reduce_zero_label)."""
    layout = request.getfixturevalue(LAYOUT_OF[preset_name])
    data_cfg = preset_data_cfg(get_preset(preset_name), layout['root'])
    data_cfg.update(img_size=layouts.SIZE, crop='center', label_size=None)
    for split in ('train', 'val'):
        dataset = DenseEvalDataset(data_cfg, split)
        ids = [image_id(info['img_path']) for info in dataset.infos]
        assert sorted(ids) == sorted(layout[split])
        for index, sample in enumerate(ids):
            expected = layout[split][sample].astype(np.int64)
            if expected.shape[1] > expected.shape[0]:  # Cityscapes: the centre square
                left = (expected.shape[1] - expected.shape[0]) // 2
                expected = expected[:, left:left + expected.shape[0]]
            label = dataset[index]['label'].numpy()
            assert np.array_equal(label, expected), (split, sample)


@pytest.mark.parametrize('preset_name', sorted(LAYOUT_OF))
def test_each_preset_runs_end_to_end_on_its_official_layout(preset_name, request, vit,
                                                            tmp_path):
    layout = request.getfixturevalue(LAYOUT_OF[preset_name])
    preset = layouts.tiny_preset(get_preset(preset_name))
    record = evaluate_preset(vit, preset, layout['root'], allow_subset=True, batch_size=2,
                             num_workers=0, feature_dtype='float32', cache_dir=str(tmp_path),
                             progress=False, log=lambda *_: None)
    assert record['subset'] == (preset_name != 'toy')
    expected_train = len(layout['train']) if preset.needs_train else 0
    assert (record['num_train'], record['num_val']) == (expected_train, len(layout['val']))
    assert [(r['protocol'], r['options']) for r in record['results']] == list(preset.protocols)
    for result in record['results']:
        if result['protocol'] != 'dispersion':
            metrics = result['metrics']
            assert 0 <= metrics['pAcc'] <= 1 and 0 <= metrics['mIoU'] <= metrics['grid_mIoU']
    assert os.listdir(tmp_path) == []  # the feature stores are removed


def check_tool(*args):
    return subprocess.run([sys.executable, TOOL, '--check-data', *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_check_data_names_the_voc_aug_command_when_it_was_not_run(voc, vit, tmp_path):
    """Both archives unpacked, voc_aug.py not run: --check-data exits 1 and names the missing
    SegmentationClassAug/ and aug.txt with the voc_aug.py command for this root; the preset run
    stops with the same message before extracting anything."""
    data = tmp_path / 'data'
    os.makedirs(data)
    layouts.run('tar', 'xf', voc['voc_tar'], '-C', data)
    layouts.run('tar', 'xzf', voc['sbd_tgz'], '-C', data)
    root = data / 'VOCdevkit' / 'VOC2012'
    result = check_tool('--preset', 'voc12_leopart', '--data-root', root)
    assert result.returncode == 1, result.stderr[-2000:]
    out = result.stdout
    command = (f"tar xzf benchmark.tgz -C {data}   (SBD, ",
               f"python {layouts.converter('voc_aug.py')} {data / 'VOCdevkit'} "
               f"{data / 'benchmark_RELEASE'} --nproc 8")
    lines = out.splitlines()
    start = lines.index('MISSING:')
    assert lines[start + 1:] == [
        f'  train: dataset path not found: {root}/SegmentationClassAug (seg_map_path folder)',
        lines[start + 2],
        f'  train: dataset path not found: {root}/ImageSets/Segmentation/aug.txt (file list)',
        '    make it: the command above']
    assert lines[start + 2].startswith(f'    make it: {command[0]}')
    assert lines[start + 2].endswith(command[1])
    assert ('train: not counted (a folder or list is missing); samples from '
            'ImageSets/Segmentation/train.txt + ImageSets/Segmentation/aug.txt') in out
    assert 'val: 2 samples from ImageSets/Segmentation/val.txt' in out
    assert f'masks  {root}/SegmentationClass: 2 found, 0 missing' in out
    assert 'complete' not in out.replace('incomplete', '')

    cache = tmp_path / 'cache'
    os.makedirs(cache)
    from mmdense.evaluation.data_check import DataRootError
    with pytest.raises(DataRootError) as error:
        evaluate_preset(vit, layouts.tiny_preset(get_preset('voc12_leopart')), str(root),
                        allow_subset=True, num_workers=0, cache_dir=str(cache),
                        log=lambda *_: None)
    assert f'dataset path not found: {root}/SegmentationClassAug' in str(error.value)
    assert command[1] in str(error.value) and os.listdir(cache) == []


def test_check_data_counts_each_folder_of_a_complete_root(voc):
    result = check_tool('--preset', 'voc12_leopart', '--data-root', voc['root'])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    root = voc['root']
    assert ('train: 5 samples from ImageSets/Segmentation/train.txt + '
            'ImageSets/Segmentation/aug.txt') in result.stdout
    for line in (f'images {root}/JPEGImages: 5 found, 0 missing',
                 f'masks  {root}/SegmentationClass: 2 found, 0 missing',
                 f'masks  {root}/SegmentationClassAug: 3 found, 0 missing'):
        assert line in result.stdout
    assert result.stdout.rstrip().endswith('complete')


def copy_root(layout, tmp_path):
    """A copy of a prepared data root (the parent folders kept, for the commands' paths)."""
    source = layout['root']
    target = tmp_path / osp.relpath(source, osp.dirname(osp.dirname(source)))
    shutil.copytree(source, target)
    return str(target)


def remove(root, *paths):
    for path in paths:
        full = osp.join(root, path)
        shutil.rmtree(full) if osp.isdir(full) else os.remove(full)


@pytest.mark.parametrize('preset_name, removed, problem, command', [
    ('voc12_leopart', ['SegmentationClassAug/2008_000002.png'],
     'train: 1 of 3 masks not found in {root}/SegmentationClassAug (first: 2008_000002.png)',
     'dataset_converters/voc_aug.py {parent} {grandparent}/benchmark_RELEASE --nproc 8'),
    ('coco_stuff27', ['curated'],
     'dataset path not found: {root}/curated/train2017/Coco164kFull_Stuff_Coarse_7.txt '
     '(image list)', 'cp -r PiCIE/curated {root}/'),
    ('coco_stuff27', ['annotations/val2017/000000000285_labelTrainIds.png'],
     'val: 1 of 3 masks not found in {root}/annotations/val2017 (first: '
     '000000000285_labelTrainIds.png)',
     'dataset_converters/coco_stuff164k.py {root} --nproc 8'),
    ('coco_stuff27', ['images/train2017/000000000042.jpg'],
     'train: 1 of 4 images not found in {root}/images/train2017 (first: 000000000042.jpg)',
     'unzip train2017.zip -d {root}/images'),
    ('cityscapes_linear', ['gtFine/val/lindau/lindau_000000_000019_gtFine_labelTrainIds.png'],
     'val: 1 of 2 masks not found in {root}/gtFine/val (first: '
     'lindau/lindau_000000_000019_gtFine_labelTrainIds.png)',
     'dataset_converters/cityscapes.py {root} --nproc 8'),
    ('ade20k_linear', ['annotations/validation'],
     'val: dataset path not found: {root}/annotations/validation (seg_map_path folder)',
     'unzip ADEChallengeData2016.zip -d {parent}'),
    ('toy', ['semantic/val'], 'val: dataset path not found: {root}/semantic/val',
     'python tools/misc/make_toy_scenes.py --out {root}'),
])
def test_check_data_names_what_is_missing_and_the_command_that_makes_it(
        preset_name, removed, problem, command, request, tmp_path):
    from mmdense.evaluation.data_check import check_data
    from mmdense.evaluation.preset_eval import split_counts
    root = copy_root(request.getfixturevalue(LAYOUT_OF[preset_name]), tmp_path)
    remove(root, *removed)
    preset = get_preset(preset_name)
    check = check_data(preset_data_cfg(preset, root), split_counts(preset))
    message = str(check.error())
    fields = dict(root=root, parent=osp.dirname(root), grandparent=osp.dirname(osp.dirname(root)))
    assert problem.format(**fields) in message and command.format(**fields) in message
    assert not check.complete and message.startswith(f'dense-eval data under {root} is '
                                                     'incomplete')
