"""Builders shared by the test modules (fixtures live in ``conftest.py``).

No test module imports another: what several of them need is here, grouped as the package is
(runner configs and tools, transfer, models). The per-algorithm tiny runner configs are built
from the method records by ``algorithm_table.py``.
"""
import io
import json
import os.path as osp
import pickletools
import runpy
import subprocess
import sys
import zipfile

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.registry import DefaultScope, init_default_scope
from mmpretrain.structures import DataSample

from mmdense.registry import MODELS
from mmdense.utils import register_all_modules

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY_ARCH = dict(embed_dims=48, num_layers=2, num_heads=3, feedforward_channels=96)
VIT_ARCH = dict(embed_dims=48, num_layers=4, num_heads=3, feedforward_channels=96)
IMG = 64


# ----------------------------------------------------------------------- runs and tools
def tiny_run_config(config, toy_root, max_iters):
    """A shipped toy config on ``toy_root`` (the data root of its image dataset, inside any
    wrapper such as CoTAP's pairs), iteration-based, logging every iteration."""
    cfg = Config.fromfile(osp.join(ROOT, config))
    images = cfg.train_dataloader.dataset
    while 'dataset' in images:
        images = images.dataset
    images.data_root = toy_root
    cfg.train_dataloader.update(batch_size=4, num_workers=0, persistent_workers=False)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)
    cfg.param_scheduler = []
    cfg.custom_hooks = []
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=2)
    cfg.log_processor = dict(by_epoch=False, window_size=1)
    cfg.visualizer.vis_backends = [dict(type='LocalVisBackend')]
    return cfg


def ring_neighbours_file(toy_root, num_neighbours=2):
    """A neighbour file for ``toy_root`` pairing image i with images i+1, i+2, ..."""
    from mmdense.datasets.neighbour_pairs import write_ring_neighbours
    path = osp.join(toy_root, 'meta', f'ring_neighbours_{num_neighbours}.json')
    return write_ring_neighbours(toy_root, path, num_neighbours)


def run_train(config_path, work_dir, *extra):
    """``tools/train.py`` in a subprocess; asserts it succeeds and returns its output."""
    cmd = [sys.executable, osp.join(ROOT, 'tools/train.py'), config_path, '--work-dir', work_dir,
           *extra]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def logged_steps(work_dir):
    """Per run (timestamped folder) of ``work_dir``, the steps that logged a loss."""
    steps = []
    for run in sorted(p for p in work_dir.iterdir() if (p / 'vis_data/scalars.json').exists()):
        with open(run / 'vis_data/scalars.json') as f:
            steps.append([json.loads(line)['step'] for line in f if 'loss' in line])
    return steps


def run_tool(script, *args):
    """A tool's ``__main__`` in this process; returns its exit code."""
    argv = sys.argv
    sys.argv = [script, *map(str, args)]
    try:
        runpy.run_path(osp.join(ROOT, script), run_name='__main__')
    except SystemExit as exit:
        return exit.code or 0
    finally:
        sys.argv = argv
    return 0


class LinearModel(BaseModel):
    """The smallest trainable runner model: loss = mean((w x + b)^2)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='loss'):
        return dict(loss=self.linear(inputs).pow(2).mean())


def train_linear(work_dir, max_iters=2, checkpoint_type='AtomicCheckpointHook'):
    """Train :class:`LinearModel` for ``max_iters`` iterations (SGD, batches of 2) in
    ``work_dir``, saving with ``checkpoint_type`` every 2 iterations and keeping the last."""
    runner = Runner(
        model=LinearModel(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=[dict(inputs=torch.ones(2))] * 8, batch_size=2,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type=checkpoint_type, by_epoch=False, interval=2,
                                           max_keep_ckpts=1)),
        default_scope='mmdense')
    runner.train()


# ----------------------------------------------------------------------------- transfer
def pretrained(path):
    """An ``init_cfg`` that loads the checkpoint at ``path``."""
    return dict(type='Pretrained', checkpoint=str(path))


def build_algorithm(config, edit):
    """The model of a shipped ``config`` after ``edit(cfg)``, in eval mode, its teacher
    perturbed away from the student; returns ``(cfg, model)``."""
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(osp.join(ROOT, config))
    edit(cfg)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdense'):
        model = MODELS.build(cfg.model)
    with torch.no_grad():  # a teacher unlike the student, BN statistics included
        for param in model.teacher.parameters():
            param.add_(0.05 * torch.randn_like(param))
        for name, buffer in model.teacher.named_buffers():
            if name.endswith('running_mean'):
                buffer.add_(0.1 * torch.randn_like(buffer))
            elif name.endswith('running_var'):
                buffer.mul_(1.5)
    return cfg, model.eval()


def save_runner_checkpoint(cfg, model, path):
    """What MMEngine's CheckpointHook stores that matters here: the config text and weights."""
    torch.save(dict(meta=dict(cfg=cfg.pretty_text, epoch=1), state_dict=model.state_dict()),
               path)


