from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdense.models.losses import feature_neighbours, per_image_to_batch_mask
from mmdense.models.utils import gathered_spherical_kmeans, sinkhorn_knopp
from mmdense.registry import MODELS
from mmdense.structures import geometric_positives
from mmdense.utils.dist import concat_all_gather, get_rank, get_world_size
from .base import TeacherStudentSelfSupervisor, TrainingBatch, view_geometry

SEMANTIC_VARIANTS = ('km', 'pm')


class ViewEmbedding(NamedTuple):
    """One view through an encoder: (B, D) instance embedding, (B, h·w, D) pixel embeddings
    and the (h, w) size of the pixel grid."""
    instance: Tensor
    pixels: Tensor
    size: Tuple[int, int]


@MODELS.register_module()
class DSC(TeacherStudentSelfSupervisor):
    """DSC: dense semantic contrast (Li et al., ACM MM 2021), multi-granularity contrast.

    Two overlapping views go through the encoder (backbone + ``neck``, e.g. mmpretrain's
    ``DenseCLNeck``: a global MLP and a dense 1×1-conv MLP) and its momentum (EMA) copy. Three
    contrasts, each symmetrised over the views (query from one view's encoder, keys from the
    other view's momentum encoder):

    * instance (:class:`InfoNCEWithQueueLoss`): MoCo InfoNCE against a queue of past keys;
    * pixel (intra-image, :class:`MultiPositiveInfoNCELoss`): each pixel's positives are the
      other view's pixels covering the same image location (crop geometry) and its
      ``num_neighbours`` nearest pixels of the other view in the momentum embedding; the other
      pixels of the batch are negatives;
    * semantic (inter-image, :class:`MultiPositiveInfoNCELoss`): momentum pixel embeddings of
      the whole batch (all ranks, both views) get pseudo-classes — k-means (``'km'``) or
      Sinkhorn-balanced assignment to learnable prototypes (``'pm'``, which also trains the
      prototypes by predicting the assignment, :class:`PrototypeAssignmentLoss`) — and pixels
      of one class are positives of each other.

    ``L = L_instance + λ_pix L_pixel + λ_sem (L_semantic [+ L_prototype])``

    Args:
        neck: ``DenseCLNeck`` config (global and dense projections).
        loss_instance / loss_pixel / loss_semantic: configs of the three contrasts
            (:class:`InfoNCEWithQueueLoss`, :class:`MultiPositiveInfoNCELoss` twice), each with
            its own τ.
        loss_prototype: :class:`PrototypeAssignmentLoss` config (its τ), built for ``'pm'`` only.
        queue_len: negatives kept for the instance contrast.
        pixel_loss_weight / semantic_loss_weight: λ_pix / λ_sem.
        num_neighbours: k, feature-space positives per pixel.
        semantic_variant: ``'km'`` (batch k-means) or ``'pm'`` (prototypes + Sinkhorn).
        num_classes: clusters (``'km'``) or prototypes (``'pm'``).
        kmeans_iters: Lloyd iterations of the batch k-means.
        sinkhorn_epsilon / sinkhorn_iters: Sinkhorn ε and iterations (``'pm'``).
        **kwargs: the shared arguments of :class:`TeacherStudentSelfSupervisor`: ``backbone``
            (e.g. mmpretrain ``ResNet`` with ``out_indices=(3, )``); the momentum encoder's
            ``teacher_momentum`` / ``end_teacher_momentum`` (0.999 → 0.999 by default);
            ``teacher_buffers``, what its BN running statistics follow: ``'own'`` (default: its
            own forward passes, MoCo's key encoder, whose parameters alone are averaged),
            ``'average'`` (the student's, averaged like parameters) or ``'copy'`` (the
            student's) — the loss is the same for all three, since both encoders normalise with
            batch statistics in training; they differ where the momentum encoder runs in eval
            mode (``feat_branch='teacher'``); ``feat_branch``: ``'student'`` (default: the
            encoder trained by gradient, as MoCo transfers) or ``'teacher'``;
            ``backbone_checkpoint``, ...
    """

    default_transfer_branch = 'student'
    default_teacher_momentum = 0.999
    default_end_teacher_momentum = 0.999
    default_teacher_buffers = 'own'
    view_hint = 'use MultiCropWithGeometry with 2 global and 0 local crops'

    def __init__(self,
                 neck: dict,
                 loss_instance: dict = dict(type='InfoNCEWithQueueLoss', temp=0.2),
                 loss_pixel: dict = dict(type='MultiPositiveInfoNCELoss', temp=0.2),
                 loss_semantic: dict = dict(type='MultiPositiveInfoNCELoss', temp=0.2),
                 loss_prototype: dict = dict(type='PrototypeAssignmentLoss', temp=0.1),
                 queue_len: int = 65536,
                 pixel_loss_weight: float = 1.0,
                 semantic_loss_weight: float = 0.5,
                 num_neighbours: int = 4,
                 semantic_variant: str = 'km',
                 num_classes: int = 128,
                 kmeans_iters: int = 10,
                 sinkhorn_epsilon: float = 0.05,
                 sinkhorn_iters: int = 3,
                 **kwargs) -> None:
        super().__init__(neck=neck, **kwargs)
        if len(getattr(self.backbone, 'out_indices', (0, ))) != 1:
            raise ValueError('DSC projects one feature map: give the backbone a single '
                             f'out_indices, got {self.backbone.out_indices}')
        self.check_backbone_width('neck in_channels', self.neck.mlp[0].in_features)
        embed_dim = self.neck.mlp[-1].out_features
        if semantic_variant not in SEMANTIC_VARIANTS:
            raise ValueError(f'semantic_variant must be one of {SEMANTIC_VARIANTS}, got '
                             f'{semantic_variant!r}')
        self.loss_instance = MODELS.build(loss_instance)
        self.loss_pixel = MODELS.build(loss_pixel)
        self.loss_semantic = MODELS.build(loss_semantic)
        self.pixel_loss_weight = pixel_loss_weight
        self.semantic_loss_weight = semantic_loss_weight
        self.num_neighbours = num_neighbours
        self.semantic_variant = semantic_variant
        self.num_classes = num_classes
        self.kmeans_iters = kmeans_iters
        self.sinkhorn_epsilon = sinkhorn_epsilon
        self.sinkhorn_iters = sinkhorn_iters

        self.register_buffer('queue', F.normalize(torch.randn(queue_len, embed_dim), dim=1))
        self.register_buffer('queue_ptr', torch.zeros((), dtype=torch.long))
        if semantic_variant == 'pm':
            self.prototypes = nn.Parameter(F.normalize(torch.randn(num_classes, embed_dim),
                                                       dim=1))
            self.loss_prototype = MODELS.build(loss_prototype)

    def student_modules(self) -> dict:
        """The modules the momentum encoder tracks, by name."""
        return dict(backbone=self.backbone, neck=self.neck)

    @staticmethod
    def encode_view(modules: dict, view: Tensor) -> ViewEmbedding:
        features = modules['backbone'](view)
        instance, pixels, _ = modules['neck'](features)
        return ViewEmbedding(instance, pixels.transpose(1, 2), tuple(features[-1].shape[-2:]))

    def view_bounds(self) -> Tuple[int, Optional[int]]:
        return 2, 2

    def encode_teacher(self, batch: TrainingBatch) -> List[ViewEmbedding]:
        return [self.encode_view(self.teacher, view) for view in batch.views]

    def encode_student(self, batch: TrainingBatch) -> List[ViewEmbedding]:
        return [self.encode_view(self.student_modules(), view) for view in batch.views]

    def compute_losses(self, student: List[ViewEmbedding], teacher: List[ViewEmbedding],
                       batch: TrainingBatch) -> dict:
        boxes, flips = view_geometry(batch.data_samples, batch.views[0].device)
        teacher_keys = [concat_all_gather(t.pixels) for t in teacher]  # (world·B, n, D)
        labels, all_labels, loss_prototype = self.pseudo_classes(student, teacher)
        negatives = self.queue.clone()  # the backward pass needs it as it was before enqueue

        loss_instance = loss_pixel = loss_semantic = 0
        for q, k in ((0, 1), (1, 0)):
            queries = student[q].pixels.flatten(0, 1)
            keys = teacher_keys[k].flatten(0, 1)
            same_class = labels[:, q].flatten()[:, None] == all_labels[:, k].flatten()[None]
            loss_instance += self.loss_instance(student[q].instance, teacher[k].instance,
                                                negatives) / 2
            loss_pixel += self.loss_pixel(queries, keys,
                                          self.pixel_positives(teacher, boxes, flips, q, k)) / 2
            loss_semantic += self.loss_semantic(queries, keys, same_class) / 2
        self.enqueue(torch.stack([t.instance for t in teacher], dim=1).flatten(0, 1))

        losses = dict(loss_instance=loss_instance,
                      loss_pixel=self.pixel_loss_weight * loss_pixel,
                      loss_semantic=self.semantic_loss_weight * loss_semantic)
        if loss_prototype is not None:
            losses['loss_prototype'] = self.semantic_loss_weight * loss_prototype
        return losses

    def pixel_positives(self, teacher: List[ViewEmbedding], boxes: Tensor, flips: Tensor,
                        query_view: int, key_view: int) -> Tensor:
        """(B·n, world·B·n) bool: for each pixel of the query view, the pixels of the key view
        (all images of all ranks) that cover the same image location, or are among its
        ``num_neighbours`` nearest in the momentum embedding, in the same image."""
        q, k = query_view, key_view
        if self.num_neighbours > teacher[k].pixels.shape[1]:
            raise ValueError(f'num_neighbours={self.num_neighbours} exceeds the '
                             f'{teacher[k].pixels.shape[1]} pixels of a view')
        per_image = (geometric_positives(boxes[:, q], flips[:, q], teacher[q].size,
                                         boxes[:, k], flips[:, k], teacher[k].size)
                     | feature_neighbours(teacher[q].pixels, teacher[k].pixels,
                                          self.num_neighbours))
        batch_size = len(per_image)
        return per_image_to_batch_mask(per_image, batch_size * get_world_size(),
                                       get_rank() * batch_size)

    def pseudo_classes(self, student: List[ViewEmbedding],
                       teacher: List[ViewEmbedding]) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """Pseudo-classes of the momentum pixel embeddings of both views of the whole batch.

        Returns this rank's (B, 2, n) and all ranks' (world·B, 2, n) class indices, and for
        ``'pm'`` the prototype loss (student pixels predict the balanced assignment of the same
        pixels by the momentum encoder).
        """
        pixels = torch.stack([t.pixels for t in teacher], dim=1)  # (B, 2, n, D)
        flat = pixels.flatten(0, 2)
        loss_prototype = None
        if self.semantic_variant == 'km':
            num_pixels = flat.shape[0] * get_world_size()
            if self.num_classes > num_pixels:
                raise ValueError(f'num_classes={self.num_classes} exceeds the {num_pixels} '
                                 'pixels that the batch k-means clusters')
            _, labels, all_labels = gathered_spherical_kmeans(
                flat, self.num_classes, self.kmeans_iters, self.kmeans_generator(flat.device))
        else:
            prototypes = F.normalize(self.prototypes.detach().float(), dim=1)
            codes = sinkhorn_knopp(F.normalize(flat.float(), dim=1) @ prototypes.t(),
                                   self.sinkhorn_epsilon, self.sinkhorn_iters)
            labels = codes.argmax(dim=1)
            all_labels = concat_all_gather(labels)
            student_pixels = torch.stack([s.pixels for s in student], dim=1).flatten(0, 2)
            loss_prototype = self.loss_prototype(student_pixels, self.prototypes, codes)
        return labels.view(pixels.shape[:3]), all_labels.view(-1, *pixels.shape[1:3]), \
            loss_prototype

    def kmeans_generator(self, device: torch.device) -> torch.Generator:
        """The generator of the k-means seeding draws: on ``device`` (no host synchronisation),
        seeded by the step count, so every rank draws the same and gets the same clusters.
        A CUDA generator needs a driver, which fake CUDA tensors do not have: the fake-CUDA tests
        draw from the device's default generator instead (``None``)."""
        return torch.Generator(device=device).manual_seed(self.teacher.num_updates)

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Replace the oldest queue entries by the (normalised) keys of all ranks, in the order of
        their images (so the queue does not depend on how the batch is split over ranks)."""
        keys = F.normalize(concat_all_gather(keys).float(), dim=1)[-len(self.queue):]
        slots = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % len(self.queue)
        self.queue[slots] = keys.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + len(keys)) % len(self.queue))
