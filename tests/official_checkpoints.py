"""Published checkpoints, written with the pickle structure of the official training scripts.

What each file holds was read from the official code (facebookresearch/dino ``main_dino.py``,
``run_with_submitit.py``, ``utils.py``; bytedance/ibot ``main_ibot.py``,
``extract_backbone_weights.py``; CVMI-Lab/SlotCon ``main_pretrain.py``,
``transfer/segmentation/convert_pretrain_to_mm.py``); nothing is copied from it. The writers build
modules with the published key layouts at small sizes (a 4-block 48-dim ViT, a ResNet-18), give
the optimizer a step so that it holds state, and save with ``torch.save``: the zip format, as the
releases were written with torch >= 1.7 (DINO 2021, iBOT 2022, SlotCon 2022 with torch 1.10).

* DINO ``main_dino.py``: ``student``, ``teacher``, ``optimizer``, ``epoch``, ``args``,
  ``dino_loss`` and ``fp16_scaler``. The student is DDP-wrapped (``module.backbone.*``,
  ``module.head.*``); the teacher is DDP-wrapped only when the backbone has batch norms (a
  ResNet). The optimizer is AdamW over two groups (weights; biases and norms without decay) whose
  ``lr`` (both groups) and ``weight_decay`` (the first) are set each iteration from numpy cosine
  schedules, so they are numpy float64 scalars. ``args`` is the ``argparse.Namespace``; under
  ``run_with_submitit.py`` its ``output_dir`` is a ``pathlib.PosixPath``.
* DINO backbone-only release (``dino_deitsmall16_pretrain.pth``): the teacher backbone's state
  dict (timm names, no head).
* iBOT ``main_ibot.py``: the same keys with ``ibot_loss`` (buffers ``center`` and ``center2``)
  instead of ``dino_loss``; the student backbone has ``masked_embed``; the heads have a second
  weight-normalised layer (``last_layer2``, shared with ``last_layer`` in the teacher).
  ``extract_backbone_weights.py`` (the ``backbone (t)`` downloads): ``{'state_dict': backbone}``.
* SlotCon ``main_pretrain.py``: ``args``, ``model`` (the whole model DDP-wrapped:
  ``module.encoder_q.*`` / ``module.encoder_k.*`` ResNets in torchvision names without ``fc``,
  projectors, ``center``, groupings, slot predictor), ``optimizer`` (LARS: ``eta`` and two filters
  in the group, ``mu`` per parameter), ``scheduler`` (the warm-up wrapper's fields and the cosine
  schedule's state under ``after_scheduler``), ``epoch``, ``scaler``.
  ``convert_pretrain_to_mm.py``: ``{'state_dict': encoder_k without its prefix}``.

numpy 1.x pickles are written under numpy 2 by :class:`RenamingPickler` (:func:`save`).
"""
import argparse
import pathlib
import pickle
import types
import warnings
from typing import Dict, NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torchvision

from helpers import TimmLayoutViT

VIT_DIMS, HEAD_HIDDEN, HEAD_BOTTLENECK, HEAD_OUT = 48, 64, 32, 128
SCHEDULE_ITERS = 20  # epochs × iterations per epoch of the schedules the lr is read from


class Published(NamedTuple):
    """A written file and the backbones it holds, by branch (the references for features)."""
    path: str
    backbones: Dict[str, nn.Module]


# ------------------------------------------------------------------ pickles of other environments
class RenamingPickler(pickle._Pickler):
    """A pickler that writes the globals in ``renames`` (``{object: 'module.name'}``) under the
    name another environment gives them; everything else is pickled as by the standard
    pickler."""
    renames: Dict[object, str] = {}

    def save_global(self, obj, name=None):
        if obj not in self.renames:
            return super().save_global(obj, name)
        module, _, qualname = self.renames[obj].rpartition('.')
        self.write(pickle.GLOBAL + f'{module}\n{qualname}\n'.encode())
        self.memoize(obj)


try:
    from numpy._core import multiarray as _multiarray
except ImportError:  # numpy 1.x, which names them this way itself
    from numpy.core import multiarray as _multiarray
# numpy 1.x pickles name numpy's scalar and array constructors under numpy.core (numpy 2:
# numpy._core)
NUMPY1_NAMES = {_multiarray.scalar: 'numpy.core.multiarray.scalar',
                _multiarray._reconstruct: 'numpy.core.multiarray._reconstruct'}


