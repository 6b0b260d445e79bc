"""skip_corrupt: unreadable images are skipped only when asked, each one logged, and counted."""
from types import SimpleNamespace

import numpy as np
import pytest
from mmengine.logging import MessageHub
from PIL import Image
from torch.utils.data import DataLoader

import mmdense  # noqa: F401
from mmdense.datasets import skip_corrupt
from mmdense.datasets import SkipCorruptImages, UnlabeledImageDataset
from mmdense.engine.hooks import SkippedImagesHook
from mmdense.datasets.transforms import ImageLoadError, LoadRGBImage


@pytest.fixture
def folder_with_corrupt_images(tmp_path):
    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(tmp_path / f'{i}_good.png')
    (tmp_path / '1_truncated.png').write_bytes((tmp_path / '0_good.png').read_bytes()[:40])
    (tmp_path / '2_empty.jpg').write_bytes(b'')
    return tmp_path


def dataset_cfg(root):
    return dict(type='UnlabeledImageDataset', data_root=str(root),
                pipeline=[LoadRGBImage()])


def test_without_the_option_a_corrupt_image_still_raises(folder_with_corrupt_images):
    dataset = UnlabeledImageDataset(**{k: v for k, v in
                                       dataset_cfg(folder_with_corrupt_images).items()
                                       if k != 'type'})
    paths = [dataset.get_data_info(i)['img_path'] for i in range(len(dataset))]
    with pytest.raises(ImageLoadError, match='1_truncated.png'):
        dataset[paths.index(str(folder_with_corrupt_images / '1_truncated.png'))]


def test_skips_are_logged_per_file_and_counted(folder_with_corrupt_images, monkeypatch):
    logged = []
    monkeypatch.setattr(skip_corrupt, 'print_log', lambda msg, **kwargs: logged.append(msg))
    wrapped = SkipCorruptImages(dataset_cfg(folder_with_corrupt_images))
    samples = [wrapped[i] for i in range(len(wrapped))]
    assert len(samples) == len(wrapped) == 6
    assert all(s['img'].shape == (8, 8, 3) for s in samples)
    # sorted: 0_good 1_good 1_truncated 2_empty 2_good 3_good; index 2 falls through two
    # unreadable files, index 3 through one
    assert [m.split(': ', 2)[1] for m in logged] == ['skipped sample 2', 'skipped sample 3',
                                                      'skipped sample 3']
    assert '1_truncated.png' in logged[0] and '2_empty.jpg' in logged[1]
    assert wrapped.pop_skipped_count() == 3
    assert wrapped.pop_skipped_count() == 0


def test_count_is_shared_with_workers_and_reported_after_the_epoch(folder_with_corrupt_images):
    wrapped = SkipCorruptImages(dataset_cfg(folder_with_corrupt_images))
    loader = DataLoader(wrapped, batch_size=2, num_workers=2, collate_fn=list,
                        multiprocessing_context='fork')
    assert sum(len(batch) for batch in loader) == 6
    hub = MessageHub.get_instance('mmdense-test-skip-corrupt')
    runner = SimpleNamespace(train_dataloader=SimpleNamespace(dataset=wrapped), epoch=0,
                             message_hub=hub)
    SkippedImagesHook().after_train_epoch(runner)
    assert hub.get_info('train/skipped_images') == 3


def test_too_many_failures_in_a_row_raise(folder_with_corrupt_images):
    wrapped = SkipCorruptImages(dataset_cfg(folder_with_corrupt_images), max_skips_in_a_row=0)
    with pytest.raises(RuntimeError, match='in a row'):
        [wrapped[i] for i in range(len(wrapped))]


@pytest.mark.parametrize('shape', [(20, 30), (8, 400), (400, 8), (1, 1)],
                         ids=['smaller-than-crop', 'wide-1-to-50', 'tall-50-to-1', 'one-pixel'])
def test_tiny_and_extreme_aspect_images_give_full_size_views(shape):
    """Images smaller than the crop or with extreme aspect ratios are upsampled to the crop size
    and their boxes stay inside the image."""
    from mmdense.datasets.transforms import MultiCropWithGeometry
    np.random.seed(0)
    transform = MultiCropWithGeometry(global_crops=dict(num=2, size=64),
                                      local_crops=dict(num=2, size=32), require_overlap=True)
    img = np.random.randint(0, 255, (*shape, 3), dtype=np.uint8)
    out = transform(dict(img=img))
    assert [v.shape for v in out['img']] == [(64, 64, 3)] * 2 + [(32, 32, 3)] * 2
    boxes = out['crop_boxes']
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= shape[1]).all()
    assert (boxes[:, 3] <= shape[0]).all() and (boxes[:, 2:] > boxes[:, :2]).all()


