"""Activation checkpointing for mmpretrain's ViT (its ``VisionTransformer`` has no ``with_cp``).

mmpretrain 1.2.0 gives ``with_cp`` to its ResNets but not to ``VisionTransformer`` or
``TransformerEncoderLayer``. :class:`VisionTransformerCP` adds it: with ``with_cp=True`` each
encoder layer runs under :func:`torch.utils.checkpoint.checkpoint` while the model trains with
gradients enabled, so a layer's intermediate activations (attention maps, the 4·D MLP hidden
layer) are recomputed in the backward pass instead of being kept. The outputs and gradients
are those of the plain ViT; only peak memory (down) and step time (up, by roughly one more
forward pass of the layers) change. Teachers running under ``torch.no_grad()`` and models in
eval mode are never checkpointed.

mmdense's own ViTs (:class:`QueryVisionTransformer` for ADCLR, :class:`ObjectAwareViT` for
CoTAP) derive from it and take the same flag. For DINO, whose config uses mmpretrain's
``VisionTransformer``, switch the type::

    model = dict(backbone=dict(type='VisionTransformerCP', with_cp=True))

The parameters and their names are the plain ViT's, so checkpoints load either way.
"""
from typing import Any, Callable, Tuple

import torch
from mmpretrain.models import VisionTransformer
from mmpretrain.models.utils import resize_pos_embed
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from mmdense.registry import MODELS


@MODELS.register_module()
class VisionTransformerCP(VisionTransformer):
    """mmpretrain ``VisionTransformer`` with optional activation checkpointing of its layers.

    Args:
        with_cp: recompute each encoder layer's activations in the backward pass (see the
            module docstring). Default False: exactly mmpretrain's ViT.
        **kwargs: arguments of mmpretrain's ``VisionTransformer``.
    """

    def __init__(self, *args, with_cp: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.with_cp = with_cp

    @property
    def checkpointing(self) -> bool:
        """Whether layers are checkpointed now: ``with_cp``, training and building a graph."""
        return self.with_cp and self.training and torch.is_grad_enabled()

    def run_layer(self, fn: Callable, *args: Any) -> Any:
        """``fn(*args)``, under activation checkpointing when :attr:`checkpointing`.

        Non-reentrant checkpointing with the RNG state preserved, so drop-path and dropout
        draw the same masks in the recomputation as in the forward pass.
        """
        if self.checkpointing:
            return checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=True)
        return fn(*args)

    def embed_image(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """The plain forward up to the first layer: (B, 1 + N, C) tokens and the patch grid."""
        x, patch_resolution = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + resize_pos_embed(self.pos_embed, self.patch_resolution, patch_resolution,
                                 mode=self.interpolate_mode,
                                 num_extra_tokens=self.num_extra_tokens)
        return self.pre_norm(self.drop_after_pos(x)), patch_resolution

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        if not self.checkpointing:
            return super().forward(x)
        x, patch_resolution = self.embed_image(x)
        outs = []
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = self.run_layer(layer, x)
            if i == last and self.final_norm:
                x = self.ln1(x)
            if i in self.out_indices:
                outs.append(self._format_output(x, patch_resolution))
        return tuple(outs)