def save(obj, path, numpy_version=2, renames=None):
    """``torch.save`` (zip format, pickle protocol 2) as a process with numpy ``numpy_version``
    writes it, with the globals in ``renames`` written under other names."""
    renames = {**(NUMPY1_NAMES if numpy_version == 1 else {}), **(renames or {})}
    if renames:
        pickle_module = types.ModuleType('renaming_pickle')
        pickle_module.Pickler = type('Pickler', (RenamingPickler, ), dict(renames=renames))
        torch.save(obj, path, pickle_module=pickle_module)
    else:
        torch.save(obj, path)
    return str(path)


# ------------------------------------------------------------------------------------ the modules
def seeded(factory, seed):
    torch.manual_seed(seed)
    return factory().eval()


class Wrapper(nn.Module):
    """Holds ``modules`` under their names: the multi-crop wrapper (``backbone``, ``head``), the
    DDP wrapper (``module``)."""

    def __init__(self, **modules):
        super().__init__()
        for name, module in modules.items():
            self.add_module(name, module)


def weight_normed(in_dim, out_dim):
    """``nn.utils.weight_norm`` of a bias-free Linear: ``weight_g`` and ``weight_v``, as the
    2021-22 code pickled it."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)  # the parametrization API renames them
        return nn.utils.weight_norm(nn.Linear(in_dim, out_dim, bias=False))


def projection_head(patch_layer=None):
    """DINO's head: a 3-layer GELU MLP to a bottleneck and a weight-normalised prototype layer;
    iBOT's adds a patch prototype layer (``patch_layer``: ``'own'`` or ``'shared'``)."""
    head = Wrapper(mlp=nn.Sequential(nn.Linear(VIT_DIMS, HEAD_HIDDEN), nn.GELU(),
                                     nn.Linear(HEAD_HIDDEN, HEAD_HIDDEN), nn.GELU(),
                                     nn.Linear(HEAD_HIDDEN, HEAD_BOTTLENECK)),
                   last_layer=weight_normed(HEAD_BOTTLENECK, HEAD_OUT))
    if patch_layer == 'own':
        head.last_layer2 = weight_normed(HEAD_BOTTLENECK, HEAD_OUT)
    elif patch_layer == 'shared':
        head.last_layer2 = head.last_layer
    return head


class Buffers(nn.Module):
    """A loss module's state: its registered buffers (DINO's and iBOT's centres)."""

    def __init__(self, **buffers):
        super().__init__()
        for name, value in buffers.items():
            self.register_buffer(name, value)


def with_random_batch_norms(model):
    """``model`` with every batch norm's affine weights drawn at random and its running
    statistics measured on random images (a fresh one holds 1, 0, 0, 1, which would hide a
    swapped pair)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for norm in norms:
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0, 0.1)
            norm.momentum = None  # a cumulative average over the batches below
        model.train()
        for _ in range(2):
            model(torch.randn(4, 3, 64, 64))
    for norm in norms:
        norm.momentum = 0.1
    return model


def resnet18():
    return with_random_batch_norms(torchvision.models.resnet18())


def resnet18_without_fc():
    """A ResNet in torchvision names without the classifier, as DINO (``fc = Identity``) and
    SlotCon (``head_type='early_return'``) build theirs."""
    model = resnet18()
    model.fc = nn.Identity()
    return model


def fake_gradients(module, seed):
    """Small random gradients: one step keeps the weights near their initialisation."""
    generator = torch.Generator().manual_seed(seed)
    for param in module.parameters():
        param.grad = 1e-3 * torch.randn(param.shape, generator=generator)


def cosine_schedule(base, final, warmup=0):
    """A per-iteration numpy schedule: linear warm-up from 0, then cosine from ``base`` to
    ``final`` (the kind DINO and iBOT index with the global iteration)."""
    steps = np.arange(SCHEDULE_ITERS - warmup)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * steps / len(steps)))
    return np.concatenate((np.linspace(0, base, warmup), cosine))


def dino_optimizer(student, iteration=7):
    """AdamW over (weights) and (biases and norms, no decay), one step taken, then ``lr`` and
    the first group's ``weight_decay`` set from numpy schedules at ``iteration``."""
    decayed = [p for n, p in student.named_parameters() if not n.endswith('.bias') and p.ndim > 1]
    not_decayed = [p for n, p in student.named_parameters() if n.endswith('.bias') or p.ndim == 1]
    optimizer = torch.optim.AdamW([{'params': decayed}, {'params': not_decayed,
                                                          'weight_decay': 0.}])
    fake_gradients(student, 0)
    optimizer.step()
    lr, wd = cosine_schedule(5e-4, 1e-6, warmup=4), cosine_schedule(0.04, 0.4)
    for index, group in enumerate(optimizer.param_groups):
        group['lr'] = lr[iteration]
        if index == 0:
            group['weight_decay'] = wd[iteration]
    return optimizer