def test_the_same_file_skipped_again_in_a_later_epoch_is_logged_again(folder_with_corrupt_images,
                                                                      tmp_path):
    """mmengine's logger drops a WARNING identical to an earlier one; every skip message is
    numbered so that a file skipped in every epoch is logged in every epoch."""
    from mmengine.logging import MMLogger
    log_file = tmp_path / 'skips.log'
    MMLogger.get_instance(f'skip-twice-{id(log_file)}', log_file=str(log_file))  # current logger
    wrapped = SkipCorruptImages(dataset_cfg(folder_with_corrupt_images))
    for _ in range(2):  # two epochs over the sample that falls on the truncated file
        wrapped[2]
        assert wrapped.pop_skipped_count() == 2
    lines = [line for line in log_file.read_text().splitlines() if 'skip_corrupt:' in line]
    assert len(lines) == 4
    assert sum('1_truncated.png' in line for line in lines) == 2
    assert [line.rsplit('(skip ', 1)[1] for line in lines] == [
        f'{n} of this run)' for n in (1, 2, 3, 4)]


# ------------------------------------------------------------------------ CoTAP's image pairs
@pytest.fixture
def pairs_folder(folder_with_corrupt_images):
    """The 6 images in a list file, and a neighbour file pairing image i with image i+1."""
    import json
    root = folder_with_corrupt_images
    names = sorted(p.name for p in root.iterdir() if p.is_file())
    (root / 'meta').mkdir()
    (root / 'meta/train.txt').write_text('\n'.join(names) + '\n')
    neighbours = [[(i + 1) % len(names)] for i in range(len(names))]
    (root / 'meta/nn.json').write_text(json.dumps(dict(images=names, neighbours=neighbours)))
    return root, names


def pairs_cfg(root, loss_terms=None):
    return dict(type='NeighbourPairDataset', neighbours_file=str(root / 'meta/nn.json'),
                loss_terms=loss_terms,
                dataset=dict(type='UnlabeledImageDataset', data_root=str(root),
                             ann_file='meta/train.txt', pipeline=PAIR_PIPELINE))


PAIR_PIPELINE = [dict(type='LoadRGBImage'),
                 dict(type='MultiCropWithGeometry', global_crops=dict(num=2, size=16),
                      local_crops=dict(num=0)),
                 dict(type='PackMultiViewInputs', algorithm_keys=['crop_boxes', 'flips'])]


def build(cfg):
    from mmengine.registry import DefaultScope

    from mmdense.registry import DATASETS
    with DefaultScope.overwrite_default_scope('mmdense'):
        return DATASETS.build(cfg)


def test_pairs_with_an_unreadable_image_or_neighbour_are_skipped_and_logged(pairs_folder,
                                                                            monkeypatch):
    root, names = pairs_folder
    logged = []
    monkeypatch.setattr(skip_corrupt, 'print_log', lambda msg, **kwargs: logged.append(msg))
    plain = build(pairs_cfg(root))
    with pytest.raises(ImageLoadError, match='1_truncated.png'):
        plain[names.index('1_good.png')]  # its neighbour is unreadable
    wrapped = build(dict(type='SkipCorruptImages', dataset=pairs_cfg(root)))
    sample = wrapped[names.index('1_good.png')]
    # pairs 1_good→1_truncated, 1_truncated→…, 2_empty→… are unreadable: 2_good→3_good is used
    assert sample['data_samples'].neighbour_idx == names.index('3_good.png')
    assert len(sample['inputs']) == 4 and sample['data_samples'].num_pair_views == 2
    assert wrapped.pop_skipped_count() == 3 == len(logged)
    assert ['1_truncated.png' in logged[0], '1_truncated.png' in logged[1],
            '2_empty.jpg' in logged[2]] == [True] * 3


def test_skipping_inside_the_pairs_is_refused(pairs_folder):
    """Replacing only the unreadable image would pair an image with a non-neighbour."""
    root, _ = pairs_folder
    cfg = pairs_cfg(root)
    cfg['dataset'] = dict(type='SkipCorruptImages', dataset=cfg['dataset'])
    with pytest.raises(TypeError, match="wrap the pairs instead: dict\\(type='SkipCorruptImages'"):
        build(cfg)


