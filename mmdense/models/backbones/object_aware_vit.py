"""CoTAP's object-aware filter: the last ViT block also maps tokens into a space spanned by
learnable object prototypes."""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmpretrain.models.backbones.vision_transformer import TransformerEncoderLayer
from mmpretrain.models.utils import resize_pos_embed
from torch import Tensor, nn

from mmdense.registry import MODELS

from .vit_cp import VisionTransformerCP


def _square_resolution(num_patches: int) -> Tuple[int, int]:
    side = int(round(num_patches**0.5))
    if side * side != num_patches:
        raise ValueError(f'cannot infer the patch grid of {num_patches} patch tokens: pass '
                         'patch_resolution')
    return side, side


@MODELS.register_module()
class ObjectAwareFilterLayer(TransformerEncoderLayer):
    """ViT encoder layer with an object-aware filter (OAF) branch; outputs 2·D channels.

    Besides the usual block output, every token attends over M prototypes, each a k×k kernel
    of D-dim vectors, using this block's own qkv, proj, ln2 and FFN. Per head, a patch query
    is its k×k neighbourhood of queries ``Q_n`` (zero-padded), matched against prototype keys
    ``K_m = qkv_k(ln1(P_m))`` and scaled by ``M^-½``; values are the prototype values averaged
    over the kernel; extra tokens (CLS) attend over the kernel-averaged keys::

        a_nm = softmax_m(<Q_n, K_m> / √M),   f_n = proj(Σ_m a_nm · mean_k V_m)
        filtered = f + FFN(ln2(f)),          out = LN_2D(concat[block(x), filtered])

    Args:
        num_prototypes: M.
        kernel_size: k (odd).
        freeze_prototypes: keep the prototypes out of gradient descent (they still get the
            k-means initialisation of :class:`PrototypeInitHook`).
        Other args: those of mmpretrain's ``TransformerEncoderLayer``.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 feedforward_channels: int,
                 num_prototypes: int = 64,
                 kernel_size: int = 3,
                 freeze_prototypes: bool = False,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 **kwargs) -> None:
        super().__init__(embed_dims, num_heads, feedforward_channels, norm_cfg=norm_cfg,
                         **kwargs)
        if kernel_size % 2 != 1:
            raise ValueError(f'ObjectAwareFilterLayer: kernel_size must be odd, got {kernel_size}')
        self.num_prototypes = num_prototypes
        self.kernel_size = kernel_size
        self.prototypes = nn.Parameter(
            torch.randn(num_prototypes, kernel_size**2, embed_dims) * 0.02,
            requires_grad=not freeze_prototypes)
        self.register_buffer('prototypes_initialised', torch.tensor(False))
        self.out_norm = build_norm_layer(norm_cfg, 2 * embed_dims)[1]

    def _split_heads(self, x: Tensor, part: int) -> Tensor:
        """Rows of ``qkv`` part ``part`` (0 = q, 1 = k, 2 = v) of ``ln1(x)``: (..., H, d_h)."""
        qkv = self.attn.qkv
        dims = self.embed_dims
        bias = None if qkv.bias is None else qkv.bias[part * dims:(part + 1) * dims]
        out = F.linear(self.ln1(x), qkv.weight[part * dims:(part + 1) * dims], bias)
        return out.unflatten(-1, (self.attn.num_heads, self.attn.head_dims))

    def filter_tokens(self, x: Tensor, patch_resolution: Tuple[int, int]) -> Tensor:
        """The filtered tokens (B, N, D) of the block input ``x`` (B, N, D)."""
        batch, num_tokens, _ = x.shape
        height, width = patch_resolution
        num_extra = num_tokens - height * width
        heads, head_dims, kernel = self.attn.num_heads, self.attn.head_dims, self.kernel_size
        scale = self.num_prototypes**-0.5

        queries = self._split_heads(x, 0)  # (B, N, H, d)
        keys = self._split_heads(self.prototypes, 1).permute(2, 0, 1, 3)  # (H, M, k², d)
        values = self._split_heads(self.prototypes, 2).mean(1).transpose(0, 1)  # (H, M, d)

        patch_queries = queries[:, num_extra:].reshape(batch, height, width, -1)
        windows = F.unfold(patch_queries.permute(0, 3, 1, 2), kernel, padding=kernel // 2)
        windows = windows.view(batch, heads, head_dims, kernel**2, height * width)
        patch_logits = torch.einsum('bhdpn,hmpd->bhnm', windows, keys) * scale
        extra_logits = torch.einsum('bnhd,hmd->bhnm', queries[:, :num_extra],
                                    keys.mean(2)) * scale
        attention = torch.cat([extra_logits, patch_logits], dim=2).softmax(dim=-1)
        filtered = torch.einsum('bhnm,hmd->bnhd', attention, values).flatten(2)
        filtered = self.attn.proj(filtered)
        return self.ffn(self.ln2(filtered), identity=filtered)

    @torch.no_grad()
    def cls_attention(self, x: Tensor, patch_resolution: Tuple[int, int]) -> Tensor:
        """Attention of the CLS token over the patches in this block, averaged over heads:
        (B, h, w), summing to at most 1 (the rest goes to the extra tokens)."""
        queries, keys = self._split_heads(x[:, :1], 0), self._split_heads(x, 1)
        logits = torch.einsum('bqhd,bnhd->bhqn', queries, keys) * self.attn.head_dims**-0.5
        attention = logits.softmax(dim=-1).mean(dim=1)[:, 0]
        patches = attention[:, x.shape[1] - patch_resolution[0] * patch_resolution[1]:]
        return patches.reshape(-1, *patch_resolution)

    def forward(self,
                x: Tensor,
                patch_resolution: Optional[Tuple[int, int]] = None,
                final_norm: Optional[nn.Module] = None) -> Tensor:
        """``x`` (B, N, D) → (B, N, 2·D). ``patch_resolution`` defaults to a square grid of
        the last tokens after the CLS token; ``final_norm`` normalises the block output before
        the concatenation (the ViT's final norm)."""
        if patch_resolution is None:
            patch_resolution = _square_resolution(x.shape[1] - 1)
        original = super().forward(x)
        if final_norm is not None:
            original = final_norm(original)
        return self.out_norm(torch.cat([original, self.filter_tokens(x, patch_resolution)], -1))


@MODELS.register_module()
class ObjectAwareViT(VisionTransformerCP):
    """mmpretrain ``VisionTransformer`` whose last block is an :class:`ObjectAwareFilterLayer`.

    Outputs (``cls_token``, ``featmap`` or ``raw``) have 2·D channels: the usual last-layer
    tokens (after the final norm) concatenated with the filtered tokens. Parameter names of the
    plain ViT are unchanged, so a DINO ViT checkpoint loads into it (the filter's
    ``prototypes`` and ``out_norm`` stay to be initialised) and its backbone exports to a plain
    ViT. Only the last layer's output is available.

    Args:
        num_prototypes / prototype_kernel / freeze_prototypes: see
            :class:`ObjectAwareFilterLayer`.
        with_cp: activation checkpointing of every layer, the object-aware one included (see
            :class:`VisionTransformerCP`).
        Other args: those of mmpretrain's ``VisionTransformer``.
    """

    def __init__(self,
                 arch='deit-small',
                 num_prototypes: int = 64,
                 prototype_kernel: int = 3,
                 freeze_prototypes: bool = False,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 qkv_bias: bool = True,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 layer_scale_init_value: float = 0.,
                 out_type: str = 'cls_token',
                 **kwargs) -> None:
        if out_type not in ('cls_token', 'featmap', 'raw'):
            raise ValueError(f"ObjectAwareViT: out_type must be 'cls_token', 'featmap' or "
                             f"'raw', got {out_type!r}")
        out_indices = kwargs.pop('out_indices', -1)
        if out_indices not in (-1, [-1], (-1, )):
            raise ValueError('ObjectAwareViT only outputs its last layer (out_indices=-1), '
                             f'got out_indices={out_indices}')
        super().__init__(arch=arch, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
                         qkv_bias=qkv_bias, norm_cfg=norm_cfg,
                         layer_scale_init_value=layer_scale_init_value, out_type=out_type,
                         **kwargs)
        self.layers[-1] = ObjectAwareFilterLayer(
            embed_dims=self.embed_dims,
            num_heads=self.arch_settings['num_heads'],
            feedforward_channels=self.arch_settings['feedforward_channels'],
            num_prototypes=num_prototypes,
            kernel_size=prototype_kernel,
            freeze_prototypes=freeze_prototypes,
            layer_scale_init_value=layer_scale_init_value,
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
            qkv_bias=qkv_bias,
            norm_cfg=norm_cfg)
        self.out_channels = 2 * self.embed_dims

    @property
    def object_filter(self) -> ObjectAwareFilterLayer:
        return self.layers[-1]

    def last_block_input(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """Tokens (B, N, D) entering the last block for images ``x``, and the patch grid."""
        batch = x.shape[0]
        x, patch_resolution = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(batch, -1, -1), x), dim=1)
        x = x + resize_pos_embed(self.pos_embed, self.patch_resolution, patch_resolution,
                                 mode=self.interpolate_mode,
                                 num_extra_tokens=self.num_extra_tokens)
        x = self.pre_norm(self.drop_after_pos(x))
        for layer in self.layers[:-1]:
            x = self.run_layer(layer, x)
        return x, patch_resolution

    def forward_dense(self, x: Tensor, with_cls_attention: bool = False) -> dict:
        """``cls`` (B, 2D), ``patches`` (B, 2D, h, w) and, if asked, ``cls_attention`` (B, h, w)
        of the last block (no gradient)."""
        tokens, patch_resolution = self.last_block_input(x)
        final_norm = self.ln1 if self.final_norm else None
        out = self.run_layer(self.object_filter, tokens, patch_resolution, final_norm)
        dense = dict(cls=out[:, 0], patches=self._format_featmap(out, patch_resolution))
        if with_cls_attention:
            dense['cls_attention'] = self.object_filter.cls_attention(tokens, patch_resolution)
        return dense

    def _format_featmap(self, tokens: Tensor, patch_resolution: Tuple[int, int]) -> Tensor:
        patches = tokens[:, self.num_extra_tokens:]
        return patches.reshape(tokens.shape[0], *patch_resolution, -1).permute(0, 3, 1, 2)

    def forward(self, x: Tensor) -> Tuple[Tensor]:
        tokens, patch_resolution = self.last_block_input(x)
        final_norm = self.ln1 if self.final_norm else None
        out = self.run_layer(self.object_filter, tokens, patch_resolution, final_norm)
        return (self._format_output(out, patch_resolution), )