def fp16_scaler_state():
    return torch.amp.GradScaler('cpu').state_dict()


# ---------------------------------------------------------------------------------------- DINO
def dino_args(launcher, arch):
    """``main_dino.py``'s arguments as they are when the checkpoint is saved (defaults, the
    distributed fields ``init_distributed_mode`` or submitit's ``Trainer`` set)."""
    args = argparse.Namespace(
        arch=arch, patch_size=16, out_dim=HEAD_OUT, norm_last_layer=True, momentum_teacher=0.996,
        use_bn_in_head=False, warmup_teacher_temp=0.04, teacher_temp=0.04,
        warmup_teacher_temp_epochs=0, use_fp16=True, weight_decay=0.04, weight_decay_end=0.4,
        clip_grad=3.0, batch_size_per_gpu=64, epochs=100, freeze_last_layer=1, lr=0.0005,
        warmup_epochs=10, min_lr=1e-06, optimizer='adamw', drop_path_rate=0.1,
        global_crops_scale=(0.4, 1.0), local_crops_number=8, local_crops_scale=(0.05, 0.4),
        data_path='/path/to/imagenet/train/', output_dir='/path/to/saving_dir', saveckp_freq=20,
        seed=0, num_workers=10, dist_url='env://', local_rank=0, rank=0, world_size=8, gpu=0)
    if launcher == 'submitit':  # run_with_submitit.py: its own options and a Path output_dir
        args.__dict__.update(
            ngpus=8, nodes=2, timeout=2800, job_dir='', partition='learnfair', use_volta32=False,
            comment='', world_size=16,
            dist_url='file:///checkpoint/user/experiments/5f0c4e2a9b3d4c1e8f7a6b5c4d3e2f1a_init',
            output_dir=pathlib.PosixPath('/checkpoint/user/experiments/51234567'))
    return args


def dino_training_checkpoint(folder, launcher='torch.distributed.launch', numpy_version=2,
                             arch='vit_small', name=None) -> Published:
    """``checkpoint.pth`` of ``main_dino.py`` (``launcher``: ``'torch.distributed.launch'`` or
    ``'submitit'``) with a ViT (``arch='vit_small'``) or a torchvision ResNet (``'resnet18'``;
    the DINO release is a ResNet-50)."""
    factory = TimmLayoutViT if arch.startswith('vit') else resnet18_without_fc
    teacher_backbone, student_backbone = seeded(factory, 10), seeded(factory, 11)
    student = Wrapper(module=Wrapper(backbone=student_backbone, head=projection_head()))  # DDP
    teacher = Wrapper(backbone=teacher_backbone, head=projection_head())
    if not arch.startswith('vit'):  # batch norms: the teacher is DDP-wrapped too
        teacher = Wrapper(module=teacher)
    optimizer = dino_optimizer(student)  # its step changes the student in place
    checkpoint = {
        'student': student.state_dict(),
        'teacher': teacher.state_dict(),
        'optimizer': optimizer.state_dict(),
        'epoch': 100,
        'args': dino_args(launcher, arch),
        'dino_loss': Buffers(center=torch.randn(1, HEAD_OUT)).state_dict(),
        'fp16_scaler': fp16_scaler_state(),
    }
    name = name or f'dino_{arch}_{launcher.split(".")[-1]}_numpy{numpy_version}.pth'
    path = save(checkpoint, f'{folder}/{name}', numpy_version)
    return Published(path, {'teacher': teacher_backbone, 'student': student_backbone})


def dino_backbone_release(folder, arch='vit_small') -> Published:
    """``dino_deitsmall16_pretrain.pth`` (or ``dino_resnet50_pretrain.pth``): the teacher
    backbone's state dict."""
    factory = TimmLayoutViT if arch.startswith('vit') else resnet18_without_fc
    backbone = seeded(factory, 12)
    path = save(backbone.state_dict(), f'{folder}/dino_{arch}_pretrain.pth')
    return Published(path, {'teacher': backbone})


