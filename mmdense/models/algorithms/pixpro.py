"""PixPro (Xie et al., CVPR 2021): its projector, pixel propagation module and algorithm."""
from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmpretrain.structures import DataSample
from torch import Tensor

from mmdense.registry import MODELS
from .base import TeacherStudentSelfSupervisor, TrainingBatch, view_geometry


@MODELS.register_module()
class PixelMLP(BaseModule):
    """Two-layer MLP applied to every pixel: ``1×1 conv → BN → ReLU → 1×1 conv`` (both convs
    with bias, PyTorch's default initialisation), (B, C_in, H, W) → (B, C_out, H, W). PixPro's
    projector (2048 → 4096 → 256) and instance predictor (256 → 4096 → 256). A tuple of backbone
    outputs is read at its last entry."""

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.out_channels = out_channels
        self.mlp = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, kernel_size=1),
            nn.BatchNorm2d(hidden_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, out_channels, kernel_size=1),
        )

    def forward(self, x) -> Tensor:
        if isinstance(x, (tuple, list)):
            x = x[-1]
        return self.mlp(x)


@MODELS.register_module()
class PixelPropagation(BaseModule):
    """PixPro's pixel propagation module (PPM): every pixel becomes a similarity-weighted sum of
    the transformed pixels of its own view,

    ``y_i = Σ_j s(x_i, x_j) · ĝ(x_j)``,  ``s(x_i, x_j) = max(cos(x_i, x_j), 0)^γ``,

    over all pixels j of the map, with ``ĝ(x) = g(x) / ‖g(x)‖`` (the official ``featprop``
    normalises the transformed values) and g a stack of ``num_transform_layers`` layers: 0 the
    identity, 1 a 1×1 conv (with bias), 2 a :class:`PixelMLP` with C hidden channels.

    Args:
        channels: C of the (B, C, H, W) input, kept by the output.
        num_transform_layers: 0, 1 (the official scripts) or 2.
        gamma: γ, the sharpness of the similarity (2 in the official scripts).
    """

    def __init__(self, channels: int, num_transform_layers: int = 1, gamma: float = 2.0,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_transform_layers == 0:
            self.transform = nn.Identity()
        elif num_transform_layers == 1:
            self.transform = nn.Conv2d(channels, channels, kernel_size=1)
        elif num_transform_layers == 2:
            self.transform = PixelMLP(channels, channels, channels)
        else:
            raise ValueError(f'PixelPropagation: num_transform_layers must be 0, 1 or 2, got '
                             f'{num_transform_layers}')
        if gamma <= 0:
            raise ValueError(f'PixelPropagation: gamma must be positive, got {gamma}')
        self.channels = channels
        self.gamma = gamma

    def forward(self, x: Tensor) -> Tensor:
        values = F.normalize(self.transform(x), dim=1).flatten(2)  # (B, C, HW)
        keys = F.normalize(x, dim=1).flatten(2)
        similarity = (keys.transpose(1, 2) @ keys).clamp(min=0)  # (B, HW, HW)
        if self.gamma < 1:  # the official shift: the gradient of 0^γ is infinite for γ < 1
            similarity = similarity + 1e-6
        similarity = similarity ** self.gamma
        return (values @ similarity.transpose(1, 2)).view_as(x)



class PixProEncoding(NamedTuple):
    """One view through an encoder: the (B, C, h, w) pixel features (the propagated ones for the
    student) and the (B, D) instance embedding, ``None`` without the instance branch."""
    pixels: Tensor
    instance: Optional[Tensor]


@dataclass
class PixProBatch(TrainingBatch):
    """The two views with their geometry: (B, 2, 4) crop boxes in original-image pixels, (B, 2)
    flips and the (B, 2) ``(height, width)`` of the original images."""
    boxes: Tensor
    flips: Tensor
    image_shapes: Tensor


@MODELS.register_module()
class PixPro(TeacherStudentSelfSupervisor):
    """PixPro: pixel-to-propagation consistency (Xie et al., "Propagate Yourself", CVPR 2021).

    Two views of an image go through the student (backbone → ``neck``, a dense projector →
    :class:`PixelPropagation`) and its EMA teacher (backbone → ``neck``). The student's propagated
    pixels of one view follow the teacher's pixels of the other view at the positive pairs (pixels
    that show nearly the same image spot, :class:`PixProConsistencyLoss`), symmetrised:

    ``L = L_pix(y_1, x'_2) + L_pix(y_2, x'_1) + α (L_ins(p_1, z'_2) + L_ins(p_2, z'_1))``

    The instance branch (α = ``instance_loss_weight`` > 0; the official scripts publish α = 0)
    is BYOL on globally pooled maps: the student's ``instance_neck`` and ``instance_predictor``
    (applied to the dense map, then averaged over it, as the official code) against the
    teacher's pooled ``instance_neck`` of the other view, ``L_ins = −2 cos``
    (``loss_instance``). Each view is encoded by its own forward pass (BatchNorm statistics per
    view, as the official code).

    The teacher (the official momentum encoder) follows a cosine momentum schedule from 0.99 to
    1, runs in train mode with its own BatchNorm statistics (only parameters are averaged), and
    the transferred branch is the student (the official conversion to detectron2 exports the
    gradient-trained encoder); the shared arguments override each.

    Args:
        backbone: e.g. mmpretrain ``ResNet`` with ``out_indices=(3, )``.
        neck: the dense projector, :class:`PixelMLP` config.
        propagation: :class:`PixelPropagation` config; ``channels`` defaults to the neck's
            output.
        loss_pixel: :class:`PixProConsistencyLoss` config (the positive threshold T).
        instance_loss_weight: α; 0 builds no instance branch.
        instance_neck / instance_predictor: the instance branch's projector and predictor
            (:class:`PixelMLP` configs); by default the neck's shape and a predictor
            ``C → hidden → C`` with the neck's C and hidden width (the official heads).
        loss_instance: the instance term, mmpretrain's ``CosineSimilarityLoss``.
        **kwargs: the arguments every teacher–student method takes
            (:class:`TeacherStudentSelfSupervisor`).
    """
    default_transfer_branch = 'student'
    default_teacher_momentum = 0.99
    default_end_teacher_momentum = 1.0
    default_teacher_buffers = 'own'
    view_hint = 'use MultiCropWithGeometry with 2 global and 0 local crops'

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 propagation: dict = dict(type='PixelPropagation', num_transform_layers=1,
                                          gamma=2.0),
                 loss_pixel: dict = dict(type='PixProConsistencyLoss', threshold=0.7),
                 instance_loss_weight: float = 0.0,
                 instance_neck: Optional[dict] = None,
                 instance_predictor: Optional[dict] = None,
                 loss_instance: dict = dict(type='CosineSimilarityLoss', shift_factor=0.0,
                                            scale_factor=2.0),
                 **kwargs) -> None:
        super().__init__(backbone=backbone, neck=neck, **kwargs)
        self.check_backbone_width('neck in_channels', self.neck.in_channels)
        self.propagation = MODELS.build({'channels': self.neck.out_channels, **propagation})
        self.check_channels('propagation channels', self.propagation.channels,
                            'the neck out_channels', self.neck.out_channels)
        self.loss_pixel = MODELS.build(loss_pixel)
        if instance_loss_weight < 0:
            raise ValueError(f'PixPro: instance_loss_weight must be >= 0, got '
                             f'{instance_loss_weight}')
        self.instance_loss_weight = instance_loss_weight
        if instance_loss_weight > 0:
            self.instance_neck = MODELS.build(instance_neck or neck)
            self.check_backbone_width('instance_neck in_channels', self.instance_neck.in_channels)
            self.instance_predictor = MODELS.build(instance_predictor or dict(
                type='PixelMLP', in_channels=self.instance_neck.out_channels,
                hidden_channels=self.instance_neck.hidden_channels,
                out_channels=self.instance_neck.out_channels))
            self.check_channels('instance_predictor in_channels',
                                self.instance_predictor.in_channels,
                                'the instance_neck out_channels', self.instance_neck.out_channels)
            self.loss_instance = MODELS.build(loss_instance)

    def student_modules(self) -> dict:
        """The modules the teacher tracks (the propagation and the predictor are student-only)."""
        modules = dict(backbone=self.backbone, neck=self.neck)
        if self.instance_loss_weight > 0:
            modules['instance_neck'] = self.instance_neck
        return modules

    def view_bounds(self) -> Tuple[int, int]:
        return 2, 2

    def unpack(self, inputs: List[Tensor], data_samples: List[DataSample]) -> PixProBatch:
        """The views with the crop boxes, flips and image shapes (``ori_shape``) the pipeline
        recorded (``MultiCropWithGeometry``, ``PackMultiViewInputs``)."""
        missing = [key for key in ('crop_boxes', 'flips', 'ori_shape')
                   if key not in data_samples[0]]
        if missing:
            raise KeyError(f'PixPro: the data samples lack {missing}: {self.view_hint}, '
                           'packed by PackMultiViewInputs')
        device = inputs[0].device
        boxes, flips = view_geometry(data_samples, device)
        # a non-blocking copy: no wait for the device
        image_shapes = torch.tensor([sample.ori_shape for sample in data_samples],
                                    dtype=torch.float32).to(device, non_blocking=True)
        return PixProBatch(inputs, data_samples, boxes, flips, image_shapes)

    def encode(self, modules: dict, view: Tensor, student: bool) -> PixProEncoding:
        """One view (B, 3, H, W) through the student's or the teacher's ``modules``."""
        features = modules['backbone'](view)[-1]
        pixels = modules['neck'](features)
        if student:
            pixels = self.propagation(pixels)
        instance = None
        if self.instance_loss_weight > 0:
            instance = modules['instance_neck'](features)
            if student:
                instance = self.instance_predictor(instance)
            instance = instance.mean(dim=(2, 3))
        return PixProEncoding(pixels, instance)

    def encode_student(self, batch: PixProBatch) -> List[PixProEncoding]:
        return [self.encode(self.student_modules(), view, student=True) for view in batch.views]

    def encode_teacher(self, batch: PixProBatch) -> List[PixProEncoding]:
        return [self.encode(self.teacher, view, student=False) for view in batch.views]

    def compute_losses(self, student: List[PixProEncoding], teacher: List[PixProEncoding],
                       batch: PixProBatch) -> dict:
        sizes = tuple(view.pixels.shape[-2:] for view in student)
        positives = self.loss_pixel.positive_pairs(batch.boxes, batch.flips, sizes,
                                                   batch.image_shapes)
        loss_pixel = (self.loss_pixel(student[0].pixels, teacher[1].pixels, positives)
                      + self.loss_pixel(student[1].pixels, teacher[0].pixels,
                                        positives.transpose(1, 2)))
        losses = dict(loss_pixel=loss_pixel)
        if self.instance_loss_weight > 0:
            losses['loss_instance'] = self.instance_loss_weight * (
                self.loss_instance(student[0].instance, teacher[1].instance)
                + self.loss_instance(student[1].instance, teacher[0].instance))
        return losses
