"""Compatibility fixes for this project's stack, applied once when :mod:`mmdense` is imported.

Each fix names the version that needs it. Nothing here disables a safety check.
"""
import builtins
import collections
import copyreg
import logging

import numpy as np
import torch


def _numpy_checkpoint_globals() -> list:
    """numpy objects that mmengine's runner checkpoints pickle (``HistoryBuffer`` arrays, numpy
    scalars in the message hub, dtype objects)."""
    try:  # numpy >= 2.0 moved the pickling helpers to numpy._core
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [type(np.dtype(name)) for name in np.sctypeDict.values()
                     if isinstance(name, type)]
    return [np.ndarray, np.dtype, _reconstruct, scalar, *sorted(set(dtype_classes), key=str)]


def _mmengine_checkpoint_globals() -> list:
    from mmengine.logging import HistoryBuffer
    return [HistoryBuffer]


def checkpoint_safe_globals() -> list:
    """Exactly the globals that mmengine 0.10.7 runner checkpoints need beyond torch's defaults."""
    return [
        *_numpy_checkpoint_globals(),
        *_mmengine_checkpoint_globals(),
        collections.OrderedDict,
        collections.defaultdict,
        copyreg._reconstructor,
        builtins.object,
        logging.Logger,
    ]


def allow_mmengine_checkpoints() -> None:
    """torch >= 2.6 loads with ``weights_only=True`` by default, which refuses mmengine 0.10.7's
    runner checkpoints (``--resume``). Allow-list the globals they contain; every other global
    (e.g. an arbitrary callable in a malicious pickle) is still refused."""
    if hasattr(torch.serialization, 'add_safe_globals'):
        torch.serialization.add_safe_globals(checkpoint_safe_globals())


def apply_all() -> None:
    allow_mmengine_checkpoints()
