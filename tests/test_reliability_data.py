"""skip_corrupt: unreadable images are skipped only when asked, each one logged, and counted."""
from types import SimpleNamespace

import numpy as np
import pytest
from mmengine.logging import MessageHub
from PIL import Image
from torch.utils.data import DataLoader

import mmdense  # noqa: F401
from mmdense.datasets import skip_corrupt
from mmdense.datasets import SkipCorruptImages, SkippedImagesHook, UnlabeledImageDataset
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