def small_dino_head(cfg):
    """A DINO head (and loss) for a 48-dim ViT: 128 prototypes through a 64-32 MLP."""
    cfg.model.head.update(in_channels=48, hidden_channels=64, bottleneck_channels=32,
                          out_channels=128)
    cfg.model.loss.out_channels = 128


def four_block_dino(cfg):
    """DINO on a 4-block, 48-dim ViT for 64 px images: one block per level of the detection
    and segmentation pyramids the transfer tests build."""
    cfg.model.backbone.update(arch=VIT_ARCH, img_size=IMG)
    small_dino_head(cfg)


def small_slotcon_heads(cfg):
    """SlotCon with 8 prototypes and 64-wide projector and predictor."""
    cfg.model.neck.hidden_channels = 64
    cfg.model.head.num_prototypes = 8
    cfg.model.predictor.hidden_channels = 64


def export(source, target, branch=None, name=None):
    """Export ``source.path`` for ``target`` next to it; returns the exported file's path."""
    from mmdense.transfer import export_backbone
    out = osp.join(osp.dirname(source.path), name or f'{target}_{branch or "default"}.pth')
    export_backbone(source.path, out, target, branch)
    return out


def loaded(module):
    """``module`` with its ``init_cfg`` applied, in eval mode."""
    module.init_weights()
    module.eval()  # mmpretrain backbones' train() returns None
    return module


def assert_same(outputs, expected, exact=True):
    """Equal feature lists: bit for bit, or within 1e-5 when ``exact=False``."""
    assert len(outputs) == len(expected)
    for out, ref in zip(outputs, expected):
        if exact:
            assert torch.equal(out, ref)
        else:
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