def test_skips_of_every_source_of_a_concat_dataset_are_counted(pairs_folder):
    """CoTAP's two-source setting: ConcatDataset of NeighbourPairDatasets, one wrapper per
    source (so a replacement stays in its source), batches from SourceGroupedBatchSampler."""
    from mmengine.dataset import DefaultSampler

    from mmdense.datasets import SourceGroupedBatchSampler
    root, names = pairs_folder
    concat = build(dict(type='ConcatDataset', datasets=[
        dict(type='SkipCorruptImages', dataset=pairs_cfg(root, ['patch', 'cross_patch'])),
        dict(type='SkipCorruptImages', dataset=pairs_cfg(root, ['cls', 'cross_cls']))]))
    sampler = SourceGroupedBatchSampler(DefaultSampler(concat, seed=0), batch_size=2)
    for batch in sampler:
        terms = {concat[i]['data_samples'].loss_terms for i in batch}
        assert len(terms) == 1
    per_source = [d._skipped.value for d in concat.datasets]
    assert all(per_source)
    hub = MessageHub.get_instance('mmdense-test-skip-concat')
    runner = SimpleNamespace(train_dataloader=SimpleNamespace(dataset=concat), epoch=0,
                             message_hub=hub)
    SkippedImagesHook().after_train_epoch(runner)
    assert hub.get_info('train/skipped_images') == sum(per_source)


def test_the_two_source_cotap_config_builds_its_dataset(toy_root):
    """configs/cotap/vit-s_coco-in1k.py: a ConcatDataset of two NeighbourPairDatasets (which
    needs NeighbourPairDataset.full_init), here on the toy scenes."""
    import os.path as osp

    from mmengine.config import Config

    from helpers import ROOT, ring_neighbours_file
    cfg = Config.fromfile(osp.join(ROOT, 'configs/cotap/vit-s_coco-in1k.py'))
    for source in cfg.train_dataloader.dataset.datasets:
        source.neighbours_file = ring_neighbours_file(toy_root)
        source.dataset.update(data_root=toy_root, data_prefix='', ann_file='meta/train.txt')
    dataset = build(cfg.train_dataloader.dataset)
    assert len(dataset) == 2 * 24
    assert dataset[30]['data_samples'].loss_terms == ('cls', 'cross_cls')


# ------------------------------------------------------------------------ neighbour files
BAD_NEIGHBOURS = {
    'out of range': ([[1], [7], [0]],
                     r'neighbours\[1\] \(of .b.png.\) \[0\] is 7, outside \[0, 2\]'),
    'negative': ([[1], [-1], [0]], r'neighbours\[1\] .*\[0\] is -1, outside'),
    'non-integer': ([[1], [2.5], [0]], r'neighbours\[1\] .*\[0\] is 2.5, not an integer index'),
    'null': ([[1], [None], [0]], r'neighbours\[1\] .*\[0\] is None, not an integer index'),
    'true': ([[1], [True], [0]], r'neighbours\[1\] .*\[0\] is True, not an integer index'),
    'string': ([[1], ['2'], [0]], r"neighbours\[1\] .*\[0\] is '2', not an integer index"),
    'itself': ([[1], [2, 1], [0]], r'neighbours\[1\] \(of .b.png.\) \[1\] is the image itself'),
    'empty list': ([[1], [], [0]], r'neighbours\[1\] .*is \[\], not a non-empty list'),
}


@pytest.mark.parametrize('case', list(BAD_NEIGHBOURS))
def test_a_bad_neighbour_entry_is_named_with_the_file(case, tmp_path):
    import json

    from mmdense.datasets.neighbour_pairs import read_neighbours
    neighbours, message = BAD_NEIGHBOURS[case]
    path = tmp_path / 'nn.json'
    path.write_text(json.dumps(dict(images=['a.png', 'b.png', 'c.png'], neighbours=neighbours)))
    with pytest.raises(ValueError, match=f'neighbour file .*nn.json.*: {message}'):
        read_neighbours(str(path))


def test_a_truncated_neighbour_file_is_named(tmp_path):
    from mmdense.datasets.neighbour_pairs import read_neighbours
    path = tmp_path / 'nn.json'
    path.write_text('{"images": ["a.png", "b.png"], "neighbours": [[1], [')
    with pytest.raises(ValueError, match=r"neighbour file .*nn.json' is not valid JSON"):
        read_neighbours(str(path))
