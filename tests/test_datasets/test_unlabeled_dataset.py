import os.path as osp

import numpy as np
import pytest
from mmengine.registry import DefaultScope
from PIL import Image

from mmdense.datasets import UnlabeledImageDataset
from mmdense.datasets.transforms.loading import ImageLoadError, LoadRGBImage
from mmdense.registry import DATASETS, TRANSFORMS


def _save(path, array=None, mode='RGB', size=(8, 6), **save_kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array) if array is not None else Image.new(mode, size, 128)
    image.save(path, **save_kwargs)
    return path


@pytest.fixture
def image_tree(tmp_path):
    """An ImageNet-like nested folder (mixed extensions, one non-image file)."""
    root = tmp_path / 'data'
    for rel in ('train/n02/b.JPEG', 'train/n01/z.png', 'train/n01/a.jpg', 'train/top.jpeg'):
        _save(root / rel, format='PNG' if rel.endswith('png') else 'JPEG')
    (root / 'train/n01/notes.txt').write_text('not an image')
    return root


def test_folder_mode(image_tree):
    with DefaultScope.overwrite_default_scope('mmdense'):  # as under default_scope='mmdense'
        dataset = DATASETS.build(
            dict(type='UnlabeledImageDataset', data_root=str(image_tree), data_prefix='train',
                 pipeline=[dict(type='LoadRGBImage')]))
    rel = [osp.relpath(dataset.get_data_info(i)['img_path'], image_tree / 'train')
           for i in range(len(dataset))]
    assert rel == ['top.jpeg', 'n01/a.jpg', 'n01/z.png', 'n02/b.JPEG']
    assert dataset.get_data_info(2)['sample_idx'] == 2
    sample = dataset[1]
    assert sample['img'].shape == (6, 8, 3) and sample['img'].dtype == np.uint8
    assert sample['img_shape'] == sample['ori_shape'] == (6, 8)


def test_folder_mode_with_dict_prefix_and_extensions(image_tree):
    dataset = UnlabeledImageDataset(data_root=str(image_tree), data_prefix=dict(img_path='train'),
                                    extensions=('.PNG', ))
    assert [osp.basename(dataset.get_data_info(i)['img_path'])
            for i in range(len(dataset))] == ['z.png']


def test_list_file_mode(image_tree):
    (image_tree / 'meta').mkdir()
    (image_tree / 'meta/train.txt').write_text(
        '# ImageNet style, labels are ignored\nn02/b.JPEG 1\n\nn01/a.jpg\t0\ntop.jpeg\n')
    dataset = UnlabeledImageDataset(data_root=str(image_tree), ann_file='meta/train.txt',
                                    data_prefix='train')
    assert [dataset.get_data_info(i)['img_path'] for i in range(len(dataset))] == [
        osp.join(image_tree, 'train', rel) for rel in ('n02/b.JPEG', 'n01/a.jpg', 'top.jpeg')
    ]


def test_toy_scene_list(tmp_path):
    from mmdense.datasets import generate_toy_scenes
    generate_toy_scenes(str(tmp_path), num_train=3, num_val=1, img_size=64)
    dataset = UnlabeledImageDataset(data_root=str(tmp_path), ann_file='meta/train.txt',
                                    pipeline=[LoadRGBImage()])
    assert len(dataset) == 3 and dataset[2]['img'].shape == (64, 64, 3)


def test_missing_data_root(tmp_path):
    missing = str(tmp_path / 'nowhere')
    with pytest.raises(FileNotFoundError, match='data root.*nowhere.*does not exist'):
        UnlabeledImageDataset(data_root=missing, data_prefix='train2017')


def test_missing_image_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match='image folder.*train2017'):
        UnlabeledImageDataset(data_root=str(tmp_path), data_prefix='train2017')


def test_empty_folder(tmp_path):
    (tmp_path / 'train2017').mkdir()
    (tmp_path / 'train2017/readme.txt').write_text('no images here')
    with pytest.raises(ValueError, match='no images.*train2017'):
        UnlabeledImageDataset(data_root=str(tmp_path), data_prefix='train2017')


def test_missing_list_file(image_tree):
    with pytest.raises(FileNotFoundError, match='list file.*meta/absent.txt.*does not exist'):
        UnlabeledImageDataset(data_root=str(image_tree), ann_file='meta/absent.txt')


def test_empty_list_file(image_tree):
    (image_tree / 'empty.txt').write_text('\n# nothing\n')
    with pytest.raises(ValueError, match='empty.txt.*names no images'):
        UnlabeledImageDataset(data_root=str(image_tree), ann_file='empty.txt')


def test_list_file_naming_missing_image(image_tree):
    (image_tree / 'list.txt').write_text('n01/a.jpg\nn01/gone.jpg\n')
    with pytest.raises(FileNotFoundError, match='1 of 2 images.*list.txt.*n01/gone.jpg'):
        UnlabeledImageDataset(data_root=str(image_tree), ann_file='list.txt',
                              data_prefix='train')
    unchecked = UnlabeledImageDataset(data_root=str(image_tree), ann_file='list.txt',
                                      data_prefix='train', check_files=False)
    assert len(unchecked) == 2