class TimmLayoutViT(nn.Module):
    """A pre-norm ViT written against the timm / DINO key layout, independent of mmpretrain:
    the reference for the ``timm`` target and for importing DINO / iBOT / timm checkpoints."""

    def __init__(self, dims=48, depth=4, heads=3, hidden=96, patch=16, img=IMG):
        super().__init__()
        self.heads = heads
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dims, patch, patch)
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, dims))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, (img // patch)**2 + 1, dims))
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            block = nn.Module()
            block.norm1, block.norm2 = nn.LayerNorm(dims, eps=1e-6), nn.LayerNorm(dims, eps=1e-6)
            block.attn = nn.Module()
            block.attn.qkv, block.attn.proj = nn.Linear(dims, 3 * dims), nn.Linear(dims, dims)
            block.mlp = nn.Module()
            block.mlp.fc1, block.mlp.fc2 = nn.Linear(dims, hidden), nn.Linear(hidden, dims)
            self.blocks.append(block)
        self.norm = nn.LayerNorm(dims, eps=1e-6)

    def attention(self, attn, x):
        b, n, d = x.shape
        q, k, v = attn.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        weights = (q @ k.transpose(-2, -1) * (d // self.heads)**-0.5).softmax(dim=-1)
        return attn.proj((weights @ v).transpose(1, 2).reshape(b, n, d))

    def forward(self, x):
        """Final-norm tokens (B, 1 + N, D), class token first."""
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = x + self.attention(block.attn, block.norm1(x))
            x = x + block.mlp.fc2(F.gelu(block.mlp.fc1(block.norm2(x))))
        return self.norm(x)


def torchvision_features(model, image):
    """Stage outputs of a torchvision ResNet (its forward ends in the classifier)."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(image))))
    outs = []
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        x = stage(x)
        outs.append(x)
    return outs


def pickle_globals(path):
    """Module.name of every global the file's pickle refers to."""
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith('data.pkl')))
    found, strings = set(), []
    for opcode, arg, _ in pickletools.genops(io.BytesIO(data)):
        if opcode.name in ('SHORT_BINUNICODE', 'BINUNICODE', 'UNICODE'):
            strings.append(arg)
        elif opcode.name == 'STACK_GLOBAL':
            found.add('.'.join(strings[-2:]))
        elif opcode.name == 'GLOBAL':
            found.add(arg.replace(' ', '.'))
    return found


DET_TOY = osp.join(ROOT, 'configs/benchmarks/mmdetection/toy/mask-rcnn_vit-s16_fpn_toy.py')
SEG_TOY = osp.join(ROOT, 'configs/benchmarks/mmsegmentation/toy/upernet_vit-s16_toy.py')
TINY_PYRAMID = dict(arch=VIT_ARCH, img_size=64, out_indices=(0, 1, 2, 3))


def det_config():
    """The toy Mask R-CNN config on the 4-block, 48-dim ViT pyramid."""
    cfg = Config.fromfile(DET_TOY)
    cfg.model.backbone.update(TINY_PYRAMID)
    cfg.model.neck.in_channels = [48] * 4
    return cfg


def seg_config(backbone=None):
    """The toy UperNet config on the 4-block ViT pyramid, or on ``backbone`` if given."""
    cfg = Config.fromfile(SEG_TOY)
    if backbone is None:
        cfg.model.backbone.update(TINY_PYRAMID)
    else:
        cfg.model.backbone = dict(backbone)
    cfg.model.decode_head.in_channels = [48] * 4
    cfg.model.auxiliary_head.in_channels = 48
    return cfg


def check(cfg, path, branch=None):
    """``check_transfer`` of the exported ``path``."""
    from mmdense.transfer.check import check_transfer
    return check_transfer(cfg, path, branch)


def assert_fails(report, message):
    """The transfer check failed, with ``message`` among its failures."""
    assert not report.ok, report.format()
    assert any(message in failure for failure in report.failures), report.failures
    assert 'transfer check: FAILED' in report.format()


# ------------------------------------------------------------------ tiny models, fake batches
def tiny_dino(out_channels=64):
    """DINO on a 2-block, 32-dim ViT for 32 px global and 16 px local views, its teacher
    schedule set (``ready_to_step``)."""
    register_all_modules(init_default_scope=False)
    init_default_scope('mmdense')
    return ready_to_step(MODELS.build(dict(
        type='DINO',
        backbone=dict(type='VisionTransformer', img_size=32, patch_size=16, drop_path_rate=0.1,
                      arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                                feedforward_channels=64)),
        head=dict(type='DINOHead', in_channels=32, out_channels=out_channels,
                  hidden_channels=48, bottleneck_channels=16, norm_last_layer=False),
        loss=dict(type='DINOLoss', out_channels=out_channels),
        teacher_momentum=0.9)))


def ready_to_step(model, schedule_length=100):
    """``model`` with its teacher's momentum schedule given ``schedule_length`` steps, so it
    steps outside a Runner (under one, ``TeacherScheduleHook`` sets ``max_iters``)."""
    model.set_teacher_schedule(schedule_length)
    return model


