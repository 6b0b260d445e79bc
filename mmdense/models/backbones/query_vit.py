"""A ViT that can carry query tokens which read the image but are never read by it."""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from mmcv.cnn.bricks.transformer import FFN
from mmpretrain.models.utils import resize_pos_embed
from torch import Tensor

from mmdense.registry import MODELS

from .vit_cp import VisionTransformerCP


@MODELS.register_module()
class QueryVisionTransformer(VisionTransformerCP):
    """mmpretrain ``VisionTransformer`` that can append query tokens to the image tokens.

    :meth:`forward` is the plain ViT. :meth:`forward_with_queries` also patch-embeds query crops
    with the same embedding and runs their tokens through the same layers, under one-way
    attention. With N image tokens (CLS + patches) and Q query crops of P patches each, the
    attention mask M (row: the attending token, column: the attended one) is::

                     image (N)   query crop 1 (P) ... query crop Q (P)
        image (N)    all         none                 none
        crop q (P)   all         all if query_attend_queries, else own crop only

    so image tokens never see query tokens, and query tokens see every image token and, with
    ``query_attend_queries``, every query token of every crop (the authors' public code), or
    else only the P tokens of their own crop. The two token streams go through the per-token
    operations (norms, projections, MLPs) separately, so the image stream is the plain ViT
    operation for operation and its outputs are bit-identical with or without queries. Each
    drop-path draw is shared by both streams of a sample, as if they were one sequence. No
    parameters are added; checkpoints load into a plain ``VisionTransformer``.

    Args:
        query_attend_queries: let query tokens attend to the tokens of the other crops.
        query_pos_embed: add to each query token the positional embedding of its place within
            its query crop (the ViT's embedding resized to the crop's patch grid, as when the
            crop is encoded on its own); without it query tokens carry no position.
        **kwargs: arguments of mmpretrain's ``VisionTransformer``, and ``with_cp`` (activation
            checkpointing of each layer, for both token streams; see
            :class:`VisionTransformerCP`).
    """

    def __init__(self,
                 query_attend_queries: bool = False,
                 query_pos_embed: bool = False,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.query_attend_queries = query_attend_queries
        self.query_pos_embed = query_pos_embed
        for i, layer in enumerate(self.layers):
            if not isinstance(layer.ffn, FFN) or not layer.ffn.add_identity or \
                    layer.attn.v_shortcut:
                raise ValueError(f'{type(self).__name__}: layer {i} is not a standard pre-norm '
                                 'encoder layer (mmcv FFN with identity, no v_shortcut)')

    def forward_with_queries(self, x: Tensor, queries: Tensor) -> Tuple[Tuple[Tensor, ...], Tensor]:
        """Images with the tokens of their query crops appended.

        Args:
            x: (B, 3, H, W) images.
            queries: (B, Q, 3, h, w) query crops of each image, h and w multiples of the patch
                size: each crop becomes P = h·w / patch² tokens, in row-major patch order.

        Returns:
            ``(outs, query_tokens)``: ``outs`` is exactly ``self.forward(x)``; ``query_tokens``
            (B, Q, P, C) are the query tokens after the last layer (and the final norm).
        """
        if queries.dim() != 5 or queries.shape[0] != x.shape[0] or queries.shape[1] == 0:
            raise ValueError(f'{type(self).__name__}: queries must be (B, Q, 3, h, w) with '
                             f'B={x.shape[0]} and Q >= 1, got {tuple(queries.shape)}')
        patch_size = self.patch_embed.projection.stride
        if queries.shape[-2] % patch_size[0] or queries.shape[-1] % patch_size[1]:
            raise ValueError(f'{type(self).__name__}: query crops of {tuple(queries.shape[-2:])} '
                             f'px are not a multiple of the patch size {tuple(patch_size)}')
        batch_size, num_queries = queries.shape[:2]
        image, patch_resolution = self.embed_image(x)
        query = self.embed_queries(queries.flatten(0, 1)).reshape(batch_size, -1, self.embed_dims)
        query_mask = self.query_attention_mask(num_queries, query.shape[1] // num_queries,
                                               image.shape[1], x.device)

        outs = []
        for i, layer in enumerate(self.layers):
            image, query = self.run_layer(self.layer_with_queries, layer, image, query,
                                          query_mask)
            if i == len(self.layers) - 1 and self.final_norm:
                image, query = self.ln1(image), self.ln1(query)
            if i in self.out_indices:
                outs.append(self._format_output(image, patch_resolution))
        return tuple(outs), query.reshape(batch_size, num_queries, -1, self.embed_dims)

    def forward_patch_tokens(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) images → (B, h·w, C) patch tokens after the last layer and the final
        norm: the plain forward's output tokens without the CLS token, in row-major order."""
        tokens, _ = self.embed_image(x)
        for layer in self.layers:
            tokens = self.run_layer(layer, tokens)
        if self.final_norm:
            tokens = self.ln1(tokens)
        return tokens[:, self.num_extra_tokens:]

    def embed_queries(self, crops: Tensor) -> Tensor:
        """(n, 3, h, w) query crops → (n, P, C) tokens: patch embedding, optionally plus the
        positional embedding of each patch's place in its crop (no CLS token)."""
        tokens, grid = self.patch_embed(crops)
        if self.query_pos_embed:
            pos_embed = resize_pos_embed(self.pos_embed, self.patch_resolution, grid,
                                         mode=self.interpolate_mode,
                                         num_extra_tokens=self.num_extra_tokens)
            tokens = tokens + pos_embed[:, self.num_extra_tokens:]
        return self.pre_norm(self.drop_after_pos(tokens))

    def query_attention_mask(self, num_queries: int, tokens_per_query: int, num_image_tokens: int,
                             device: torch.device) -> Optional[Tensor]:
        """The query rows of the mask M in the class docstring: (Q·P, N + Q·P) bool, True where
        a query token may attend; None where it may attend everywhere."""
        if self.query_attend_queries:
            return None
        query_ids = torch.arange(num_queries, device=device).repeat_interleave(tokens_per_query)
        sees_image = torch.ones(len(query_ids), num_image_tokens, dtype=torch.bool, device=device)
        return torch.cat([sees_image, query_ids[:, None] == query_ids[None, :]], dim=1)

    @staticmethod
    def layer_with_queries(layer: nn.Module, image: Tensor, query: Tensor,
                           query_mask: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """One mmpretrain ``TransformerEncoderLayer`` on both token streams.

        Image tokens get ``x + attn(ln1(x))`` then ``x + ffn(ln2(x))`` exactly as in the layer's
        own forward; query tokens use the same weights, with keys and values ``[image; query]``.
        """
        attn, ffn = layer.attn, layer.ffn
        image_q, image_k, image_v = _split_heads(attn, layer.ln1(image))
        query_q, query_k, query_v = _split_heads(attn, layer.ln1(query))
        dropout_p = attn.attn_drop if attn.training else 0.
        attended = [
            attn.scaled_dot_product_attention(image_q, image_k, image_v, dropout_p=dropout_p),
            attn.scaled_dot_product_attention(query_q, torch.cat([image_k, query_k], dim=2),
                                              torch.cat([image_v, query_v], dim=2),
                                              attn_mask=query_mask, dropout_p=dropout_p)
        ]
        image, query = _add_residual(attn.out_drop, image, query, [
            attn.gamma1(attn.proj_drop(attn.proj(_merge_heads(a)))) for a in attended])
        return _add_residual(ffn.dropout_layer, image, query, [
            ffn.gamma2(ffn.layers(layer.ln2(tokens))) for tokens in (image, query)])


def _split_heads(attn: nn.Module, x: Tensor) -> List[Tensor]:
    """(B, N, C) → q, k, v of shape (B, heads, N, C / heads), as mmpretrain's attention."""
    batch_size, num_tokens, _ = x.shape
    qkv = attn.qkv(x).reshape(batch_size, num_tokens, 3, attn.num_heads, attn.head_dims)
    return list(qkv.permute(2, 0, 3, 1, 4))


def _merge_heads(x: Tensor) -> Tensor:
    """(B, heads, N, d) → (B, N, heads·d)."""
    batch_size, _, num_tokens, _ = x.shape
    return x.transpose(1, 2).reshape(batch_size, num_tokens, -1)


def _add_residual(drop_path: nn.Module, image: Tensor, query: Tensor,
                  branches: List[Tensor]) -> Tuple[Tensor, Tensor]:
    """``x + drop_path(branch)`` for both streams, with one drop-path draw per sample."""
    dropped = drop_path(torch.cat(branches, dim=1))
    return image + dropped[:, :image.shape[1]], query + dropped[:, image.shape[1]:]
