"""A plain ViT as a 4-level pyramid backbone for mmdet / mmseg (Mask R-CNN + FPN, UperNet)."""
from typing import Sequence, Tuple

import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmpretrain.models import VisionTransformer
from torch import Tensor

from .keys import convert_keys, VIT_RULES


class ViTPyramid(VisionTransformer):
    """mmpretrain's ``VisionTransformer`` whose outputs of four blocks become a feature pyramid.

    The stride-``p`` token maps of blocks ``out_indices`` (default 3, 5, 7, 11 of a 12-block
    ViT/16) are resampled by ×4 (ConvTranspose(2, 2) → norm → GELU → ConvTranspose(2, 2)),
    ×2 (ConvTranspose(2, 2)), ×1 (identity) and ×½ (MaxPool(2)): strides 4, 8, 16, 32 for a
    16-pixel patch, each with ``embed_dims`` channels (an FPN takes ``[embed_dims] * 4``).

    The ViT keeps mmpretrain's parameter names, so an exported ``mmdet``/``mmpretrain`` file
    loads as it is; ``mmseg``- and ``timm``-layout files are renamed while loading. The adapter
    (``adapter.*``) is new: it is listed in ``new_modules`` and not expected in a checkpoint.

    Args:
        out_indices: the four blocks whose outputs form the pyramid, shallow to deep.
        adapter_norm_cfg: norm of the ×4 branch (``SyncBN`` for distributed training).
        **kwargs: :class:`mmpretrain.models.VisionTransformer` arguments (``out_type`` is
            ``'featmap'``).
    """
    new_modules = ('adapter', )
    scales = (4, 2, 1, 0.5)

    def __init__(self,
                 out_indices: Sequence[int] = (3, 5, 7, 11),
                 adapter_norm_cfg: dict = dict(type='BN'),
                 **kwargs) -> None:
        if len(out_indices) != len(self.scales):
            raise ValueError(f'ViTPyramid needs {len(self.scales)} out_indices (one per scale '
                             f'{self.scales}), got {tuple(out_indices)}')
        if kwargs.setdefault('out_type', 'featmap') != 'featmap':
            raise ValueError(f"ViTPyramid needs out_type='featmap', got {kwargs['out_type']!r}")
        super().__init__(out_indices=list(out_indices), **kwargs)
        dims = self.embed_dims
        self.adapter = nn.ModuleList([
            nn.Sequential(
                nn.ConvTranspose2d(dims, dims, kernel_size=2, stride=2),
                build_norm_layer(adapter_norm_cfg, dims)[1],
                nn.GELU(),
                nn.ConvTranspose2d(dims, dims, kernel_size=2, stride=2)),
            nn.ConvTranspose2d(dims, dims, kernel_size=2, stride=2),
            nn.Identity(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        ])
        self._register_load_state_dict_pre_hook(self._rename_other_layouts)

    @staticmethod
    def _rename_other_layouts(state_dict, prefix, *args, **kwargs) -> None:
        """Rename the ViT keys of an mmseg- or timm-layout checkpoint to mmpretrain's, in place."""
        own = {k[len(prefix):]: k for k in state_dict if k.startswith(prefix)}
        if 'layers.0.attn.attn.in_proj_weight' in own:
            layout = 'mmseg'
        elif 'blocks.0.attn.qkv.weight' in own:
            layout = 'timm'
        else:
            return
        renamed = convert_keys({k: state_dict.pop(full) for k, full in own.items()},
                               VIT_RULES[layout], reverse=True)
        state_dict.update({prefix + k: v for k, v in renamed.items()})

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        features = super().forward(x)
        return tuple(branch(f) for branch, f in zip(self.adapter, features))
