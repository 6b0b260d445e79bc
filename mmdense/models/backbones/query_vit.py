"""A ViT that can carry query tokens which read the image but are never read by it, and whose
patch tokens can be masked (iBOT's masked-image term)."""
from typing import List, Optional, Tuple, Union

import torch
import torch.nn as nn
from mmcv.cnn.bricks.transformer import FFN
from mmpretrain.models.utils import resize_pos_embed
from torch import Tensor

from mmdense.registry import MODELS

from .vit_cp import VisionTransformerCP

QUERY_POSITIONS = ('crop', 'global_sincos')


def sincos_2d(x: Tensor, y: Tensor, dims: int) -> Tensor:
    """The fixed 2-D sin-cos embedding of positions (x, y), as the ADCLR authors' (and MAE's)
    ``get_2d_sincos_pos_embed_from_grid`` lays it out: for ``x``, ``y`` of any shape (...),

    ``e(x, y) = [sin(x·ω), cos(x·ω), sin(y·ω), cos(y·ω)]`` of shape (..., dims), with
    ``ω_d = 10000^(−d / (dims/4))``, d = 0 … dims/4 − 1 (x: the column, y: the row, in patches).
    """
    if dims % 4:
        raise ValueError(f'sincos_2d: dims={dims} is not a multiple of 4')
    omega = 10000.0 ** -(torch.arange(dims // 4, dtype=torch.float64, device=x.device) /
                         (dims // 4))
    angles = [(coord.double()[..., None] * omega) for coord in (x, y)]
    return torch.cat([f(a) for a in angles for f in (torch.sin, torch.cos)], dim=-1).float()


def query_cells_in_global_grid(global_boxes: Tensor, query_boxes: Tensor,
                               global_grid: Tuple[int, int],
                               query_grid: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """Where the patch cells of query crops lie in the patch grid of a global view, as the ADCLR
    authors' ``DataAugmentation.calculate_sin_cos`` places them.

    A global crop box (gx1, gy1, gx2, gy2) is cut into G_h × G_w cells of width
    ``c_x = (gx2 − gx1) / G_w`` (original-image pixels; height ``c_y`` likewise); a query crop
    box (qx1, qy1, qx2, qy2) into L_h × L_w cells. Cell (i, j) of the query crop (row i, column
    j) is at ``x_j = (qx1 − gx1) / c_x + j · (qx2 − qx1) / (L_w · c_x)`` and
    ``y_i = (qy1 − gy1) / c_y + i · (qy2 − qy1) / (L_h · c_y)``: the top-left corner of the
    cell in global cells, so a query crop equal to the global crop has exactly the global grid's
    positions 0 … G − 1. Horizontal flips are not taken into account (the authors' positions
    refer to the unflipped crops).

    Args:
        global_boxes: (..., 4) boxes of the global crops, in original-image pixels.
        query_boxes: (..., 4) boxes of the query crops, same leading shape.
        global_grid / query_grid: (G_h, G_w) and (L_h, L_w) patch grids.

    Returns:
        x, y: (..., L_h·L_w) each, cells in row-major order.
    """
    cell_w = (global_boxes[..., 2] - global_boxes[..., 0]) / global_grid[1]
    cell_h = (global_boxes[..., 3] - global_boxes[..., 1]) / global_grid[0]
    step_x = (query_boxes[..., 2] - query_boxes[..., 0]) / (query_grid[1] * cell_w)
    step_y = (query_boxes[..., 3] - query_boxes[..., 1]) / (query_grid[0] * cell_h)
    start_x = (query_boxes[..., 0] - global_boxes[..., 0]) / cell_w
    start_y = (query_boxes[..., 1] - global_boxes[..., 1]) / cell_h
    cols = torch.arange(query_grid[1], device=query_boxes.device).repeat(query_grid[0])
    rows = torch.arange(query_grid[0], device=query_boxes.device).repeat_interleave(query_grid[1])
    return (start_x[..., None] + cols * step_x[..., None],
            start_y[..., None] + rows * step_y[..., None])


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
    parameters are added (but the optional mask token); checkpoints load into a plain
    ``VisionTransformer``.

    Positions. With ``sincos_pos_embed`` the image tokens' positional embedding is the fixed
    2-D sin-cos embedding :func:`sincos_2d` of each patch's (column, row) on the native grid
    (``img_size / patch_size``), the CLS token's zero, and it is not trained: the ADCLR authors'
    ``PosVisionTransformer``. Query tokens get, by ``query_pos_embed``:

    * ``'global_sincos'``: the sin-cos embedding of their cell's place in the global view's
      patch grid (:func:`query_cells_in_global_grid`), handed in by the caller because it
      depends on the crop boxes: the authors' script;
    * ``'crop'``: the ViT's embedding resized to the crop's own patch grid, as when the crop is
      encoded on its own (``True`` is an old spelling of it);
    * ``None`` (or ``False``): no position.

    Masking. With ``mask_token`` the backbone holds a learned token (zeros at first, as in
    iBOT) that replaces the patch embedding of every masked patch before the positional
    embedding is added (:meth:`forward_all_tokens`, :meth:`forward_with_queries`).

    Args:
        query_attend_queries: let query tokens attend to the tokens of the other crops.
        query_pos_embed: ``'global_sincos'``, ``'crop'`` or ``None``, see above.
        sincos_pos_embed: fixed sin-cos positional embedding of the image tokens, see above.
        mask_token: hold the learned mask token.
        **kwargs: arguments of mmpretrain's ``VisionTransformer``, and ``with_cp`` (activation
            checkpointing of each layer, for both token streams; see
            :class:`VisionTransformerCP`).
    """

    def __init__(self,
                 query_attend_queries: bool = False,
                 query_pos_embed: Union[str, bool, None] = None,
                 sincos_pos_embed: bool = False,
                 mask_token: bool = False,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.query_attend_queries = query_attend_queries
        query_pos_embed = {False: None, True: 'crop'}.get(query_pos_embed, query_pos_embed)
        if query_pos_embed is not None and query_pos_embed not in QUERY_POSITIONS:
            raise ValueError(f'{type(self).__name__}: query_pos_embed={query_pos_embed!r} is not '
                             f'one of {QUERY_POSITIONS} or None')
        self.query_pos_embed = query_pos_embed
        self.sincos_pos_embed = sincos_pos_embed
        if sincos_pos_embed:
            if self.pos_embed.shape[-1] % 4:
                raise ValueError(f'{type(self).__name__}: sincos_pos_embed needs embed_dims '
                                 f'divisible by 4, got {self.pos_embed.shape[-1]}')
            self.pos_embed.requires_grad_(False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims)) if mask_token else None
        for i, layer in enumerate(self.layers):
            if not isinstance(layer.ffn, FFN) or not layer.ffn.add_identity or \
                    layer.attn.v_shortcut:
                raise ValueError(f'{type(self).__name__}: layer {i} is not a standard pre-norm '
                                 'encoder layer (mmcv FFN with identity, no v_shortcut)')

    def init_weights(self) -> None:
        super().init_weights()
        if self.sincos_pos_embed:
            grid_h, grid_w = self.patch_resolution
            rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing='ij')
            patches = sincos_2d(cols.flatten(), rows.flatten(), self.embed_dims)
            extra = patches.new_zeros(self.num_extra_tokens, self.embed_dims)
            with torch.no_grad():
                self.pos_embed.copy_(torch.cat([extra, patches])[None])

    def embed_image(self, x: Tensor,
                    mask: Optional[Tensor] = None) -> Tuple[Tensor, Tuple[int, int]]:
        """(B, 1 + N, C) input tokens and the patch grid; with ``mask`` (B, h, w) bool, the
        masked patches' embeddings replaced by the mask token (before the positions are added)."""
        if mask is None:
            return super().embed_image(x)
        if self.mask_token is None:
            raise ValueError(f'{type(self).__name__}: a mask was given but the backbone has no '
                             'mask token (mask_token=True)')
        tokens, patch_resolution = self.patch_embed(x)
        if mask.shape != (x.shape[0], *patch_resolution):
            raise ValueError(f'{type(self).__name__}: mask of shape {tuple(mask.shape)} does not '
                             f'match the {x.shape[0]} images of {patch_resolution} patches')
        tokens = torch.where(mask.flatten(1)[..., None], self.mask_token.to(tokens.dtype), tokens)
        if self.cls_token is not None:
            tokens = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), tokens), dim=1)
        tokens = tokens + resize_pos_embed(self.pos_embed, self.patch_resolution,
                                           patch_resolution, mode=self.interpolate_mode,
                                           num_extra_tokens=self.num_extra_tokens)
        return self.pre_norm(self.drop_after_pos(tokens)), patch_resolution

    def forward_all_tokens(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """(B, 3, H, W) images (with an optional (B, h, w) bool patch ``mask``) → (B, 1 + h·w, C)
        tokens after the last layer and the final norm: the CLS token, then the patch tokens in
        row-major order."""
        tokens, _ = self.embed_image(x, mask)
        for layer in self.layers:
            tokens = self.run_layer(layer, tokens)
        return self.ln1(tokens) if self.final_norm else tokens

    def forward_with_queries(self, x: Tensor, queries: Tensor,
                             query_pos: Optional[Tensor] = None,
                             mask: Optional[Tensor] = None,
                             image_tokens: bool = False) -> Tuple[Tuple[Tensor, ...], Tensor]:
        """Images with the tokens of their query crops appended.

        Args:
            x: (B, 3, H, W) images.
            queries: (B, Q, 3, h, w) query crops of each image, h and w multiples of the patch
                size: each crop becomes P = h·w / patch² tokens, in row-major patch order.
            query_pos: (B, Q, P, C) positional embeddings of the query tokens, required with
                ``query_pos_embed='global_sincos'`` (and only then).
            mask: optional (B, H/patch, W/patch) bool mask of the images' patches (mask token).
            image_tokens: return the image tokens after the last layer (and the final norm),
                (B, 1 + N, C), in place of ``outs``.

        Returns:
            ``(outs, query_tokens)``: ``outs`` is exactly ``self.forward(x)`` (with ``mask``: on
            the masked images); ``query_tokens`` (B, Q, P, C) are the query tokens after the
            last layer (and the final norm).
        """
        if queries.dim() != 5 or queries.shape[0] != x.shape[0] or queries.shape[1] == 0:
            raise ValueError(f'{type(self).__name__}: queries must be (B, Q, 3, h, w) with '
                             f'B={x.shape[0]} and Q >= 1, got {tuple(queries.shape)}')
        patch_size = self.patch_embed.projection.stride
        if queries.shape[-2] % patch_size[0] or queries.shape[-1] % patch_size[1]:
            raise ValueError(f'{type(self).__name__}: query crops of {tuple(queries.shape[-2:])} '
                             f'px are not a multiple of the patch size {tuple(patch_size)}')
        batch_size, num_queries = queries.shape[:2]
        if (query_pos is None) == (self.query_pos_embed == 'global_sincos'):
            raise ValueError(f'{type(self).__name__}: query_pos must be given exactly when '
                             f"query_pos_embed='global_sincos' (it is {self.query_pos_embed!r})")
        image, patch_resolution = self.embed_image(x, mask)
        query = self.embed_queries(queries.flatten(0, 1),
                                   None if query_pos is None else query_pos.flatten(0, 1))
        query = query.reshape(batch_size, -1, self.embed_dims)
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
        query = query.reshape(batch_size, num_queries, -1, self.embed_dims)
        return (image if image_tokens else tuple(outs)), query

    def forward_patch_tokens(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) images → (B, h·w, C) patch tokens after the last layer and the final
        norm: the plain forward's output tokens without the CLS token, in row-major order."""
        return self.forward_all_tokens(x)[:, self.num_extra_tokens:]

    def query_positions(self, global_boxes: Tensor, query_boxes: Tensor,
                        global_grid: Tuple[int, int], query_grid: Tuple[int, int]) -> Tensor:
        """(..., P, C) fixed sin-cos embeddings of the query cells' places in the global view
        (``query_pos_embed='global_sincos'``), for (..., 4) global and query crop boxes."""
        x, y = query_cells_in_global_grid(global_boxes, query_boxes, global_grid, query_grid)
        return sincos_2d(x, y, self.embed_dims)

    def embed_queries(self, crops: Tensor, query_pos: Optional[Tensor] = None) -> Tensor:
        """(n, 3, h, w) query crops → (n, P, C) tokens: patch embedding plus the query
        positions of ``query_pos_embed`` (``query_pos`` (n, P, C) for ``'global_sincos'``; no
        CLS token)."""
        tokens, grid = self.patch_embed(crops)
        if query_pos is not None:
            tokens = tokens + query_pos.to(tokens.dtype)
        elif self.query_pos_embed == 'crop':
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
