"""Miniatures of the official dense-evaluation archives, prepared by the documented commands.

Each ``*_archives(folder)`` writes a few tiny images under the archive's own member paths, file
names and mask encodings, packs them as the archive is shipped (tar, tgz, zip), and returns the
labels every sample must end up with, computed here from the arrays written (never through
mmdense). Each ``prepare_*`` runs the commands configs/dense_eval/README.md documents for that
dataset: the unpacking (``tar``, ``unzip``) and mmsegmentation's dataset converters from the
installed package (``voc_aug.py``, ``coco_stuff164k.py``, ``cityscapes.py``) in a subprocess
with this interpreter.

mmseg's converters assert the size of the full dataset (``AUG_LEN = 10582`` in voc_aug.py,
``COCO_LEN = 123287`` in coco_stuff164k.py); :func:`run_converter` runs the converter's own
``main()`` with that one constant set to the miniature's size (nothing else changes), and
:func:`run_converter_as_documented` runs the plain command, which on a miniature stops at that
assertion.
"""
import importlib.util
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import tarfile
import zipfile

import cv2
import numpy as np
import scipy.io
from PIL import Image

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SIZE = 32  # pixels; Cityscapes frames are SIZE x 2 SIZE like the real 1024 x 2048


def tiny_preset(preset):
    """``preset`` at 64 px (a 4x4 grid of a /16 backbone) with 2-epoch probes and at most 8
    clusters: each preset's protocols, run in seconds on the miniatures."""
    import dataclasses

    def shrink(protocol, options):
        if protocol == 'cluster':  # (PCA to at most the tiny ViT's 32 channels, 2 seeds)
            return protocol, dict(options, num_clusters=min(options['num_clusters'], 8),
                                  num_iters=3, num_init=1,
                                  **{key: min(options[key], cap) for key, cap in
                                     (('pca_dim', 8), ('num_seeds', 2)) if key in options})
        if protocol == 'linear':
            return protocol, dict(options, epochs=2, batch_size=2, lr_step=1)
        return protocol, options

    return dataclasses.replace(preset, img_size=64,
                               protocols=tuple(shrink(*p) for p in preset.protocols))


def tiny_vit():
    """A seeded 2-layer ViT with 32 channels and 16 px patches, for 64 px images."""
    import torch
    from mmpretrain.models import VisionTransformer
    torch.manual_seed(0)
    return VisionTransformer(arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                                       feedforward_channels=64), img_size=64, patch_size=16)


def mmseg_tools() -> str:
    """The dataset converters' folder of the installed mmsegmentation (``mmseg/.mim/tools``)."""
    spec = importlib.util.find_spec('mmseg')
    return osp.join(osp.dirname(spec.origin), '.mim', 'tools')


def converter(name: str) -> str:
    return osp.join(mmseg_tools(), 'dataset_converters', name)


# imported under its own name, so that its worker processes (--nproc) find its functions
_WITH_SIZE = '''import importlib, os.path as osp, sys
path, constant, value = sys.argv[1:4]
sys.path.insert(0, osp.dirname(path))
module = importlib.import_module(osp.splitext(osp.basename(path))[0])
setattr(module, constant, int(value))
sys.argv = [path] + sys.argv[4:]
module.main()
'''


def run(*command, cwd=None) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f'{command} failed:\n{result.stdout[-2000:]}\n' \
        f'{result.stderr[-3000:]}'
    return result


def run_converter(name: str, *args, size_constant: str, size: int):
    """``python <mmseg tools>/dataset_converters/<name> ARGS`` with the converter's full-dataset
    size constant set to ``size``."""
    return run(sys.executable, '-c', _WITH_SIZE, converter(name), size_constant, size, *args)