def test_coco_json_lists_images_and_names_missing_ones(image_tree):
    import json
    images = [dict(id=1, file_name='n01/a.jpg'), dict(id=2, file_name='n02/b.JPEG')]
    (image_tree / 'instances.json').write_text(json.dumps(dict(images=images, annotations=[])))
    dataset = UnlabeledImageDataset(data_root=str(image_tree), ann_file='instances.json',
                                    data_prefix='train')
    paths = [dataset.get_data_info(i)['img_path'] for i in range(len(dataset))]
    assert [osp.relpath(p, image_tree / 'train') for p in paths] == ['n01/a.jpg', 'n02/b.JPEG']
    images.append(dict(id=3, file_name='n03/gone.jpg'))
    (image_tree / 'instances.json').write_text(json.dumps(dict(images=images, annotations=[])))
    with pytest.raises(FileNotFoundError, match='1 of 3 images.*instances.json.*n03/gone.jpg'):
        UnlabeledImageDataset(data_root=str(image_tree), ann_file='instances.json',
                              data_prefix='train')
    (image_tree / 'broken.json').write_text('{"annotations": []}')
    with pytest.raises(ValueError, match='broken.json.*not a COCO annotation file'):
        UnlabeledImageDataset(data_root=str(image_tree), ann_file='broken.json')


def _load(path):
    with DefaultScope.overwrite_default_scope('mmdense'):  # whatever scope earlier tests left
        transform = TRANSFORMS.build(dict(type='LoadRGBImage'))
    return transform(dict(img_path=str(path)))


@pytest.mark.parametrize('content, reason', [
    (b'', r'empty \(0 bytes\)'),
    (b'definitely not an image', 'not a recognised image format'),
])
def test_unreadable_files(tmp_path, content, reason):
    path = tmp_path / 'bad.jpg'
    path.write_bytes(content)
    with pytest.raises(ImageLoadError, match=f'bad.jpg.*{reason}') as info:
        _load(path)
    assert isinstance(info.value, OSError)


def test_truncated_and_missing_files(tmp_path):
    rng = np.random.default_rng(0)
    full = _save(tmp_path / 'full.jpg', rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    truncated = tmp_path / 'truncated.jpg'
    truncated.write_bytes(full.read_bytes()[:len(full.read_bytes()) // 2])
    with pytest.raises(ImageLoadError, match='truncated.jpg.*truncated'):
        _load(truncated)
    with pytest.raises(ImageLoadError, match='missing.png.*reading failed'):
        _load(tmp_path / 'missing.png')


def test_colour_order_and_conversions(tmp_path):
    red = np.zeros((4, 5, 3), np.uint8)
    red[..., 0] = 255
    assert _load(_save(tmp_path / 'red.png', red))['img'][0, 0].tolist() == [0, 0, 255]

    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 1] = 200
    rgba[..., 3] = 10
    assert _load(_save(tmp_path / 'rgba.png', rgba))['img'][0, 0].tolist() == [0, 200, 0]

    grey = _load(_save(tmp_path / 'grey.png', np.full((4, 5), 77, np.uint8)))['img']
    assert grey.shape == (4, 5, 3) and (grey == 77).all()

    deep = np.array([[0, 257 * 100, 65535]], np.uint16)
    sixteen = _load(_save(tmp_path / 'deep.png', deep))['img']
    assert sixteen.dtype == np.uint8 and sixteen[0, :, 0].tolist() == [0, 100, 255]

    for mode in ('P', 'CMYK', 'LA', '1'):
        name = tmp_path / f'{mode}.{"jpg" if mode == "CMYK" else "png"}'
        loaded = _load(_save(name, mode=mode))['img']
        assert loaded.shape == (6, 8, 3) and loaded.dtype == np.uint8


def test_exif_rotation(tmp_path):
    # stored 40 wide x 20 high, left half red; orientation 6 = display rotated 90 deg clockwise
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20, 0] = 255
    stored[:, 20:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(tmp_path / 'rotated.jpg', stored, exif=exif, quality=95)
    results = _load(path)
    img = results['img']  # BGR
    assert img.shape == (40, 20, 3) and results['ori_shape'] == (40, 20)
    assert img[5, 10, 2] > 200 and img[5, 10, 0] < 60  # top is red
    assert img[35, 10, 0] > 200 and img[35, 10, 2] < 60  # bottom is blue


def test_a_folder_named_like_an_image_is_named(tmp_path):
    (tmp_path / 'folder.jpg').mkdir()
    with pytest.raises(ImageLoadError, match='folder.jpg.*reading failed'):
        _load(tmp_path / 'folder.jpg')


def test_decompression_bomb_is_refused_naming_the_file(tmp_path, monkeypatch):
    """PIL refuses images of more than 2 x MAX_IMAGE_PIXELS pixels (a small file can declare a
    huge size); the refusal names the file, so SkipCorruptImages can skip it too."""
    path = _save(tmp_path / 'bomb.png', np.zeros((20, 20, 3), np.uint8))
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)  # 400 pixels > 2 x 100
    with pytest.raises(ImageLoadError, match='bomb.png.*decompression bomb'):
        _load(path)


def test_float_images_are_refused_and_16_bit_colour_is_scaled(tmp_path):
    import cv2
    floats = tmp_path / 'float.tif'
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)).save(floats)
    with pytest.raises(ImageLoadError, match=r"float.tif.*floating-point pixels \(PIL mode 'F'\)"):
        _load(floats)
    deep = np.zeros((4, 5, 3), np.uint16)  # BGR
    deep[..., 1], deep[..., 2] = 257 * 100, 65535
    cv2.imwrite(str(tmp_path / 'rgb48.png'), deep)
    loaded = _load(tmp_path / 'rgb48.png')['img']
    assert loaded.dtype == np.uint8 and loaded[0, 0].tolist() == [0, 100, 255]