# ---------------------------------------------------------------------------------------- iBOT
class MaskedViT(TimmLayoutViT):
    """iBOT's student backbone: the ViT with the learned mask token ``masked_embed``."""

    def __init__(self):
        super().__init__()
        self.masked_embed = nn.Parameter(torch.zeros(1, VIT_DIMS))


def ibot_training_checkpoint(folder, numpy_version=2) -> Published:
    """``checkpoint.pth`` of ``main_ibot.py`` with a ViT."""
    teacher_backbone, student_backbone = seeded(TimmLayoutViT, 20), seeded(MaskedViT, 21)
    student = Wrapper(module=Wrapper(backbone=student_backbone, head=projection_head('own')))
    teacher = Wrapper(backbone=teacher_backbone, head=projection_head('shared'))
    args = dino_args('torch.distributed.launch', 'vit_small')
    args.__dict__.update(patch_out_dim=HEAD_OUT, shared_head=False, shared_head_teacher=True,
                         use_masked_im_modeling=True, pred_ratio=(0.0, 0.3), lambda1=1.0,
                         lambda2=1.0, pred_start_epoch=0, global_crops_number=2)
    optimizer = dino_optimizer(student)  # its step changes the student in place
    checkpoint = {
        'student': student.state_dict(),
        'teacher': teacher.state_dict(),
        'optimizer': optimizer.state_dict(),
        'epoch': 800,
        'args': args,
        'ibot_loss': Buffers(center=torch.randn(1, HEAD_OUT),
                             center2=torch.randn(1, 1, HEAD_OUT)).state_dict(),
        'fp16_scaler': fp16_scaler_state(),
    }
    path = save(checkpoint, f'{folder}/ibot_checkpoint_numpy{numpy_version}.pth', numpy_version)
    return Published(path, {'teacher': teacher_backbone, 'student': student_backbone})


def ibot_backbone_release(folder, branch='teacher') -> Published:
    """``checkpoint_teacher.pth`` / ``checkpoint_student.pth``: ``extract_backbone_weights.py``
    of the training checkpoint's ``branch``: ``{'state_dict': backbone without prefix}``."""
    backbone = seeded(TimmLayoutViT if branch == 'teacher' else MaskedViT, 22)
    path = save({'state_dict': backbone.state_dict()}, f'{folder}/checkpoint_{branch}.pth')
    return Published(path, {'teacher': backbone})


# ------------------------------------------------------------------------------------- SlotCon
SLOTCON_CHANNELS, SLOTCON_HIDDEN, SLOTCON_OUT, SLOTCON_PROTOTYPES = 512, 64, 32, 8


def slotcon_projector():
    """SlotCon's 2-D projector: 1×1 conv, BN, GELU, 1×1 conv, BN, GELU, 1×1 conv."""
    return Wrapper(mlp=nn.Sequential(
        nn.Conv2d(SLOTCON_CHANNELS, SLOTCON_HIDDEN, 1), nn.BatchNorm2d(SLOTCON_HIDDEN), nn.GELU(),
        nn.Conv2d(SLOTCON_HIDDEN, SLOTCON_HIDDEN, 1), nn.BatchNorm2d(SLOTCON_HIDDEN), nn.GELU(),
        nn.Conv2d(SLOTCON_HIDDEN, SLOTCON_OUT, 1)))


def slotcon_model():
    """SlotCon's module names: two encoders, projectors, the centre, groupings, predictor."""
    model = Wrapper(
        encoder_q=seeded(resnet18_without_fc, 30), encoder_k=seeded(resnet18_without_fc, 31),
        projector_q=slotcon_projector(), projector_k=slotcon_projector(),
        grouping_q=Wrapper(slot_embed=nn.Embedding(SLOTCON_PROTOTYPES, SLOTCON_OUT)),
        grouping_k=Wrapper(slot_embed=nn.Embedding(SLOTCON_PROTOTYPES, SLOTCON_OUT)),
        predictor_slot=Wrapper(mlp=nn.Sequential(
            nn.Linear(SLOTCON_OUT, SLOTCON_HIDDEN), nn.BatchNorm1d(SLOTCON_HIDDEN), nn.GELU(),
            nn.Linear(SLOTCON_HIDDEN, SLOTCON_HIDDEN), nn.BatchNorm1d(SLOTCON_HIDDEN), nn.GELU(),
            nn.Linear(SLOTCON_HIDDEN, SLOTCON_OUT))))
    model.register_buffer('center', torch.zeros(1, SLOTCON_PROTOTYPES))
    return model


