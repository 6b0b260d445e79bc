"""Continuous-target AP (CoTAP) ranking loss (Wen et al., "Semantic Concentration for
Self-Supervised Dense Representations Learning", TPAMI 2025): the functional core
:func:`cotap_loss` and the module :class:`ContinuousAPLoss` that configs build."""
from typing import Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from mmdense.registry import MODELS
from mmdense.utils.dist import all_reduce_sum, get_world_size
from .precision import fp32_forward


def smooth_hinge(x: Tensor, margin: float) -> Tensor:
    """Smooth squared hinge with margin τ, 0 once ``x ≥ τ`` and linear below 0:

    ``ℓ_τ(x) = (min(x, τ)/τ − 1)²`` if ``x ≥ 0``, else ``1 − 2x/τ`` (C¹ at 0).
    """
    return torch.where(x >= 0, (x.clamp(max=margin) / margin - 1)**2, 1 - 2 * x / margin)


def _precision_losses(pred: Tensor, target: Tensor, rows: slice, margin: float,
                      eps: float) -> Tensor:
    """``FP_i / (FP_i + TP_i)`` (up to ``eps``) for the items ``rows`` of each list: (..., c)."""
    pred_i, target_i = pred[..., rows, None], target[..., rows, None]
    pred_j, target_j = pred[..., None, :], target[..., None, :]
    false_pos = ((target_i - target_j).clamp(min=0) * smooth_hinge(pred_i - pred_j, margin)).sum(-1)
    with torch.no_grad():
        true_pos = ((target_j >= target_i) & (pred_j.detach() >= pred_i.detach())).sum(-1)
    ratio = false_pos / (true_pos + eps)
    return ratio / (1 + ratio)


@fp32_forward
def similarity_lists(anchors: Tensor, candidates: Sequence[Tensor]) -> Tensor:
    """The lists that :func:`cotap_loss` ranks: every anchor against every candidate, the
    candidate sets side by side, ``S[b, i, Σ_{j<c} m_j + m] = a[b, i] · x_c[b, m]`` (cosine
    similarities for unit vectors), in fp32 under autocast (a bf16 product would move every
    similarity by up to 2⁻⁸, a few percent of a margin τ = 0.1).

    Args:
        anchors: (B, n, K).
        candidates: (B, m_c, K) each.

    Returns:
        (B, n, Σ_c m_c).
    """
    return torch.cat([anchors @ others.transpose(1, 2) for others in candidates], dim=2)


def _check_hyper_parameters(owner: str, margin: float, chunk_size: Optional[int],
                            eps: float) -> None:
    """Refuse a margin τ ≤ 0, a chunk size < 1 or an eps ≤ 0, naming ``owner`` and the value."""
    if margin <= 0:
        raise ValueError(f'{owner}: margin must be positive, got {margin}')
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f'{owner}: chunk_size must be None or at least 1, got {chunk_size}')
    if eps <= 0:
        raise ValueError(f'{owner}: eps must be positive, got {eps}')


