"""The one table of algorithms that the parametrised per-algorithm tests read.

Each row names a registered algorithm's shipped toy config, the edits that shrink it to
CPU-second steps on the toy scenes, and its backbone family (which export targets apply). A new
algorithm is covered by every test that reads this table by adding one row;
``test_models/test_algorithm_table.py`` fails while an algorithm registered in ``MODELS`` has none.
"""
from typing import Callable, Dict, NamedTuple

from mmengine.config import Config

from helpers import (TINY_ARCH, ring_neighbours_file, small_dino_head, small_slotcon_heads,
                     tiny_run_config)


class Algorithm(NamedTuple):
    toy_config: str  # shipped toy config, e.g. 'configs/dino/vit-s_toy.py'
    shrink: Callable[[Config, str], None]  # edits that config in place (cfg, toy_root)
    backbone: str  # 'vit' or 'resnet' (which export targets apply)


def shrink_dino(cfg, toy_root):
    """A 2-block, 48-dim ViT with a 128-prototype head; the teacher temperature warms up."""
    cfg.model.backbone.arch = dict(TINY_ARCH)
    small_dino_head(cfg)
    cfg.custom_hooks = [dict(type='TeacherTempWarmupHook', warmup_iters=3)]


def shrink_adclr(cfg, toy_root):
    """DINO's tiny ViT and head, 3 query crops; both teacher temperatures warm up."""
    cfg.model.backbone.arch = dict(TINY_ARCH)
    small_dino_head(cfg)
    cfg.train_dataloader.dataset.pipeline[1].query_crops.num = 3
    cfg.custom_hooks = [dict(type='TeacherTempWarmupHook', warmup_iters=3,
                             attributes=('teacher_temp', 'query_teacher_temp'))]


def shrink_ibot(cfg, toy_root):
    """DINO's tiny ViT and head (the patch term's 128 prototypes too); both teacher
    temperatures warm up."""
    shrink_dino(cfg, toy_root)
    cfg.model.patch_loss.out_channels = 128
    cfg.custom_hooks = [dict(type='TeacherTempWarmupHook', warmup_iters=3,
                             attributes=('teacher_temp', 'teacher_patch_temp'))]


def shrink_cotap(cfg, toy_root):
    """Pairs from a ring neighbour file (2 per batch), a 2-block ViT with 4 prototypes and
    64-prototype heads, no DINO checkpoint to start from."""
    pairs = cfg.train_dataloader.dataset
    pairs.pop('data_root')
    pairs.neighbours_file = ring_neighbours_file(toy_root)
    pairs.dataset.data_root = toy_root
    cfg.train_dataloader.batch_size = 2
    cfg.model.backbone.update(arch=dict(TINY_ARCH), num_prototypes=4)
    for head in (cfg.model.patch_head, cfg.model.cls_head):
        head.update(in_channels=96, hidden_channels=64, bottleneck_channels=32, out_channels=64)
    cfg.model.backbone_checkpoint = None


def shrink_slotcon(cfg, toy_root):
    """96 px global crops; 8 prototypes, 64-wide projector and predictor."""
    cfg.train_dataloader.dataset.pipeline[1].global_crops.size = 96
    small_slotcon_heads(cfg)


def shrink_dsc(cfg, toy_root):
    """DSC-KM on 64 px views (2x2 pixels) of a 1/8-width ResNet-18; the 20-key queue wraps
    around during a 6-iteration run (8 keys per iteration)."""
    cfg.train_dataloader.dataset.pipeline[1].global_crops.size = 64
    cfg.model.backbone.update(stem_channels=8, base_channels=8)
    cfg.model.neck.update(in_channels=64, hid_channels=32, out_channels=16)
    cfg.model.update(queue_len=20, num_neighbours=1, num_classes=4)


ALGORITHMS: Dict[str, Algorithm] = {
    'DINO': Algorithm('configs/dino/vit-s_toy.py', shrink_dino, 'vit'),
    'ADCLR': Algorithm('configs/adclr/vit-s_toy.py', shrink_adclr, 'vit'),
    'iBOT': Algorithm('configs/ibot/vit-s_toy.py', shrink_ibot, 'vit'),
    'CoTAP': Algorithm('configs/cotap/vit-s_toy.py', shrink_cotap, 'vit'),
    'SlotCon': Algorithm('configs/slotcon/r18_toy.py', shrink_slotcon, 'resnet'),
    'DSC': Algorithm('configs/dsc/r18_toy.py', shrink_dsc, 'resnet'),
}


def tiny_config(algorithm: str, toy_root: str, max_iters: int) -> Config:
    """The runner config of ``algorithm``'s tiny model on ``toy_root``: its toy config made
    iteration-based (``max_iters``, logging every iteration) and shrunk by its row."""
    row = ALGORITHMS[algorithm]
    cfg = tiny_run_config(row.toy_config, toy_root, max_iters)
    row.shrink(cfg, toy_root)
    return cfg