class LarsState(torch.optim.Optimizer):
    """An optimizer with LARS's state layout (group ``eta`` and filters, ``mu`` per parameter),
    for the shape of SlotCon's saved optimizer state; its step is plain momentum SGD."""

    def __init__(self, params, lr, weight_decay, momentum):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                                      eta=0.001, weight_decay_filter=None,
                                      lars_adaptation_filter=None))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for param in group['params']:
                state = self.state[param]
                state['mu'] = state.get('mu', torch.zeros_like(param)) * group['momentum'] + \
                    param.grad
                param.add_(state['mu'], alpha=-group['lr'])


def slotcon_training_checkpoint(folder) -> Published:
    """``ckpt_epoch_800.pth`` of ``main_pretrain.py`` (LARS, warm-up + cosine, fp16)."""
    model = slotcon_model()
    encoders = {'teacher': model.encoder_k, 'student': model.encoder_q}
    ddp = Wrapper(module=model)
    optimizer = LarsState(ddp.parameters(), lr=1.0, weight_decay=1e-5, momentum=0.9)
    fake_gradients(ddp, 1)
    optimizer.step()  # changes the encoders in place, before their state is taken
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=SCHEDULE_ITERS,
                                                        eta_min=1e-6)
    scheduler = {key: value for key, value in cosine.state_dict().items()
                 if key not in ('T_max', 'eta_min')}
    scheduler.update(multiplier=100, warmup_epoch=5, finished=False,
                     after_scheduler=cosine.state_dict())
    args = argparse.Namespace(
        dataset='COCO', data_dir='./datasets/coco/', image_size=224, min_scale=0.08,
        arch='resnet18', dim_hidden=4096, dim_out=256, num_prototypes=256, teacher_momentum=0.99,
        teacher_temp=0.07, student_temp=0.1, center_momentum=0.9, group_loss_weight=0.5,
        batch_size=64, base_lr=1.0, optimizer='lars', warmup_epoch=5, warmup_multiplier=100,
        weight_decay=1e-5, momentum=0.9, fp16=True, start_epoch=1, epochs=800,
        output_dir='./output/slotcon_coco_r50_800ep', auto_resume=True, resume='',
        print_freq=10, save_freq=50, seed=None, num_workers=8, local_rank=0, world_size=8,
        num_instances=118287)
    checkpoint = {'args': args, 'model': ddp.state_dict(), 'optimizer': optimizer.state_dict(),
                  'scheduler': scheduler, 'epoch': 800, 'scaler': fp16_scaler_state()}
    path = save(checkpoint, f'{folder}/ckpt_epoch_800.pth')
    return Published(path, encoders)


def slotcon_converted(training: Published, folder) -> Published:
    """``convert_pretrain_to_mm.py`` of a training checkpoint: the teacher encoder's keys without
    ``module.encoder_k.``, keys containing ``fc`` left out, in ``{'state_dict': ...}``."""
    model = torch.load(training.path, map_location='cpu', weights_only=False)['model']  # ours
    prefix = 'module.encoder_k.'
    state_dict = {k[len(prefix):]: v for k, v in model.items()
                  if k.startswith(prefix) and 'fc' not in k}
    path = save({'state_dict': state_dict}, f'{folder}/slotcon_mm.pth')
    return Published(path, {'teacher': training.backbones['teacher']})


# ---------------------------------------------------------------------- torchvision and timm
def torchvision_state_dict(folder) -> Published:
    """``torchvision.models.resnet18().state_dict()`` (classifier included)."""
    model = seeded(resnet18, 40)
    return Published(save(model.state_dict(), f'{folder}/resnet18_torchvision.pth'),
                     {'teacher': model})


def timm_state_dict(folder) -> Published:
    """A timm ViT's state dict: the backbone and its classifier ``head``."""
    model = seeded(TimmLayoutViT, 41)
    model.head = nn.Linear(VIT_DIMS, 10)
    return Published(save(model.state_dict(), f'{folder}/vit_timm.pth'), {'teacher': model})
