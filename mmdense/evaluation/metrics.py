"""Confusion-matrix segmentation scores (mIoU, pixel accuracy)."""
from typing import Dict, Tuple

import torch
from torch import Tensor


def confusion_matrix(pred: Tensor, target: Tensor, num_pred: int, num_classes: int,
                     ignore_index: int = 255) -> Tuple[Tensor, Tensor]:
    """Counts ``M[c, p]`` of pixels with ground truth ``c`` predicted as ``p``, and ``missed[c]``.

    Pixels whose target is ``ignore_index`` (or outside ``[0, num_classes)``) are skipped;
    predictions outside ``[0, num_pred)`` (e.g. -1, "unmatched") are counted in no column, so
    they are returned as ``missed[c]`` and count as false negatives.
    """
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    valid = (target != ignore_index) & (target >= 0) & (target < num_classes)
    pred, target = pred[valid], target[valid]
    hit = (pred >= 0) & (pred < num_pred)
    counts = torch.bincount(target[hit] * num_pred + pred[hit], minlength=num_classes * num_pred)
    matrix = counts.reshape(num_classes, num_pred)
    missed = torch.bincount(target[~hit], minlength=num_classes)
    return matrix, missed


def scores_from_confusion(matrix: Tensor, missed: Tensor) -> Dict[str, float]:
    """mIoU and pixel accuracy from a square confusion ``matrix (C, C)`` (rows: ground truth) and
    the per-class count of pixels predicted as no class ``missed (C,)`` (see
    :func:`confusion_matrix`).

    ``IoU_c = TP_c / (TP_c + FP_c + FN_c)``, averaged over the classes present in the target or
    the prediction (classes absent from both are undefined and skipped).
    ``pAcc = Σ_c TP_c / #valid pixels``.
    """
    matrix = matrix.double()
    tp = matrix.diag()
    gt_total = matrix.sum(1) + missed.double()
    pred_total = matrix.sum(0)
    union = gt_total + pred_total - tp
    present = union > 0
    iou = tp[present] / union[present]
    num_valid = gt_total.sum()
    return dict(
        mIoU=float(iou.mean()) if present.any() else float('nan'),
        pAcc=float(tp.sum() / num_valid) if num_valid > 0 else float('nan'))


def segmentation_scores(pred: Tensor, target: Tensor, num_classes: int,
                        ignore_index: int = 255) -> Dict[str, float]:
    """mIoU and pixel accuracy of a label map ``pred`` against ``target``
    (:func:`scores_from_confusion` of their :func:`confusion_matrix`)."""
    return scores_from_confusion(
        *confusion_matrix(pred, target, num_classes, num_classes, ignore_index))
