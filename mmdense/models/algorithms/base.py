"""What every teacher–student method shares; each algorithm file keeps only what is its paper's.

The training step is defined once, in :meth:`TeacherStudentSelfSupervisor.loss`; a method
supplies its modules, its two encoders and its ``compute_losses`` (see the class docstring).
"""
import inspect
from abc import ABCMeta
from dataclasses import dataclass
from itertools import groupby
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.runner.checkpoint import CheckpointLoader
from mmpretrain.models import BaseSelfSupervisor
from mmpretrain.structures import DataSample
from torch import Tensor

from mmdense.models.utils import EMATeacher, last_output_channels

BRANCHES = ('teacher', 'student')
# the arguments BaseSelfSupervisor takes (backbone, neck, head, data_preprocessor, ...)
BASE_ARGUMENTS = tuple(inspect.signature(BaseSelfSupervisor.__init__).parameters)[1:]


@dataclass
class TrainingBatch:
    """One training batch as a method's encoders and losses read it.

    Attributes:
        views: the V view batches, each (B, 3, H, W), in the order the method's
            :meth:`~TeacherStudentSelfSupervisor.unpack` gives them (by default the inputs as
            the pipeline packed them: global crops first, then local ones).
        data_samples: the B samples (crop geometry, masks, ... as packed by the pipeline).

    A method that reads more per batch (masks, query crops, crop boxes) subclasses it and fills
    the extra fields in its ``unpack``, once per step.
    """
    views: List[Tensor]
    data_samples: List[DataSample]


def encode_by_size(views: Sequence[Tensor], encode: Callable[[Tensor], Any]) -> List[Any]:
    """``encode`` applied to each view batch (B, 3, H, W) of ``views``, consecutive views of equal
    size concatenated into one call. ``encode`` returns a tensor or a dict of tensors with the
    (V·B) images along dim 0; the result has one such output per view, in order."""
    outputs = []
    for _, same_size in groupby(views, key=lambda v: v.shape[-2:]):
        same_size = list(same_size)
        encoded = encode(torch.cat(same_size))
        if isinstance(encoded, dict):
            chunks = {k: v.chunk(len(same_size)) for k, v in encoded.items()}
            outputs += [{k: v[i] for k, v in chunks.items()} for i in range(len(same_size))]
        else:
            outputs += list(encoded.chunk(len(same_size)))
    return outputs


def view_geometry(data_samples: Sequence[DataSample],
                  device: torch.device) -> Tuple[Tensor, Tensor]:
    """The crop boxes (B, V, 4), in original-image pixels, and horizontal flips (B, V) bool of
    every view of every sample (``MultiCropWithGeometry`` records them)."""
    boxes = torch.stack([sample.crop_boxes for sample in data_samples]).to(device)
    flips = torch.stack([sample.flips for sample in data_samples]).to(device).bool()
    return boxes, flips


class BuildsTeacherAfterInit(ABCMeta):
    """Metaclass of :class:`TeacherStudentSelfSupervisor`: once the whole constructor chain has
    built the student modules (a subclass of a subclass included), the model builds its EMA
    teacher of :meth:`~TeacherStudentSelfSupervisor.student_modules`."""

    def __call__(cls, *args, **kwargs):
        model = super().__call__(*args, **kwargs)
        model._build_teacher()
        return model