def dino_views(batch=4, seed=0):
    """2 global (32 px) + 3 local (16 px) noisy views of the same random images."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, 32, 32, generator=g)
    small = F.interpolate(images, size=16, mode='bilinear')
    return [images + 0.1 * torch.randn(images.shape, generator=g) for _ in range(2)] + \
           [small + 0.1 * torch.randn(small.shape, generator=g) for _ in range(3)]


def tiny_adclr_cfg(algorithm='ADCLR', **kwargs):
    """The model config of a 2-block ADCLR (or, with ``algorithm='DINO'``, the same DINO) for
    32 px views."""
    backbone_type = 'QueryVisionTransformer' if algorithm == 'ADCLR' else 'VisionTransformer'
    return dict(
        type=algorithm,
        backbone=dict(type=backbone_type, img_size=32, patch_size=16, drop_path_rate=0.1,
                      arch=TINY_ARCH),
        head=dict(type='DINOHead', in_channels=48, out_channels=64, hidden_channels=48,
                  bottleneck_channels=16, norm_last_layer=False),
        loss=dict(type='DINOLoss', out_channels=64),
        teacher_momentum=0.9,
        **kwargs)


def build_seeded(cfg):
    """``MODELS.build(cfg)`` under seed 0, weights initialised, teacher schedule set."""
    register_all_modules(init_default_scope=False)
    init_default_scope('mmdense')
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    return ready_to_step(model)


def adclr_views(batch_size=3, num_queries=4, query_size=48, seed=0):
    """2 global (32 px) + 2 local (16 px) views and ``num_queries`` query crops per image (48 px:
    3 x 3 tokens each)."""
    g = torch.Generator().manual_seed(seed)
    views = [torch.randn(batch_size, 3, 32, 32, generator=g) for _ in range(2)]
    views += [torch.randn(batch_size, 3, 16, 16, generator=g) for _ in range(2)]
    queries = [torch.randn(batch_size, 3, query_size, query_size, generator=g)
               for _ in range(num_queries)]
    return views, queries


def query_samples(batch_size=3, num_queries=4):
    return [DataSample(num_queries=num_queries) for _ in range(batch_size)]


def tiny_cotap(**kwargs):
    """CoTAP on a 2-block, 48-dim object-aware ViT (4 prototypes), under seed 0, initialised."""
    register_all_modules(init_default_scope=False)
    init_default_scope('mmdense')
    head = dict(type='DINOHead', in_channels=96, hidden_channels=64, bottleneck_channels=32)
    cfg = dict(type='CoTAP',
               backbone=dict(type='ObjectAwareViT', arch=TINY_ARCH, img_size=224, patch_size=16,
                             num_prototypes=4),
               patch_head=dict(head, out_channels=16), cls_head=dict(head, out_channels=32),
               cross_pool_sizes=(2, ), num_negatives=2, teacher_momentum=0.99,
               end_teacher_momentum=1.0)
    cfg.update(kwargs)
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    return ready_to_step(model)


def pair_batch(batch=4, paired=True, seed=0):
    """Views of ``batch`` images (2 globals 64 px, 2 locals 32 px, 2 clean globals) and, if
    paired, of their neighbours, with crop boxes in a 128 px image."""
    gen = torch.Generator().manual_seed(seed)
    sizes = [64, 64, 32, 32, 64, 64]
    boxes = torch.tensor([[0, 0, 96, 96], [32, 32, 128, 128], [0, 0, 48, 48], [64, 64, 128, 128],
                          [0, 0, 96, 96], [32, 32, 128, 128]], dtype=torch.float32)
    flips = torch.tensor([False, True, False, True, False, True])
    copies = 2 if paired else 1
    inputs = [torch.randn(batch, 3, s, s, generator=gen) for s in sizes * copies]
    inputs[4], inputs[5] = inputs[0].clone(), inputs[1].clone()  # clean copies
    samples = []
    for _ in range(batch):
        sample = DataSample(crop_boxes=boxes.repeat(copies, 1), flips=flips.repeat(copies))
        if paired:
            sample.set_metainfo(dict(num_pair_views=len(sizes)))
        samples.append(sample)
    return inputs, samples


def two_view_samples(batch, boxes=((0, 0, 48, 48), (16, 16, 64, 64)), flips=(False, True)):
    """``batch`` data samples carrying the crop boxes (x1, y1, x2, y2) and flips of two views."""
    return [DataSample(crop_boxes=torch.tensor(boxes, dtype=torch.float32),
                       flips=torch.tensor(flips)) for _ in range(batch)]


def tiny_slotcon(**kwargs):
    """SlotCon on a ResNet-18 with 16-dim slots and 8 prototypes."""
    register_all_modules(init_default_scope=False)
    init_default_scope('mmdense')
    cfg = dict(
        type='SlotCon',
        backbone=dict(type='ResNet', depth=18, out_indices=(3, ), style='pytorch'),
        neck=dict(type='ConvMLPProjector', in_channels=512, hidden_channels=32, out_channels=16),
        head=dict(type='SemanticGrouping', num_prototypes=8, dim=16),
        predictor=dict(type='SlotPredictor', in_channels=16, hidden_channels=32,
                       out_channels=16))
    cfg.update(kwargs)
    return ready_to_step(MODELS.build(cfg))


def tiny_dsc(**kwargs):
    """DSC on a ResNet-18 of 1/8 width (64 channels out)."""
    register_all_modules(init_default_scope=False)
    init_default_scope('mmdense')
    cfg = dict(
        type='DSC',
        backbone=dict(type='ResNet', depth=18, stem_channels=8, base_channels=8,
                      out_indices=(3, ), style='pytorch'),
        neck=dict(type='DenseCLNeck', in_channels=64, hid_channels=32, out_channels=16),
        queue_len=32, num_neighbours=1, num_classes=4)
    cfg.update(kwargs)
    return ready_to_step(MODELS.build(cfg))
