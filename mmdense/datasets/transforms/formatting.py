"""Packing of multi-view samples whose crop geometry must reach the model as tensors."""
from typing import Sequence

import numpy as np
import torch
from mmpretrain.datasets.transforms import PackInputs

from mmdense.registry import TRANSFORMS


@TRANSFORMS.register_module()
class PackMultiViewInputs(PackInputs):
    """:class:`mmpretrain.datasets.transforms.PackInputs` with array algorithm keys as tensors.

    ``PackInputs`` already packs a list of views into a list of (3, H, W) tensors, but it stores
    algorithm keys unchanged, so numpy geometry such as ``crop_boxes`` (V, 4) and ``flips`` (V,)
    would reach the model as arrays left on the CPU. Here numpy arrays become tensors, which the
    data preprocessor then moves to the model's device with the data samples.

    Each ``(H, W, C)`` view becomes a ``(C, H, W)`` tensor as in ``PackInputs``, but transposed by
    numpy: torch's ``permute(2, 0, 1).contiguous()`` of a uint8 tensor, which ``PackInputs``
    uses, costs about 10 times as much in a one-thread loader worker.
    """

    @staticmethod
    def format_input(input_):
        if isinstance(input_, list):
            return [PackMultiViewInputs.format_input(item) for item in input_]
        if isinstance(input_, np.ndarray) and input_.ndim == 3:
            return torch.from_numpy(np.ascontiguousarray(input_.transpose(2, 0, 1)))
        return PackInputs.format_input(input_)

    def __init__(self,
                 input_key: str = 'img',
                 algorithm_keys: Sequence[str] = ('crop_boxes', 'flips'),
                 meta_keys: Sequence[str] = PackInputs.DEFAULT_META_KEYS):
        super().__init__(input_key=input_key, algorithm_keys=algorithm_keys, meta_keys=meta_keys)

    def transform(self, results: dict) -> dict:
        results = dict(results)
        for key in self.algorithm_keys:
            if isinstance(results.get(key), np.ndarray):
                results[key] = torch.from_numpy(results[key])
        return super().transform(results)
