from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from mmpretrain.structures import DataSample
from torch import Tensor

from mmdense.models.backbones import QueryVisionTransformer
from mmdense.registry import MODELS
from .base import view_geometry
from .dino import DINO, embed_views
from .ibot import MaskedBatch, view_masks

QUERY_TARGETS = ('patch_tokens', 'cls_token')


@dataclass
class QueryBatch(MaskedBatch):
    """A batch split into its views (``views``: global, then local) and its (B, Q, 3, h, w)
    query crops (``queries``); ``masks`` only with the masked-image term (else None)."""
    queries: Tensor


@MODELS.register_module()
class ADCLR(DINO):
    """ADCLR: patch-level contrasting without patch correspondence (Zhang et al., ICLR 2023).

    DINO plus query crops: random crops of each image (the trailing ``num_queries`` views of
    ``inputs``) are patch-embedded and their tokens appended to each of the student's global
    views, where they read the image tokens but are never read by them
    (:class:`QueryVisionTransformer`), so the DINO term is untouched. The teacher encodes each
    query crop on its own as a small image; what it outputs there is the target of the same
    crop's tokens in every global view of the student. The other views (the leading
    ``num_global_views``, then any local views before the queries) are DINO's views.

    ``L = L_DINO + λ · L_query`` with, for ``query_target='patch_tokens'`` (the authors' public
    code), one target per query token: Q crops of P patches each,

    ``L_query = 1/(V_g·B·Q·P) Σ_{v,b,q,j} H(p_{b,q,j}, s_{v,b,q,j})``,
    ``p_{b,q,j} = softmax((t_{b,q,j} − c_q) / τ_q)``,

    t_{b,q,j}: teacher head output of patch token j of crop q of image b encoded alone;
    s_{v,b,q,j}: student head output of token j of that crop appended to global view v. For
    ``query_target='cls_token'`` (single-token variant) a crop has one target, the head output
    of the teacher's CLS token on the crop, and the student's output for the crop is the head on
    the mean of its P tokens (the token itself for 16 px crops):
    ``L_query = 1/(V_g·B·Q) Σ_{v,b,q} H(p_{b,q}, s_{v,b,q})``.

    ``H(p, s) = −Σ_k p_k log softmax(s / τ_s)_k``; ``c_q`` is the query term's own centre, the
    running mean of the teacher's query outputs (all tokens, all ranks), and τ_q
    (``query_teacher_temp``) its own teacher temperature, warmed up by
    :class:`TeacherTempWarmupHook` with ``attributes=('teacher_temp', 'query_teacher_temp')``.
    The head is shared, so there are no parameters beyond DINO's. Its views are counted
    without the query crops (``view_hint``).

    Query positions (the backbone's ``query_pos_embed``): with ``'global_sincos'`` (the
    authors' script, the default recipe) query token j of crop q appended to global view v
    carries the fixed sin-cos embedding of that cell's place in view v's patch grid, computed
    from the packed ``crop_boxes`` (:meth:`query_positions`), so the same crop has different
    positions in the two global views; with ``'crop'`` it carries the ViT's learned embedding
    of its place within its own crop.

    With ``patch_loss`` (the authors' ViT-B recipe) iBOT's masked-image term is added:
    ``L = L_DINO + λ · L_query + λ_mim · L_mim`` with :class:`iBOTPatchLoss` as in
    :class:`iBOT`: the student's global views are block-masked (the packed ``masks``; the
    query tokens then read the masked views, as in the authors' script), the teacher's are not,
    and the student's patch head outputs at the masked patches match the teacher's.

    Args:
        backbone: :class:`QueryVisionTransformer` config.
        head, loss, **kwargs: as for :class:`DINO`.
        query_target: ``'patch_tokens'`` or ``'cls_token'``, see above.
        query_loss: :class:`DINOLoss` config of the query term (τ_s, centre momentum); a copy of
            ``loss`` by default. It always keeps every (teacher, student view) pair.
        query_loss_weight: λ.
        query_teacher_temp: τ_q.
        patch_loss: :class:`iBOTPatchLoss` config of the masked-image term; None: no term.
        patch_loss_weight: λ_mim.
        teacher_patch_temp: τ_p of the masked-image term (warmed up by the hook like τ_q).
    """

    view_hint = 'the query crops not counted; check the MultiCropWithQueries pipeline'

    def __init__(self,
                 head: dict,
                 loss: dict,
                 query_target: str = 'patch_tokens',
                 query_loss: Optional[dict] = None,
                 query_loss_weight: float = 1.0,
                 query_teacher_temp: float = 0.07,
                 patch_loss: Optional[dict] = None,
                 patch_loss_weight: float = 1.0,
                 teacher_patch_temp: float = 0.07,
                 **kwargs) -> None:
        if query_target not in QUERY_TARGETS:
            raise ValueError(f'ADCLR: query_target={query_target!r} is not one of '
                             f'{QUERY_TARGETS}')
        super().__init__(head=head, loss=loss, **kwargs)
        if not isinstance(self.backbone, QueryVisionTransformer):
            raise TypeError(f'ADCLR needs a QueryVisionTransformer backbone, got '
                            f'{type(self.backbone).__name__}')
        self.query_loss_module = MODELS.build(dict(query_loss or loss, skip_same_view=False))
        head_out = self.loss_module.center.shape[-1]
        self.check_channels('query_loss out_channels', self.query_loss_module.center.shape[-1],
                            'the head out_channels', head_out)
        self.patch_loss_module = None if patch_loss is None else MODELS.build(patch_loss)
        if patch_loss is not None and self.backbone.mask_token is None:
            raise ValueError('ADCLR: patch_loss (the masked-image term) needs the backbone\'s '
                             'mask token (mask_token=True)')
        if patch_loss is not None:
            self.check_channels('patch_loss out_channels',
                                self.patch_loss_module.center.shape[-1], 'the head out_channels',
                                head_out)
        self.patch_loss_weight = patch_loss_weight
        self.teacher_patch_temp = teacher_patch_temp
        self.query_target = query_target
        self.query_loss_weight = query_loss_weight
        self.query_teacher_temp = query_teacher_temp

    @staticmethod
    def split_queries(inputs: List[Tensor],
                      data_samples: List[DataSample]) -> Tuple[List[Tensor], Tensor]:
        """The views and the (B, Q, 3, h, w) query crops, from ``data_samples[0].num_queries``."""
        num_queries = data_samples[0].get('num_queries') if data_samples else None
        if num_queries is None:
            raise KeyError("ADCLR: 'num_queries' is missing from the data samples: use "
                           "MultiCropWithQueries and pack 'num_queries' with PackMultiViewInputs")
        if not 1 <= num_queries < len(inputs):
            raise ValueError(f"ADCLR: 'num_queries'={num_queries} does not leave views among "
                             f'the {len(inputs)} inputs')
        return inputs[:-num_queries], torch.stack(inputs[-num_queries:], dim=1)

    def teacher_query_logits(self, queries: Tensor) -> Tensor:
        """Teacher head outputs on the (B, Q, 3, h, w) query crops, each encoded on its own:
        (1, B·Q·P, K) per patch token, rows ordered (b, q, j), or (1, B·Q, K) per CLS token."""
        crops = queries.flatten(0, 1)
        if self.query_target == 'cls_token':
            return embed_views(self.teacher['backbone'], self.teacher['head'], [crops])
        tokens = self.teacher['backbone'].forward_patch_tokens(crops)
        return self.teacher['head'](tokens).flatten(0, 1)[None]

    def student_query_logits(self, query_tokens: Tensor, num_global: int) -> Tensor:
        """Student head outputs on the (V_g·B, Q, P, C) query tokens of the global views:
        (V_g, B·Q·P, K) per token, or (V_g, B·Q, K) per crop (mean of its P tokens)."""
        if self.query_target == 'cls_token':
            query_tokens = query_tokens.mean(dim=2)
        logits = self.head(query_tokens)
        return logits.view(num_global, -1, logits.shape[-1])

    def query_positions(self, data_samples: List[DataSample], views: List[Tensor],
                        queries: Tensor) -> Optional[Tensor]:
        """(V_g·B, Q, P, C) sin-cos positions of the query cells in each global view's grid,
        rows ordered (v, b) like the global views' batch, for ``query_pos_embed=
        'global_sincos'``; None otherwise. The boxes are the packed ``crop_boxes``: the global
        views lead, the Q queries trail."""
        if self.backbone.query_pos_embed != 'global_sincos':
            return None
        if data_samples[0].get('crop_boxes') is None:
            raise KeyError("ADCLR: 'crop_boxes' is missing from the data samples, and "
                           "query_pos_embed='global_sincos' places the queries with them: pack "
                           "'crop_boxes' with PackMultiViewInputs")
        boxes, _ = view_geometry(data_samples, queries.device)
        patch_h, patch_w = self.backbone.patch_embed.projection.stride
        global_grid = (views[0].shape[-2] // patch_h, views[0].shape[-1] // patch_w)
        query_grid = (queries.shape[-2] // patch_h, queries.shape[-1] // patch_w)
        num_global, num_queries = self.num_global_views, queries.shape[1]
        global_boxes = boxes[:, :num_global].transpose(0, 1)[:, :, None]  # (V_g, B, 1, 4)
        query_boxes = boxes[:, -num_queries:][None]  # (1, B, Q, 4)
        positions = self.backbone.query_positions(global_boxes, query_boxes.expand(
            num_global, -1, -1, -1), global_grid, query_grid)  # (V_g, B, Q, P, C)
        return positions.flatten(0, 1)

    def unpack(self, inputs: List[Tensor], data_samples: List[DataSample]) -> QueryBatch:
        views, queries = self.split_queries(inputs, data_samples)
        masks = None if self.patch_loss_module is None else view_masks(
            data_samples, self.num_global_views, queries.device)
        return QueryBatch(views, data_samples, masks, queries)

    def encode_teacher(self, batch: QueryBatch) -> dict:
        """``cls`` (V_g, B, K) of the global views, ``query`` the targets of the query crops
        (:meth:`teacher_query_logits`) and, with the masked-image term, ``tokens`` (V_g, B,
        1 + N, K) of every token of the global views."""
        global_views = batch.views[:self.num_global_views]
        outputs = {}
        if self.patch_loss_module is None:
            outputs['cls'] = embed_views(self.teacher['backbone'], self.teacher['head'],
                                         global_views)
        else:
            tokens = self.teacher['head'](
                self.teacher['backbone'].forward_all_tokens(torch.cat(global_views)))
            outputs['tokens'] = tokens.view(len(global_views), -1, *tokens.shape[1:])
            outputs['cls'] = outputs['tokens'][:, :, 0]
        outputs['query'] = self.teacher_query_logits(batch.queries)
        return outputs

    def encode_student(self, batch: QueryBatch) -> dict:
        """``cls`` (V, B, K) of every view (the global ones with the query crops appended),
        ``query`` the outputs of the query tokens (:meth:`student_query_logits`) and, with the
        masked-image term, ``tokens`` (V_g, B, 1 + N, K) of the masked global views."""
        num_global = self.num_global_views
        views, queries, masks = batch.views, batch.queries, batch.masks
        global_feats, query_tokens = self.backbone.forward_with_queries(
            torch.cat(views[:num_global]), queries.repeat(num_global, 1, 1, 1, 1),
            self.query_positions(batch.data_samples, views, queries),
            mask=None if masks is None else masks.flatten(0, 1), image_tokens=masks is not None)
        outputs = dict(query=self.student_query_logits(query_tokens, num_global))
        if masks is None:
            cls = self.head(global_feats[-1]).view(num_global, queries.shape[0], -1)
        else:
            tokens = self.head(global_feats)
            outputs['tokens'] = tokens.view(num_global, queries.shape[0], *tokens.shape[1:])
            cls = outputs['tokens'][:, :, 0]
        if len(views) > num_global:
            cls = torch.cat([cls, embed_views(self.backbone, self.head, views[num_global:])])
        outputs['cls'] = cls
        return outputs

    def compute_losses(self, student: dict, teacher: dict, batch: QueryBatch) -> dict:
        loss_dino = self.loss_module(student['cls'], teacher['cls'], self.teacher_temp)
        loss_query = self.query_loss_module(student['query'], teacher['query'],
                                            self.query_teacher_temp)
        losses = dict(loss_dino=loss_dino, loss_query=self.query_loss_weight * loss_query)
        if batch.masks is not None:
            losses['loss_mim'] = self.patch_loss_weight * self.patch_loss_module(
                student['tokens'][:, :, 1:], teacher['tokens'][:, :, 1:], batch.masks,
                self.teacher_patch_temp)
        return losses
