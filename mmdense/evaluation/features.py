"""Model inputs from 0-255 images, and dense feature maps ``(B, C, h, w)`` from mmdense models or
bare backbones.

:func:`model_inputs` is the one way from an image batch to a backbone input outside the runner's
data preprocessor (neighbour mining, dense evaluation, the demo, the visualisers): every caller
names the channel order of its images, and the model's data preprocessor says the order, mean and
std the backbone was trained on.
"""
from contextlib import contextmanager
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn

CHANNEL_ORDERS = ('rgb', 'bgr')
IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB
IMAGENET_STD = (58.395, 57.12, 57.375)  # RGB


class InputNormalization(NamedTuple):
    """What a backbone sees of a 0-255 image: its channels in ``channel_order`` (``'rgb'`` or
    ``'bgr'``), then ``(x - mean) / std`` per channel, ``mean``/``std`` listed in that order
    (``None``: no normalisation)."""
    channel_order: str
    mean: Optional[Tuple[float, ...]]
    std: Optional[Tuple[float, ...]]




def check_channel_order(channel_order: str) -> str:
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f'channel_order must be one of {CHANNEL_ORDERS} (the order of the '
                         f'image channels as given), got {channel_order!r}')
    return channel_order


def _converts_channels(preprocessor: nn.Module) -> Optional[bool]:
    """Whether ``preprocessor`` swaps the first and third channels, or None if it declares
    nothing. The flag's name differs by library: ``_channel_conversion`` (mmengine's
    ``ImgDataPreprocessor``, mmpretrain's ``SelfSupDataPreprocessor``, mmdet's),
    ``channel_conversion`` (mmseg's ``SegDataPreProcessor``), ``to_rgb`` (mmpretrain's
    ``ClsDataPreprocessor``)."""
    for name in ('_channel_conversion', 'channel_conversion', 'to_rgb'):
        if hasattr(preprocessor, name):
            return bool(getattr(preprocessor, name))
    return None


def input_normalization(model: nn.Module) -> InputNormalization:
    """The channel order, mean and std that ``model``'s data preprocessor gives its backbone.

    OpenMMLab pipelines hand the preprocessor BGR images (``mmcv.imread``, and this project's
    ``LoadRGBImage``), so a preprocessor that converts channels (``to_rgb`` / ``bgr_to_rgb``)
    gives the backbone RGB and one that does not gives it BGR; its ``mean``/``std`` are in that
    order, and a preprocessor built without them (``_enable_normalize`` False) does not
    normalise. A model without a normalising or converting preprocessor (a bare backbone, or a
    ``BaseModel`` left with mmengine's ``BaseDataPreprocessor``) is taken to be an ImageNet model:
    RGB, :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD`.
    """
    order, mean, std = _normalization_tensors(model)
    if mean is None:
        return InputNormalization(order, None, None)
    return InputNormalization(order, tuple(mean.tolist()), tuple(std.tolist()))


def model_inputs(model: nn.Module, images: Tensor, *, channel_order: str) -> Tensor:
    """The backbone input for ``images (B, 3, H, W)``, 0-255 (uint8 or float), whose channels
    are in ``channel_order`` (``'rgb'``: PIL, ``DenseEvalDataset``; ``'bgr'``: ``cv2.imread``,
    ``LoadRGBImage`` and the batches of a pretraining pipeline).

    With ``(order, mean, std) =`` :func:`input_normalization` ``(model)``: the channels are
    reversed when ``channel_order != order``, then ``x' = (x - mean) / std`` per channel; float32
    on the images' device. Equals ``model.data_preprocessor`` on the same images in BGR.

    Nothing is read back from a device: ``mean``/``std`` are the preprocessor's own buffers, and
    the pixel range is checked for images on the host only (every caller in mmdense hands over
    host batches or uint8; on a GPU the check would cost one synchronisation per batch).

    Raises:
        ValueError: ``channel_order`` is not ``'rgb'``/``'bgr'``, the batch is not
            ``(B, 3, H, W)``, or host images have values outside [0, 255] (already normalised?).
    """
    check_channel_order(channel_order)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f'model_inputs expects a (B, 3, H, W) image batch, got shape '
                         f'{tuple(images.shape)}')
    if images.dtype != torch.uint8 and images.numel() and images.device.type == 'cpu':
        low, high = float(images.min()), float(images.max())
        if not 0 <= low <= high <= 255:
            raise ValueError(f'model_inputs expects 0-255 pixel values, got {low:.3g}..'
                             f'{high:.3g} (already normalised?)')
    images = images.float()
    order, mean, std = _normalization_tensors(model)
    if channel_order != order:
        images = images.flip(1)
    if mean is None:
        return images
    mean = mean.to(images.device, torch.float32).view(1, 3, 1, 1)
    std = std.to(images.device, torch.float32).view(1, 3, 1, 1)
    return (images - mean) / std


def _normalization_tensors(model: nn.Module):
    """:func:`input_normalization` with ``mean``/``std`` as tensors (the preprocessor's buffers,
    on its device, or the ImageNet statistics on the host), read without a device sync."""
    preprocessor = getattr(model, 'data_preprocessor', None)
    converts = None if preprocessor is None else _converts_channels(preprocessor)
    normalizes = getattr(preprocessor, '_enable_normalize', None)
    if converts is None and normalizes is None:
        return 'rgb', torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    order = 'rgb' if converts else 'bgr'
    if not normalizes:
        return order, None, None
    mean, std = preprocessor.mean.flatten(), preprocessor.std.flatten()
    if mean.numel() != 3 or std.numel() != 3:
        raise ValueError(f'{type(preprocessor).__name__} of {type(model).__name__} has '
                         f'{mean.numel()} mean and {std.numel()} std values; 3-channel images '
                         'need 3')
    return order, mean, std


def dense_backbone(model: nn.Module) -> nn.Module:
    """The backbone to evaluate: a teacher–student algorithm's transfer backbone (its
    ``transfer_backbone()``, the branch export also takes), else ``model.backbone``; a model
    without ``backbone`` is taken to be a backbone itself."""
    if hasattr(model, 'transfer_backbone'):
        return model.transfer_backbone()
    return getattr(model, 'backbone', model)


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
    """Last-stage dense features ``(B, C, h, w)`` of backbone inputs ``images (B, 3, H, W)``
    (:func:`model_inputs`).

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


def extract_features(model: nn.Module, images: Tensor, *, channel_order: str,
                     batch_size: int = 8) -> Tensor:
    """:func:`dense_features` of 0-255 ``images (N, 3, H, W)`` whose channels are in
    ``channel_order`` (see :func:`model_inputs`), in batches on the model's device; returned on
    CPU."""
    check_channel_order(channel_order)
    device = next(model.parameters()).device
    chunks = [
        dense_features(model, model_inputs(model, batch.to(device),
                                           channel_order=channel_order)).cpu()
        for batch in images.split(batch_size)
    ]
    return torch.cat(chunks)