def run_converter_as_documented(name: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, converter(name), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def unzip(archive, dest) -> None:
    """``unzip -q ARCHIVE -d DEST``, as documented (Python's zipfile where unzip is missing)."""
    if shutil.which('unzip'):
        run('unzip', '-q', archive, '-d', dest)
    else:
        with zipfile.ZipFile(archive) as z:
            z.extractall(dest)


def pack(archive, members: dict) -> str:
    """Write ``members`` (archive path -> bytes) as a .zip, .tar or .tgz, in the given order."""
    archive = str(archive)
    os.makedirs(osp.dirname(archive), exist_ok=True)
    if archive.endswith('.zip'):
        with zipfile.ZipFile(archive, 'w') as z:
            for name, data in members.items():
                z.writestr(name, data)
        return archive
    import io
    with tarfile.open(archive, 'w:gz' if archive.endswith('.tgz') else 'w') as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return archive


def encode(array: np.ndarray, ext: str, palette=None) -> bytes:
    """``array`` as the bytes of a .jpg / .png (colour images BGR as cv2 writes them; label
    maps as one-channel PNGs, palette PNGs when ``palette`` is given)."""
    if array.ndim == 3:
        ok, data = cv2.imencode(ext, array)
        assert ok
        return data.tobytes()
    import io
    image = Image.fromarray(array.astype(np.uint8), mode='P' if palette else 'L')
    if palette:
        image.putpalette(palette)
    buffer = io.BytesIO()
    image.save(buffer, format='PNG')
    return buffer.getvalue()


def image(seed: int, shape=(SIZE, SIZE)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def bands(values, shape=(SIZE, SIZE), border=None) -> np.ndarray:
    """A label map of vertical bands of equal width, one per value, left to right; ``border``
    paints the top two rows (VOC's 255 object boundaries, say)."""
    label = np.zeros(shape, np.uint8)
    width = shape[1] // len(values)
    for i, value in enumerate(values):
        label[:, i * width:(i + 1) * width] = value
    if border is not None:
        label[:2] = border
    return label


def voc_palette() -> list:
    """PASCAL VOC's colour map (the devkit's bit-interleaved one), 256 RGB triplets flat."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


# ------------------------------------------------------------------------------------------ VOC
VOC_TRAIN = ['2007_000032', '2007_000039']  # 2007_000039: a VOC-train id that SBD lacks
VOC_VAL = ['2007_000033', '2007_000042']
SBD_TRAIN = ['2007_000032', '2008_000002', '2008_000007']  # SBD has VOC-train 2007_000032 too
SBD_VAL = ['2007_000033', '2008_000003']  # ... and VOC-val 2007_000033
VOC_ONLY_TRAIN = '2007_000039'


def voc_archives(folder) -> dict:
    """``VOCtrainval_11-May-2012.tar`` (VOCdevkit/VOC2012/{JPEGImages, SegmentationClass: palette
    PNGs with 255 boundaries, ImageSets/Segmentation/{train,val,trainval}.txt}) and SBD's
    ``benchmark.tgz`` (benchmark_RELEASE/dataset/{cls,img}/, train.txt, val.txt; cls/*.mat hold
    ``GTcls.Segmentation``, uint8 class indices without boundaries).

    Returns ``dict(voc_tar, sbd_tgz, train, val)``: ``train`` / ``val`` map each id of
    trainaug / val to its label map as the evaluation must read it: VOC's own mask for VOC
    train and val ids (SBD's mask of the same image differs here), SBD's for the others.
    """
    folder = str(folder)
    ids = sorted(set(VOC_TRAIN + VOC_VAL + SBD_TRAIN + SBD_VAL))
    classes = {i: (index % 20 + 1, (index + 7) % 20 + 1) for index, i in enumerate(ids)}
    voc_masks = {i: bands((0, classes[i][0], 0, 15), border=255) for i in VOC_TRAIN + VOC_VAL}
    sbd_masks = {i: bands((classes[i][1], 0, 7, 0)) for i in SBD_TRAIN + SBD_VAL}
    images = {i: image(n) for n, i in enumerate(ids)}
    voc = 'VOCdevkit/VOC2012/'
    members = {f'{voc}JPEGImages/{i}.jpg': encode(images[i], '.jpg') for i in ids}
    members.update({f'{voc}SegmentationClass/{i}.png': encode(voc_masks[i], '.png', voc_palette())
                    for i in VOC_TRAIN + VOC_VAL})
    for name, split in (('train', VOC_TRAIN), ('val', VOC_VAL), ('trainval', VOC_TRAIN + VOC_VAL)):
        members[f'{voc}ImageSets/Segmentation/{name}.txt'] = ''.join(
            f'{i}\n' for i in split).encode()
    voc_tar = pack(osp.join(folder, 'VOCtrainval_11-May-2012.tar'), members)

    sbd = {}
    for i in SBD_TRAIN + SBD_VAL:
        mat = osp.join(folder, 'mat', f'{i}.mat')
        os.makedirs(osp.dirname(mat), exist_ok=True)
        present = np.unique(sbd_masks[i][sbd_masks[i] > 0]).astype(np.uint8)[:, None]
        scipy.io.savemat(mat, {'GTcls': {'Segmentation': sbd_masks[i],
                                         'CategoriesPresent': present}})
        with open(mat, 'rb') as f:
            sbd[f'benchmark_RELEASE/dataset/cls/{i}.mat'] = f.read()
        sbd[f'benchmark_RELEASE/dataset/img/{i}.jpg'] = encode(images[i], '.jpg')
    sbd['benchmark_RELEASE/dataset/train.txt'] = ''.join(f'{i}\n' for i in SBD_TRAIN).encode()
    sbd['benchmark_RELEASE/dataset/val.txt'] = ''.join(f'{i}\n' for i in SBD_VAL).encode()
    sbd_tgz = pack(osp.join(folder, 'benchmark.tgz'), sbd)

    trainaug = sorted(set(VOC_TRAIN + SBD_TRAIN + SBD_VAL) - set(VOC_VAL))
    train = {i: voc_masks[i] if i in VOC_TRAIN else sbd_masks[i] for i in trainaug}
    return dict(voc_tar=voc_tar, sbd_tgz=sbd_tgz, train=train,
                val={i: voc_masks[i] for i in VOC_VAL}, images=images)


def prepare_voc(archives: dict, data) -> str:
    """The documented VOC + SBD preparation under ``data``; returns the data root
    (``data/VOCdevkit/VOC2012``)::

        mkdir -p data
        tar xf VOCtrainval_11-May-2012.tar -C data
        tar xzf benchmark.tgz -C data
        python <mmseg tools>/dataset_converters/voc_aug.py data/VOCdevkit data/benchmark_RELEASE \\
            --nproc 8
    """
    data = str(data)
    run('mkdir', '-p', data)
    run('tar', 'xf', archives['voc_tar'], '-C', data)
    run('tar', 'xzf', archives['sbd_tgz'], '-C', data)
    run_converter('voc_aug.py', osp.join(data, 'VOCdevkit'), osp.join(data, 'benchmark_RELEASE'),
                  '--nproc', 2, size_constant='AUG_LEN', size=len(archives['train']))
    return osp.join(data, 'VOCdevkit', 'VOC2012')


# ------------------------------------------------------------------------------ COCO-Stuff-164k
COCO_TRAIN = [f'{i:012d}' for i in (25, 30, 42, 49, 61, 64)]
COCO_VAL = [f'{i:012d}' for i in (139, 285, 632, 724)]
CURATED = dict(train2017=COCO_TRAIN[1:5], val2017=COCO_VAL[:3])  # PiCIE's lists: a subset
# stuffthingmaps values are COCO-Stuff ids - 1 (255: unlabeled): person, car, grass, sky-other;
# their coarse classes in the IIC / PiCIE order (12 things, then 15 stuff): person 9,
# vehicle 11, plant 22, sky 23.
STUFF_VALUES = (0, 2, 123, 156)
COARSE_OF = {0: 9, 2: 11, 123: 22, 156: 23, 255: 255}


def coco_stuff_archives(folder) -> dict:
    """COCO's ``train2017.zip`` / ``val2017.zip`` (``<split>/<12-digit id>.jpg``), COCO-Stuff's
    ``stuffthingmaps_trainval2017.zip`` (``<split>/<id>.png``: one-channel, COCO-Stuff id - 1,
    255 unlabeled) and PiCIE's ``curated/<split>/Coco164kFull_Stuff_Coarse_7.txt`` lists (one
    12-digit id a line) in a miniature PiCIE checkout.

    Returns ``dict(zips, picie, train, val)``: ``train`` / ``val`` map each curated id to its
    27-class label map.
    """
    folder = str(folder)
    maps, zips = {}, {}
    for split, ids in (('train2017', COCO_TRAIN), ('val2017', COCO_VAL)):
        jpgs = {}
        for n, i in enumerate(ids):
            values = np.roll(STUFF_VALUES, n)
            maps[i] = bands(values, border=255)
            jpgs[f'{split}/{i}.jpg'] = encode(image(100 + n + len(split)), '.jpg')
        zips[split] = pack(osp.join(folder, f'{split}.zip'), jpgs)
    zips['stuffthingmaps'] = pack(
        osp.join(folder, 'stuffthingmaps_trainval2017.zip'),
        {f'{split}/{i}.png': encode(maps[i], '.png')
         for split, ids in (('train2017', COCO_TRAIN), ('val2017', COCO_VAL)) for i in ids})
    picie = osp.join(folder, 'PiCIE')
    for split, ids in CURATED.items():
        path = osp.join(picie, 'curated', split, 'Coco164kFull_Stuff_Coarse_7.txt')
        os.makedirs(osp.dirname(path))
        with open(path, 'w') as f:
            f.writelines(f'{i}\n' for i in ids)
    coarse = np.vectorize(COARSE_OF.get)
    return dict(zips=zips, picie=picie,
                **{split[:-4]: {i: coarse(maps[i]).astype(np.uint8) for i in ids}
                   for split, ids in CURATED.items()})


def prepare_coco_stuff(archives: dict, data) -> str:
    """The documented COCO-Stuff preparation; returns the data root
    (``data/coco_stuff164k``)::

        mkdir -p data/coco_stuff164k
        unzip train2017.zip -d data/coco_stuff164k/images
        unzip val2017.zip -d data/coco_stuff164k/images
        unzip stuffthingmaps_trainval2017.zip -d data/coco_stuff164k/annotations
        python <mmseg tools>/dataset_converters/coco_stuff164k.py data/coco_stuff164k --nproc 8
        cp -r PiCIE/curated data/coco_stuff164k/
    """
    root = osp.join(str(data), 'coco_stuff164k')
    zips = archives['zips']
    run('mkdir', '-p', root)
    unzip(zips['train2017'], osp.join(root, 'images'))
    unzip(zips['val2017'], osp.join(root, 'images'))
    unzip(zips['stuffthingmaps'], osp.join(root, 'annotations'))
    run_converter('coco_stuff164k.py', root, '--nproc', 2, size_constant='COCO_LEN',
                  size=len(COCO_TRAIN) + len(COCO_VAL))
    run('cp', '-r', osp.join(archives['picie'], 'curated'), root + '/')
    return root


# ----------------------------------------------------------------------------------- Cityscapes
# (label name, id, trainId) from the Cityscapes label table: 'ego vehicle' has trainId 255.
CITYSCAPES_LABELS = (('road', 7, 0), ('building', 11, 2), ('vegetation', 21, 8),
                     ('sky', 23, 10), ('car', 26, 13), ('ego vehicle', 1, 255))
CITYSCAPES_FRAMES = dict(train=['aachen_000000_000019', 'aachen_000001_000019',
                                'bochum_000000_000313'],
                         val=['frankfurt_000000_000294', 'lindau_000000_000019'],
                         test=['berlin_000000_000019'])


def cityscapes_archives(folder) -> dict:
    """``leftImg8bit_trainvaltest.zip`` (``leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png``)
    and ``gtFine_trainvaltest.zip`` (``gtFine/<split>/<city>/<frame>_gtFine_polygons.json`` with
    axis-aligned polygons, ``_gtFine_labelIds.png``), SIZE x 2 SIZE frames.

    Returns ``dict(left, gt, train, val, train_ids)``: ``train`` / ``val`` map each frame to its
    trainId map (pixels no polygon covers are 'unlabeled', 255); ``train_ids`` maps each gtFine
    polygon file (archive path) to the same map, for writing the converter's output without
    cityscapesscripts.
    """
    folder = str(folder)
    left, gt, maps, by_json = {}, {}, {}, {}
    shape = (SIZE, 2 * SIZE)
    for split, frames in CITYSCAPES_FRAMES.items():
        for n, frame in enumerate(frames):
            city = frame.split('_')[0]
            chosen = [CITYSCAPES_LABELS[(n + k) % len(CITYSCAPES_LABELS)] for k in range(3)]
            width = shape[1] // 4  # 4 bands, the last one left unlabeled (no polygon)
            objects = [dict(label=name, polygon=[[k * width, 0], [(k + 1) * width - 1, 0],
                                                 [(k + 1) * width - 1, shape[0] - 1],
                                                 [k * width, shape[0] - 1]])
                       for k, (name, _, _) in enumerate(chosen)]
            train_ids = bands([t for _, _, t in chosen] + [255], shape)
            label_ids = bands([i for _, i, _ in chosen] + [0], shape)
            base = f'{split}/{city}/{frame}'
            left[f'leftImg8bit/{base}_leftImg8bit.png'] = encode(image(200 + n, shape), '.png')
            polygons = f'gtFine/{base}_gtFine_polygons.json'
            gt[polygons] = json.dumps(dict(imgHeight=shape[0], imgWidth=shape[1],
                                           objects=objects)).encode()
            gt[f'gtFine/{base}_gtFine_labelIds.png'] = encode(label_ids, '.png')
            maps[frame] = train_ids
            by_json[polygons] = train_ids
    return dict(left=pack(osp.join(folder, 'leftImg8bit_trainvaltest.zip'), left),
                gt=pack(osp.join(folder, 'gtFine_trainvaltest.zip'), gt), train_ids=by_json,
                **{split: {f: maps[f] for f in CITYSCAPES_FRAMES[split]}
                   for split in ('train', 'val')})


def has_cityscapesscripts() -> bool:
    return importlib.util.find_spec('cityscapesscripts') is not None


def prepare_cityscapes(archives: dict, data) -> str:
    """The documented Cityscapes preparation; returns the data root (``data/cityscapes``)::

        mkdir -p data/cityscapes
        unzip leftImg8bit_trainvaltest.zip -d data/cityscapes
        unzip gtFine_trainvaltest.zip -d data/cityscapes
        python <mmseg tools>/dataset_converters/cityscapes.py data/cityscapes --nproc 8

    The converter imports cityscapesscripts (not a requirement of this project); without it
    the ``*_gtFine_labelTrainIds.png`` are written here as the converter would (its
    json2labelImg fills each polygon with the label's trainId over a 255 background: for
    these axis-aligned polygons, the bands of ``train_ids``).
    """
    root = osp.join(str(data), 'cityscapes')
    run('mkdir', '-p', root)
    unzip(archives['left'], root)
    unzip(archives['gt'], root)
    if has_cityscapesscripts():
        run(sys.executable, converter('cityscapes.py'), root, '--nproc', 2)
    else:
        for polygons, train_ids in archives['train_ids'].items():
            path = osp.join(root, polygons.replace('_polygons.json', '_labelTrainIds.png'))
            Image.fromarray(train_ids, mode='L').save(path)
    return root


# -------------------------------------------------------------------------------------- ADE20K
def ade20k_archives(folder) -> dict:
    """``ADEChallengeData2016.zip``: ``ADEChallengeData2016/images/{training,validation}/
    ADE_{train,val}_%08d.jpg`` and ``annotations/.../*.png`` (one channel, 0 = other,
    1..150 the classes).

    Returns ``dict(zip, train, val)``: each image's label map after mmseg's reduce_zero_label
    (0 -> 255, k -> k - 1).
    """
    members, expected = {}, dict(train={}, val={})
    for split, short, count in (('training', 'train', 3), ('validation', 'val', 2)):
        for n in range(1, count + 1):
            name = f'ADE_{short}_{n:08d}'
            label = bands((0, n, 150, 12 * n))
            members[f'ADEChallengeData2016/images/{split}/{name}.jpg'] = encode(
                image(300 + n + count), '.jpg')
            members[f'ADEChallengeData2016/annotations/{split}/{name}.png'] = encode(label, '.png')
            expected[short][name] = np.where(label == 0, 255, label.astype(np.int64) - 1)
    return dict(zip=pack(osp.join(str(folder), 'ADEChallengeData2016.zip'), members), **expected)


def prepare_ade20k(archives: dict, data) -> str:
    """``mkdir -p data/ade && unzip ADEChallengeData2016.zip -d data/ade``; returns
    ``data/ade/ADEChallengeData2016``."""
    run('mkdir', '-p', osp.join(str(data), 'ade'))
    unzip(archives['zip'], osp.join(str(data), 'ade'))
    return osp.join(str(data), 'ade', 'ADEChallengeData2016')


# ----------------------------------------------------------------------------------------- toy
def prepare_toy(data) -> str:
    """``python tools/misc/make_toy_scenes.py --out data/toy_scenes`` (4 train, 2 val scenes of
    SIZE px); returns the data root."""
    root = osp.join(str(data), 'toy_scenes')
    run(sys.executable, osp.join(REPO, 'tools', 'misc', 'make_toy_scenes.py'), '--out', root,
        '--num-train', 4, '--num-val', 2, '--img-size', SIZE, cwd=REPO)
    return root
