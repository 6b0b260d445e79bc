"""One way from a pipeline image to a model input (issue 28, item 2).

The references here do not go through the project's loading or normalisation: the images are
PNG files written by the test, read back with PIL as RGB, normalised by hand in numpy
(``(x - mean) / std`` with ImageNet's RGB statistics, the configs' values) and run through a plain
mmpretrain ``VisionTransformer`` that holds the weights of the model under test
(``load_state_dict``). Each image is a 4 x 4 grid of blocks coloured by a permutation of
(235, 125, 15): swapping red and blue turns one image into another plausible one, so reading
BGR as RGB changes the neighbours (each test checks that it does before relying on it).
``model_inputs`` is imported in the tests that call it, so that the others also run against
code that predates it (the neighbour test fails there: it embedded BGR images).
"""
import importlib
import json
import logging
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import (IMG, build_algorithm, four_block_dino, run_tool, save_runner_checkpoint,
                     tiny_cotap)
from PIL import Image

from mmdense.datasets.transforms import LoadRGBImage
from mmdense.evaluation import (DenseEvalDataset, KNNRetrieval, MemoryFeatureStore,
                                extract_features, run_protocol)

pytestmark = pytest.mark.usefixtures('one_thread')

IMAGENET_MEAN_RGB = np.array([123.675, 116.28, 103.53])
IMAGENET_STD_RGB = np.array([58.395, 57.12, 57.375])
PERMUTATIONS = [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
LEVELS = np.array([235, 125, 15])
NUM_TRAIN, NUM_VAL, TOPK = 16, 6, 3


def colour_grid(rng: np.random.Generator, size: int = IMG):
    """An RGB uint8 image (size, size, 3) of 4 x 4 blocks, block colour = LEVELS permuted, plus
    noise; and its label map (the permutation index of each pixel's block)."""
    cells = rng.integers(len(PERMUTATIONS), size=(4, 4))
    labels = cells.repeat(size // 4, 0).repeat(size // 4, 1)
    colours = np.array([LEVELS[list(p)] for p in PERMUTATIONS])
    noise = rng.integers(-20, 21, size=(size, size, 3))
    return np.clip(colours[labels] + noise, 0, 255).astype(np.uint8), labels.astype(np.uint8)


@pytest.fixture(scope='module')
def colour_root(tmp_path_factory):
    """``images/{train,val}/*.png``, ``semantic/{train,val}/*.png`` and ``meta/train.txt``
    (the layout of the toy set, which the DINO toy config reads)."""
    root = tmp_path_factory.mktemp('colour_grids')
    rng = np.random.default_rng(0)
    for split, count in (('train', NUM_TRAIN), ('val', NUM_VAL)):
        for folder in ('images', 'semantic'):
            (root / folder / split).mkdir(parents=True)
        for i in range(count):
            image, labels = colour_grid(rng)
            Image.fromarray(image, 'RGB').save(root / 'images' / split / f'{i:06d}.png')
            Image.fromarray(labels, 'L').save(root / 'semantic' / split / f'{i:06d}.png')
    (root / 'meta').mkdir()
    (root / 'meta' / 'train.txt').write_text(
        ''.join(f'images/train/{i:06d}.png\n' for i in range(NUM_TRAIN)))
    return str(root)


def image_paths(root, split):
    count = NUM_TRAIN if split == 'train' else NUM_VAL
    return [osp.join(root, 'images', split, f'{i:06d}.png') for i in range(count)]


def pil_rgb_inputs(paths, swap_red_blue=False):
    """``(N, 3, H, W)`` backbone inputs by hand: PIL RGB, ``(x - mean) / std`` in RGB order;
    ``swap_red_blue`` gives what reading the files as BGR but treating them as RGB gives."""
    pixels = np.stack([np.asarray(Image.open(p).convert('RGB'), np.float64) for p in paths])
    if swap_red_blue:
        pixels = pixels[..., ::-1]
    normalised = (pixels - IMAGENET_MEAN_RGB) / IMAGENET_STD_RGB
    return torch.from_numpy(normalised).permute(0, 3, 1, 2).float()


def plain_vit(backbone_cfg, weights, out_type):
    """mmpretrain's ``VisionTransformer`` with ``backbone_cfg``'s architecture and ``weights``."""
    from mmpretrain.models import VisionTransformer
    kwargs = {k: v for k, v in backbone_cfg.items()
              if k not in ('type', 'num_prototypes', 'prototype_kernel', 'freeze_prototypes')}
    vit = VisionTransformer(**dict(kwargs, out_type=out_type))
    missing, unexpected = vit.load_state_dict(weights, strict=False)
    assert not missing, missing
    assert all('object_filter' in k or k.startswith(f'layers.{len(vit.layers) - 1}.')
               for k in unexpected), unexpected
    vit.eval()  # mmpretrain backbones' train() returns None
    return vit


def top_k(embeddings, k):
    similarity = embeddings @ embeddings.T
    similarity.fill_diagonal_(-float('inf'))
    return similarity.topk(k, dim=1).indices.tolist()


def rows_equal(a, b):
    return sum(x == y for x, y in zip(a, b))


@pytest.fixture(scope='module')
def dino(tmp_path_factory):
    """A 4-block DINO (teacher perturbed from the student), saved as a runner checkpoint."""
    cfg, model = build_algorithm('configs/dino/vit-s_toy.py', four_block_dino)
    path = str(tmp_path_factory.mktemp('dino') / 'dino.pth')
    save_runner_checkpoint(cfg, model, path)
    return dict(cfg=cfg, model=model, checkpoint=path,
                teacher=model.teacher.module.backbone.state_dict())


@torch.no_grad()
def reference_cls(dino, paths, swap_red_blue=False):
    vit = plain_vit(dino['cfg'].model.backbone, dino['teacher'], 'cls_token')
    return F.normalize(vit(pil_rgb_inputs(paths, swap_red_blue))[-1], dim=1)


# --------------------------------------------------------------------------- model_inputs
PREPROCESSORS = {  # name: (library, class, flag, the order the backbone sees)
    'mmpretrain SelfSup to_rgb': ('mmpretrain.models', 'SelfSupDataPreprocessor',
                                  dict(to_rgb=True), 'rgb'),
    'mmpretrain SelfSup BGR': ('mmpretrain.models', 'SelfSupDataPreprocessor',
                               dict(to_rgb=False), 'bgr'),
    'mmpretrain Cls to_rgb': ('mmpretrain.models', 'ClsDataPreprocessor', dict(to_rgb=True),
                              'rgb'),
    'mmengine bgr_to_rgb': ('mmengine.model', 'ImgDataPreprocessor', dict(bgr_to_rgb=True),
                            'rgb'),
    'mmseg bgr_to_rgb': ('mmseg.models', 'SegDataPreProcessor', dict(bgr_to_rgb=True), 'rgb'),
    'mmseg BGR': ('mmseg.models', 'SegDataPreProcessor', dict(), 'bgr'),
}


@pytest.mark.parametrize('name', sorted(PREPROCESSORS))
def test_model_inputs_follow_the_data_preprocessor(name, colour_root):
    """The preprocessor's flag (whatever its library calls it) sets the channel order the
    backbone sees; its mean/std are in that order. Both input orders give the hand result."""
    from mmdense.evaluation import input_normalization, model_inputs
    library, class_name, flag, order = PREPROCESSORS[name]
    mean = (10.0, 100.0, 200.0)  # distinct per channel: a swapped mean would show
    std = (2.0, 4.0, 8.0)
    model = torch.nn.Module()
    model.data_preprocessor = getattr(importlib.import_module(library), class_name)(
        mean=mean, std=std, **flag)
    assert input_normalization(model) == (order, mean, std)

    rgb = np.stack([np.asarray(Image.open(p).convert('RGB'), np.float64)
                    for p in image_paths(colour_root, 'val')[:2]])
    seen = rgb if order == 'rgb' else rgb[..., ::-1]
    expected = torch.from_numpy((seen - mean) / np.array(std)).permute(0, 3, 1, 2).float()
    rgb_batch = torch.from_numpy(rgb.astype(np.uint8)).permute(0, 3, 1, 2)
    bgr_batch = rgb_batch.flip(1)
    torch.testing.assert_close(model_inputs(model, rgb_batch, channel_order='rgb'), expected)
    torch.testing.assert_close(model_inputs(model, bgr_batch, channel_order='bgr'), expected)
    torch.testing.assert_close(model_inputs(model, bgr_batch.float(), channel_order='bgr'),
                               expected)


def test_a_model_without_preprocessor_is_an_imagenet_rgb_model(colour_root):
    """A bare backbone gets ImageNet statistics in RGB order."""
    from mmdense.evaluation import model_inputs
    paths = image_paths(colour_root, 'val')
    rgb = torch.from_numpy(np.stack([np.asarray(Image.open(p).convert('RGB')) for p in paths]))
    rgb = rgb.permute(0, 3, 1, 2)
    backbone = torch.nn.Conv2d(3, 4, 1)
    torch.testing.assert_close(model_inputs(backbone, rgb, channel_order='rgb'),
                               pil_rgb_inputs(paths))
    torch.testing.assert_close(model_inputs(backbone, rgb.flip(1), channel_order='bgr'),
                               pil_rgb_inputs(paths))


def test_model_inputs_equal_the_runner_preprocessor_on_pipeline_images(dino, colour_root):
    """On what a pretraining pipeline yields (LoadRGBImage: BGR), model_inputs and the model's
    own data preprocessor (the runner's path) give the same tensor: the PIL-RGB one."""
    from mmdense.evaluation import model_inputs
    paths = image_paths(colour_root, 'train')[:4]
    batch = torch.stack([torch.from_numpy(LoadRGBImage()(dict(img_path=p))['img']).permute(
        2, 0, 1) for p in paths])
    model = dino['model']
    runner_inputs = model.data_preprocessor(dict(inputs=[batch], data_samples=None),
                                            training=False)['inputs'][0]
    ours = model_inputs(model, batch, channel_order=LoadRGBImage.channel_order)
    torch.testing.assert_close(ours, runner_inputs)
    torch.testing.assert_close(ours, pil_rgb_inputs(paths))


def test_the_channel_order_must_be_named_and_pixels_must_be_raw(dino):
    from mmdense.evaluation import model_inputs
    model, images = dino['model'], torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(TypeError):
        model_inputs(model, images)
    with pytest.raises(TypeError):
        model_inputs(model, images, 'rgb')
    with pytest.raises(TypeError):
        extract_features(model, images)
    with pytest.raises(ValueError, match=r"channel_order must be one of \('rgb', 'bgr'\).*RGB"):
        model_inputs(model, images, channel_order='RGB')
    with pytest.raises(ValueError, match=r'0-255 pixel values, got -2.*already normalised'):
        model_inputs(model, torch.full((1, 3, 8, 8), -2.0), channel_order='rgb')
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\).*\(1, 8, 8, 3\)'):
        model_inputs(model, images.permute(0, 2, 3, 1), channel_order='rgb')


# --------------------------------------------------------------------- neighbour mining
def test_pipeline_embedding_equals_the_pil_rgb_reference(dino, colour_root):
    """What build_nn_pairs feeds the backbone (LoadRGBImage, then model_inputs in its order)
    embeds like PIL-RGB pixels normalised by hand."""
    from mmdense.evaluation import model_inputs
    paths = image_paths(colour_root, 'train')
    batch = torch.stack([torch.from_numpy(LoadRGBImage()(dict(img_path=p))['img']).permute(
        2, 0, 1) for p in paths])
    with torch.no_grad():
        ours = dino['model'].teacher.module.backbone(
            model_inputs(dino['model'], batch, channel_order=LoadRGBImage.channel_order))[-1]
    torch.testing.assert_close(F.normalize(ours, dim=1), reference_cls(dino, paths),
                               atol=1e-5, rtol=0)


def test_build_nn_pairs_neighbours_equal_those_of_pil_rgb_images(dino, colour_root, tmp_path):
    """The tool's neighbours are the plain ViT's on PIL-RGB images in every row, not those of
    the channel-swapped images (which differ in most rows)."""
    paths = image_paths(colour_root, 'train')
    rgb_neighbours = top_k(reference_cls(dino, paths), TOPK)
    swapped_neighbours = top_k(reference_cls(dino, paths, swap_red_blue=True), TOPK)
    assert rows_equal(rgb_neighbours, swapped_neighbours) <= NUM_TRAIN // 2  # the test can fail

    out = tmp_path / 'nn.json'
    assert run_tool('tools/misc/build_nn_pairs.py', 'configs/dino/vit-s_toy.py',
                    dino['checkpoint'], '--out', out, '--topk', TOPK, '--img-size', IMG,
                    '--num-workers', 0, '--data-root', colour_root, '--batch-size', 5) == 0
    with open(out) as f:
        record = json.load(f)
    assert record['images'] == [f'images/train/{i:06d}.png' for i in range(NUM_TRAIN)]
    assert rows_equal(record['neighbours'], rgb_neighbours) == NUM_TRAIN
    assert record['model_input'] == dict(channel_order='rgb',
                                         mean=pytest.approx(list(IMAGENET_MEAN_RGB)),
                                         std=pytest.approx(list(IMAGENET_STD_RGB)))


def test_neighbour_files_of_the_bgr_tool_are_flagged(colour_root, tmp_path):
    """A file of the tool that records no model_input was embedded from swapped channels."""
    from mmengine.logging import MMLogger

    from mmdense.datasets.neighbour_pairs import read_neighbours
    record = dict(checkpoint='dino.pth', images=['a.png', 'b.png'], neighbours=[[1], [0]])
    old = tmp_path / 'old.json'
    old.write_text(json.dumps(record))
    new = tmp_path / 'new.json'
    new.write_text(json.dumps(dict(record, model_input=dict(channel_order='rgb'))))
    messages = []
    handler = logging.Handler()
    handler.emit = lambda entry: messages.append(entry.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        read_neighbours(str(new))
        assert messages == []
        read_neighbours(str(old))
    finally:
        logger.removeHandler(handler)
    assert len(messages) == 1
    assert 'old.json' in messages[0] and 'channel-swapped' in messages[0]


# --------------------------------------------------------------------- dense evaluation
def colour_data_cfg(root):
    split = dict(type='BaseSegDataset', data_root=root, img_suffix='.png', seg_map_suffix='.png')
    return dict(num_classes=len(PERMUTATIONS), ignore_index=255, img_size=IMG,
                train=dict(split, data_prefix=dict(img_path='images/train',
                                                   seg_map_path='semantic/train')),
                val=dict(split, data_prefix=dict(img_path='images/val',
                                                 seg_map_path='semantic/val')))


def test_dense_evaluation_equals_the_pil_rgb_reference(dino, colour_root, tmp_path):
    """In-memory and streamed dense features, their patch neighbours and the kNN protocol's
    scores equal those of the plain ViT on PIL-RGB images."""
    from mmdense.evaluation import load_split
    from mmdense.evaluation.feature_store import FeatureStore, build_loader, extract_to_store
    data_cfg = colour_data_cfg(colour_root)
    vit = plain_vit(dino['cfg'].model.backbone, dino['teacher'], 'featmap')
    splits, reference = {}, {}
    for split in ('train', 'val'):
        splits[split] = load_split(data_cfg, split)
        assert splits[split]['img_paths'] == image_paths(colour_root, split)
        with torch.no_grad():
            reference[split] = vit(pil_rgb_inputs(image_paths(colour_root, split)))[-1]
    model = dino['model']

    ours = extract_features(model, splits['val']['images'], channel_order='rgb')
    torch.testing.assert_close(ours, reference['val'], atol=1e-4, rtol=0)
    store = FeatureStore(str(tmp_path / 'store'))
    extract_to_store(model, build_loader(DenseEvalDataset(data_cfg, 'val'), 4, 0), store,
                     channel_order='rgb')
    torch.testing.assert_close(store.read(range(NUM_VAL))['feats'], reference['val'],
                               atol=1e-4, rtol=0)

    def patch_neighbours(val_feats, train_feats):
        queries = F.normalize(val_feats.permute(0, 2, 3, 1).flatten(0, 2), dim=1)
        keys = F.normalize(train_feats.permute(0, 2, 3, 1).flatten(0, 2), dim=1)
        return (queries @ keys.T).topk(TOPK, dim=1).indices.tolist()

    train_ours = extract_features(model, splits['train']['images'], channel_order='rgb')
    with torch.no_grad():
        swapped = vit(pil_rgb_inputs(image_paths(colour_root, 'val'), swap_red_blue=True))[-1]
    expected = patch_neighbours(reference['val'], reference['train'])
    assert rows_equal(patch_neighbours(swapped, reference['train']), expected) < len(expected)
    assert patch_neighbours(ours, train_ours) == expected

    metrics = run_protocol(model, 'knn', splits['train'], splits['val'], len(PERMUTATIONS),
                           knn_k=TOPK)
    by_hand = KNNRetrieval(k=TOPK)(*(MemoryFeatureStore.from_tensors(
        reference[split], splits[split]['labels']) for split in ('train', 'val')),
                                   len(PERMUTATIONS))
    assert {k: metrics[k] for k in by_hand} == pytest.approx(by_hand, abs=1e-9)


# ------------------------------------------------------------------- prototype initialisation
def test_prototype_init_windows_are_windows_of_pil_rgb_tokens(colour_root):
    """PrototypeInitHook embeds pipeline batches (LoadRGBImage: BGR) through the runner's data
    preprocessor: each window of its bank is a window of the tokens that a plain ViT computes
    before its last block on PIL-RGB images, and none is one of the channel-swapped images'."""
    from types import SimpleNamespace

    from mmdense.engine.hooks.prototype_init import PrototypeInitHook
    preprocessor = dict(type='SelfSupDataPreprocessor', mean=IMAGENET_MEAN_RGB.tolist(),
                        std=IMAGENET_STD_RGB.tolist(), to_rgb=True)
    model = tiny_cotap(data_preprocessor=preprocessor).eval()
    paths = image_paths(colour_root, 'train')[:8]
    batch = torch.stack([torch.from_numpy(LoadRGBImage()(dict(img_path=p))['img']).permute(
        2, 0, 1) for p in paths])
    batches = [dict(inputs=[batch], data_samples=None)] * 2
    runner = SimpleNamespace(model=model, train_dataloader=batches,
                             logger=SimpleNamespace(info=lambda msg: None))
    bank = PrototypeInitHook(num_images=8, windows_per_image=6).window_bank(runner, model)

    backbone_cfg = dict(type='ObjectAwareViT', arch=dict(embed_dims=48, num_layers=2,
                                                         num_heads=3, feedforward_channels=96),
                        img_size=224, patch_size=16)
    vit = plain_vit(backbone_cfg, model.backbone.state_dict(), 'featmap')
    kernel = model.backbone.object_filter.kernel_size

    def all_windows(swap_red_blue):
        captured = []
        handle = vit.layers[-1].register_forward_pre_hook(
            lambda module, args: captured.append(args[0]))
        with torch.no_grad():
            vit(pil_rgb_inputs(paths, swap_red_blue))
        handle.remove()
        side = IMG // 16
        patches = captured[0][:, 1:].transpose(1, 2).reshape(len(paths), -1, side, side)
        windows = F.unfold(patches, kernel, padding=kernel // 2)  # (B, D·k², h·w)
        # bank rows are (k², D) flattened: position-major
        windows = windows.unflatten(1, (-1, kernel**2)).transpose(1, 2).flatten(1, 2)
        return windows.transpose(1, 2).flatten(0, 1)

    def distance_to_nearest(windows):
        return torch.cdist(bank, windows, compute_mode='donot_use_mm_for_euclid_dist').min(
            dim=1).values

    assert distance_to_nearest(all_windows(False)).max() < 1e-4
    assert distance_to_nearest(all_windows(True)).min() > 1e-2
