"""What every teacher–student method shares; each algorithm file keeps only what is its paper's."""
from itertools import groupby
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.logging import MMLogger
from mmpretrain.models import BaseSelfSupervisor
from mmpretrain.structures import DataSample
from torch import Tensor

from mmdense.models.utils import EMATeacher

BRANCHES = ('teacher', 'student')


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


class TeacherStudentSelfSupervisor(BaseSelfSupervisor):
    """A self-supervised algorithm with an EMA teacher of some of its student modules.

    Subclasses build their modules, then call :meth:`build_teacher`; they name the modules the
    teacher tracks in :meth:`student_modules`. This base holds:

    * the teacher and its update schedule (:class:`EMATeacher`);
    * the *one* definition of the branch that is transferred (``feat_branch``, defaulting to
      the class's ``default_transfer_branch``): :meth:`transfer_backbone` is what
      :meth:`extract_feat`, the exporter (``mmdense.transfer.checkpoints``) and the dense
      evaluation read;
    * initialising the student backbone from a checkpoint (``backbone_checkpoint``) for every
      method; the teacher copies it at the first update.

    Args:
        feat_branch: ``'teacher'`` or ``'student'``; ``None`` takes the class's default.
        backbone_checkpoint: ``dict(path=..., prefix=...)`` (``prefix`` defaults to the teacher
            backbone of an mmdense checkpoint): every backbone tensor must load, except those
            :meth:`backbone_keys_new_to_the_method` lists.
        **kwargs: :class:`BaseSelfSupervisor` arguments (backbone, neck, head, ...).
    """
    default_transfer_branch = 'teacher'

    def __init__(self,
                 feat_branch: Optional[str] = None,
                 backbone_checkpoint: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        feat_branch = feat_branch or self.default_transfer_branch
        if feat_branch not in BRANCHES:
            raise ValueError(f'{type(self).__name__}: feat_branch must be one of {BRANCHES}, got '
                             f'{feat_branch!r}')
        self.feat_branch = feat_branch
        self.backbone_checkpoint = backbone_checkpoint

    def build_teacher(self, momentum: float, end_momentum: float, buffers: str = 'copy') -> None:
        """The EMA teacher of :meth:`student_modules` (call once they are built)."""
        self.teacher = EMATeacher(self.student_modules(), momentum, end_momentum, buffers)

    def student_modules(self) -> Dict[str, nn.Module]:
        """The modules the teacher tracks, by name."""
        raise NotImplementedError

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
        from mmengine.runner.checkpoint import CheckpointLoader
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
