"""Dense feature maps ``(B, C, h, w)`` from mmdense models or bare backbones."""
from contextlib import contextmanager

import torch
from torch import Tensor, nn

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def dense_backbone(model: nn.Module) -> nn.Module:
    """The backbone to evaluate: a teacher–student algorithm's transfer backbone (its
    ``transfer_backbone()``, the branch export also takes), else ``model.backbone``; a model
    without ``backbone`` is taken to be a backbone itself."""
    if hasattr(model, 'transfer_backbone'):
        return model.transfer_backbone()
    return getattr(model, 'backbone', model)


def normalize_images(model: nn.Module, images: Tensor) -> Tensor:
    """``(B, 3, H, W)`` RGB 0-255 → normalised with the model's data preprocessor mean/std
    (ImageNet statistics when the model has none)."""
    preprocessor = getattr(model, 'data_preprocessor', None)
    mean = getattr(preprocessor, 'mean', None)
    std = getattr(preprocessor, 'std', None)
    if mean is None or std is None:
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    return (images.float() - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


@contextmanager
def _patch_token_output(backbone: nn.Module):
    """Make an mmpretrain ViT return patch-token maps (``out_type='featmap'``) for a while."""
    previous = getattr(backbone, 'out_type', None)
    if previous is not None:
        backbone.out_type = 'featmap'
    try:
        yield
    finally:
        if previous is not None:
            backbone.out_type = previous


@torch.no_grad()
def dense_features(model: nn.Module, images: Tensor) -> Tensor:
    """Last-stage dense features ``(B, C, h, w)`` of normalised ``images (B, 3, H, W)``.

    ViT: patch tokens of the last layer (after the final norm) on the patch grid; ResNet: the
    last stage map. The backbone runs in eval mode and its mode is restored afterwards.
    """
    backbone = dense_backbone(model)
    was_training = backbone.training
    backbone.eval()
    try:
        with _patch_token_output(backbone):
            out = backbone(images)
    finally:
        backbone.train(was_training)
    feats = out[-1] if isinstance(out, (tuple, list)) else out
    if feats.dim() != 4:
        raise ValueError(f'expected a (B, C, h, w) feature map from {type(backbone).__name__}, '
                         f'got shape {tuple(feats.shape)}')
    return feats.float()


def extract_features(model: nn.Module, images: Tensor, batch_size: int = 8) -> Tensor:
    """:func:`dense_features` of RGB 0-255 ``images`` in batches, on the model's device, on CPU."""
    device = next(model.parameters()).device
    chunks = [
        dense_features(model, normalize_images(model, batch.to(device))).cpu()
        for batch in images.split(batch_size)
    ]
    return torch.cat(chunks)