@fp32_forward
def cotap_loss(pred: Tensor,
               target: Tensor,
               margin: float = 0.1,
               threshold: float = 0.0,
               item_scale: Optional[Tensor] = None,
               chunk_size: Optional[int] = None,
               eps: float = 1e-5) -> Tensor:
    """Continuous-target AP loss over lists of items ranked by prediction.

    For every list (the last dim), with continuous targets ``t`` and predictions ``p``::

        FP_i = Σ_j max(t_i − t_j, 0) · ℓ_τ(p_i − p_j)          (carries the gradient)
        TP_i = Σ_j 1[t_j ≥ t_i] · 1[p_j ≥ p_i]                (no gradient; j = i counts)
        r_i = FP_i / (TP_i + eps),   loss_i = r_i / (1 + r_i)    (≈ 1 − precision at i)
        w_i = max(t_i − θ, 0) · s_i
        L = Σ_i w_i · loss_i / Σ_i w_i                           (sums over all lists)

    In a distributed run (every rank must call it) the denominator is the mean over ranks of
    ``Σ_i w_i``, so the mean of the per-rank losses, as DDP takes of the gradients, is the loss
    of the whole batch.

    ``loss_i`` is 0 once every item with a lower target is ranked at least ``τ`` below item i.

    Args:
        pred: (..., n) predictions p, e.g. student similarities.
        target: (..., n) targets t in [-1, 1], e.g. teacher similarities; no gradient.
        margin: τ of :func:`smooth_hinge`.
        threshold: θ; items with targets at or below it get no weight as anchors.
        item_scale: (..., n) multipliers s of the weights (e.g. α for negatives); default 1.
        chunk_size: items per chunk of the (..., c, n) pairwise terms; None computes all n at
            once (memory O(n²) per list either way, O(c·n) per chunk).
        eps: keeps ``r_i`` finite.

    Returns:
        Scalar loss; 0 (with a graph) when no item of any rank has positive weight.
    """
    if pred.shape != target.shape:
        raise ValueError(f'cotap_loss: pred {tuple(pred.shape)} and target '
                         f'{tuple(target.shape)} must have the same shape')
    _check_hyper_parameters('cotap_loss', margin, chunk_size, eps)
    target = target.detach().to(pred.dtype)
    num_items = pred.shape[-1]
    chunk_size = num_items if chunk_size is None else chunk_size
    losses = torch.cat([
        _precision_losses(pred, target, slice(start, start + chunk_size), margin, eps)
        for start in range(0, num_items, chunk_size)
    ], dim=-1)
    weights = (target - threshold).clamp(min=0)
    if item_scale is not None:
        weights = weights * item_scale.to(weights)
    mean_weight = all_reduce_sum(weights.sum()) / get_world_size()
    # all weights 0 (no target above θ anywhere): the loss is 0, without reading the sum back
    return (weights * losses).sum() / mean_weight.clamp(min=torch.finfo(weights.dtype).tiny)


@MODELS.register_module()
class ContinuousAPLoss(nn.Module):
    """Continuous-target AP (CoTAP) ranking loss with its hyper-parameters.

    Over lists of n items (the last dim) with predictions ``p``, continuous targets ``t`` (no
    gradient) and optional weight multipliers ``s``::

        ℓ_τ(x) = (min(x, τ)/τ − 1)²  if x ≥ 0,   1 − 2x/τ  if x < 0
        FP_i = Σ_j max(t_i − t_j, 0) · ℓ_τ(p_i − p_j)       TP_i = Σ_j 1[t_j ≥ t_i] · 1[p_j ≥ p_i]
        loss_i = r_i / (1 + r_i),   r_i = FP_i / (TP_i + eps)        (≈ 1 − precision at i)
        w_i = max(t_i − θ, 0) · s_i,   L = Σ_i w_i · loss_i / Σ_i w_i   (sums over all lists)

    The denominator is the mean over ranks of ``Σ_i w_i`` in a distributed run (see
    :func:`cotap_loss`, which this module calls).

    Args:
        margin: τ > 0: an item ranked at least τ below every item with a higher target costs
            nothing.
        threshold: θ; items with targets at or below it get no weight as anchors.
        chunk_size: anchors per chunk of the (..., chunk, n) pairwise terms; None computes all
            n at once.
        eps: keeps ``r_i`` finite.
    """

    def __init__(self,
                 margin: float = 0.1,
                 threshold: float = 0.0,
                 chunk_size: Optional[int] = None,
                 eps: float = 1e-5) -> None:
        super().__init__()
        _check_hyper_parameters(type(self).__name__, margin, chunk_size, eps)
        self.margin = margin
        self.threshold = threshold
        self.chunk_size = chunk_size
        self.eps = eps

    def forward(self, pred: Tensor, target: Tensor,
                item_scale: Optional[Tensor] = None) -> Tensor:
        """pred, target and item_scale (default 1): (..., n); returns the scalar loss L."""
        return cotap_loss(pred, target, self.margin, self.threshold, item_scale,
                          self.chunk_size, self.eps)

    def extra_repr(self) -> str:
        return (f'margin={self.margin}, threshold={self.threshold}, '
                f'chunk_size={self.chunk_size}, eps={self.eps}')