class TeacherStudentSelfSupervisor(BaseSelfSupervisor, metaclass=BuildsTeacherAfterInit):
    """A self-supervised algorithm with an EMA teacher of some of its student modules.

    **The training step** is :meth:`loss`, defined here once and final (a subclass defining
    ``loss`` is refused with a TypeError when the class is created)::

        batch = self.unpack(inputs, data_samples)        # TrainingBatch (method's fields)
        self.check_views(batch.views)                    # against view_bounds()
        self.teacher.update(self.student_modules())      # EMA step (the first one copies)
        with torch.no_grad():
            teacher = self.encode_teacher(batch)
        student = self.encode_student(batch)
        return self.compute_losses(student, teacher, batch)   # dict of losses / log values

    A method implements:

    * ``__init__(self, <its own arguments>, **kwargs)``: builds its modules and passes
      ``**kwargs`` (the shared arguments below) to ``super().__init__``; it does *not* build the
      teacher: the base does that after the whole constructor has run;
    * :meth:`student_modules`: the modules the teacher tracks, by name (the teacher holds copies
      under the same names: ``self.teacher['backbone']``);
    * :meth:`encode_teacher` and :meth:`encode_student`: what each branch computes from the
      batch (any structure: a tensor, a list per view, a dict); the teacher's runs under
      ``torch.no_grad()``;
    * :meth:`compute_losses`: the method's loss terms from both branches, a dict whose ``loss*``
      entries are summed by ``parse_losses`` and whose other entries are logged;
    * optionally :meth:`unpack` (split the inputs, read masks or crop geometry once per step
      into a :class:`TrainingBatch` subclass), :meth:`view_bounds` and ``view_hint`` (the views
      it accepts), ``default_transfer_branch``, the ``default_teacher_*`` class attributes,
      :meth:`backbone_keys_new_to_the_method`.

    Order of the branches: the teacher encodes first, then the student, for every method.
    Random draws made while encoding (drop-path in the student, which the teacher does not
    have) therefore come after the teacher's forward pass; the RNG-dependent draws of the
    losses (CoTAP's derangements) come after both, in ``compute_losses``; draws that must
    precede the teacher (masks) belong in ``unpack`` or, better, the data pipeline. (SlotCon and
    DSC used to encode the student first; their ResNets draw nothing, and the loss fingerprints
    of ``tests/test_models/test_loss_fingerprints.py`` are unchanged.)

    Constructor checks: :meth:`check_channels` states a mismatch with both values,
    :meth:`check_backbone_width` compares a module's input width with
    :meth:`backbone_out_channels` (known without a forward pass).

    ``tests/test_models/test_step_template.py`` trains a method written this way (one teacher
    update per step, before encoding; the teacher branch without gradient).

    The teacher's momentum schedule (cosine from ``teacher_momentum`` to
    ``end_teacher_momentum``) has a length in steps, given by :meth:`set_teacher_schedule`:
    under a Runner the ``TeacherScheduleHook`` of ``configs/_base_/default_runtime.py`` sets it
    to ``runner.max_iters`` before training; a model stepped outside a Runner calls it itself
    (:class:`EMATeacher` refuses to update without it).

    This base also holds the *one* definition of the branch that is transferred
    (``feat_branch``): :meth:`transfer_backbone` is what :meth:`extract_feat`, the exporter
    (``mmdense.transfer.checkpoints``) and the dense evaluation read; and initialising the
    student backbone from a checkpoint (``backbone_checkpoint``) for every method (the teacher
    copies it at the first update).

    Args:
        feat_branch: ``'teacher'`` or ``'student'``; ``None`` takes the class's
            ``default_transfer_branch``.
        backbone_checkpoint: ``dict(path=..., prefix=...)`` (``prefix`` defaults to the teacher
            backbone of an mmdense checkpoint): every backbone tensor must load, except those
            :meth:`backbone_keys_new_to_the_method` lists.
        teacher_momentum / end_teacher_momentum: the teacher momentum m at the first and the
            last step (``teacher ← m·teacher + (1 − m)·student``); ``None`` takes the class's
            ``default_teacher_momentum`` / ``default_end_teacher_momentum``.
        teacher_buffers: what the teacher does with the BatchNorm statistics (``'copy'``,
            ``'average'``, ``'own'``, see :data:`mmdense.models.utils.ema_teacher.BUFFER_MODES`);
            ``None`` takes the class's ``default_teacher_buffers``.
        **kwargs: :class:`BaseSelfSupervisor` arguments (backbone, neck, head,
            data_preprocessor, pretrained, init_cfg, ...).
    """
    default_transfer_branch = 'teacher'
    default_teacher_momentum = 0.996
    default_end_teacher_momentum = 1.0
    default_teacher_buffers = 'copy'
    # how the pipeline makes the views the method needs, for the error of check_views
    view_hint = 'check the MultiCrop pipeline'

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if 'loss' in vars(cls):
            raise TypeError(f'{cls.__name__} overrides loss(), the training step that '
                            'TeacherStudentSelfSupervisor defines once: implement encode_teacher,'
                            ' encode_student and compute_losses instead')

    def __init__(self,
                 feat_branch: Optional[str] = None,
                 backbone_checkpoint: Optional[dict] = None,
                 teacher_momentum: Optional[float] = None,
                 end_teacher_momentum: Optional[float] = None,
                 teacher_buffers: Optional[str] = None,
                 **kwargs) -> None:
        unknown = sorted(set(kwargs) - set(BASE_ARGUMENTS))
        if unknown:  # name the method, not BaseSelfSupervisor
            raise TypeError(f'{type(self).__name__}.__init__() got unexpected keyword '
                            f'argument(s) {unknown}')
        super().__init__(**kwargs)
        feat_branch = feat_branch or self.default_transfer_branch
        if feat_branch not in BRANCHES:
            raise ValueError(f'{type(self).__name__}: feat_branch must be one of {BRANCHES}, got '
                             f'{feat_branch!r}')
        self.feat_branch = feat_branch
        self.backbone_checkpoint = backbone_checkpoint
        self._teacher_args = dict(
            momentum=self.default_teacher_momentum if teacher_momentum is None
            else teacher_momentum,
            end_momentum=self.default_end_teacher_momentum if end_teacher_momentum is None
            else end_teacher_momentum,
            buffers=teacher_buffers or self.default_teacher_buffers)

    def _build_teacher(self) -> None:
        """The EMA teacher of :meth:`student_modules` (called by the metaclass after
        ``__init__``)."""
        self.teacher = EMATeacher(self.student_modules(), **self._teacher_args)

    def set_teacher_schedule(self, total_steps: int) -> None:
        """Give the teacher's momentum schedule its length: the number of training steps (the
        runner's ``max_iters``; ``TeacherScheduleHook`` calls this before training)."""
        self.teacher.set_schedule_length(total_steps)

    # -- the training step -------------------------------------------------------------------
    def loss(self, inputs: List[Tensor], data_samples: List[DataSample]) -> Dict[str, Any]:
        """One training step's losses (final: subclasses implement its parts, see above)."""
        batch = self.unpack(inputs, data_samples)
        self.check_views(batch.views)
        self.teacher.update(self.student_modules())
        with torch.no_grad():
            teacher = self.encode_teacher(batch)
        student = self.encode_student(batch)
        return self.compute_losses(student, teacher, batch)

    def unpack(self, inputs: List[Tensor], data_samples: List[DataSample]) -> TrainingBatch:
        """The batch as the encoders and losses read it (default: the views as packed)."""
        return TrainingBatch(inputs, data_samples)

    def view_bounds(self) -> Tuple[int, Optional[int]]:
        """The fewest and the most views per image (``batch.views``) the step accepts; the
        most is ``None`` for no limit. Default: at least two."""
        return 2, None

    def check_views(self, views: List[Tensor]) -> None:
        """Refuse a view count outside :meth:`view_bounds`, naming the count and the bound."""
        fewest, most = self.view_bounds()
        if fewest <= len(views) and (most is None or len(views) <= most):
            return
        if fewest == most:
            needed = f'exactly {fewest}'
        elif most is None:
            needed = f'at least {fewest}'
        else:
            needed = f'{fewest} to {most}'
        raise ValueError(f'{type(self).__name__} needs {needed} views per image, got '
                         f'{len(views)}: {self.view_hint}')

    def encode_teacher(self, batch: TrainingBatch) -> Any:
        """The teacher branch's outputs (run under ``torch.no_grad()``)."""
        raise NotImplementedError

    def encode_student(self, batch: TrainingBatch) -> Any:
        """The student branch's outputs."""
        raise NotImplementedError

    def compute_losses(self, student: Any, teacher: Any, batch: TrainingBatch) -> Dict[str, Any]:
        """The method's losses (``loss*`` entries are summed) and logged values."""
        raise NotImplementedError

    def student_modules(self) -> Dict[str, nn.Module]:
        """The modules the teacher tracks, by name."""
        raise NotImplementedError

    # -- constructor checks ------------------------------------------------------------------
    def check_channels(self, name: str, got: int, reference: str,
                       expected: Optional[int]) -> None:
        """Refuse ``name=got`` where it must equal ``reference=expected`` (skipped when
        ``expected`` is None: not known before a forward pass)."""
        if expected is not None and got != expected:
            raise ValueError(f'{type(self).__name__}: {name}={got} does not match '
                             f'{reference}={expected}')

    def backbone_out_channels(self) -> Tuple[str, Optional[int]]:
        """What the backbone's last output's channel count is called and its value, None when
        unknown without a forward pass: ``out_channels`` where the backbone declares it
        (ObjectAwareViT: 2·D), a ViT's ``embed_dims``, a ResNet's last ``out_indices`` stage."""
        for attribute in ('out_channels', 'embed_dims'):
            if hasattr(self.backbone, attribute):
                return f'the backbone {attribute}', getattr(self.backbone, attribute)
        return 'the backbone out_channels', last_output_channels(self.backbone)

    def check_backbone_width(self, name: str, in_channels: int) -> None:
        """Refuse a module input width ``name=in_channels`` other than the backbone's output."""
        self.check_channels(name, in_channels, *self.backbone_out_channels())

    # -- transfer ----------------------------------------------------------------------------
    def transfer_backbone(self) -> nn.Module:
        """The backbone that transfer and dense evaluation use (``feat_branch``)."""
        return self.teacher['backbone'] if self.feat_branch == 'teacher' else self.backbone

    def extract_feat(self, inputs: Tensor) -> Tuple[Tensor]:
        return self.transfer_backbone()(inputs)

    def init_weights(self) -> None:
        super().init_weights()
        if self.backbone_checkpoint is not None:
            self.load_backbone(**self.backbone_checkpoint)

    def backbone_keys_new_to_the_method(self) -> set:
        """Backbone state keys a checkpoint of another method cannot hold (none by default)."""
        return set()

    def load_backbone(self, path: str, prefix: str = 'teacher.module.backbone.') -> None:
        """Initialise the student backbone from the ``prefix`` keys of checkpoint ``path``."""
        checkpoint = CheckpointLoader.load_checkpoint(path, map_location='cpu')
        state = checkpoint.get('state_dict', checkpoint)
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        missing, _ = self.backbone.load_state_dict(state, strict=False)
        missing = [k for k in missing if k not in self.backbone_keys_new_to_the_method()]
        if missing:
            raise KeyError(f'{type(self).__name__} backbone_checkpoint {path!r} (prefix '
                           f'{prefix!r}) lacks {len(missing)} backbone weights, e.g. '
                           f'{missing[:5]}: wrong prefix or architecture')
        MMLogger.get_current_instance().info(
            f'{type(self).__name__}: loaded {len(state)} backbone tensors from {path} (prefix '
            f'{prefix!r})')
