"""Compatibility fixes for this project's stack, applied once when :mod:`mmdense` is imported.

Each fix names the version that needs it. Nothing here disables a safety check.
"""
import argparse
import pathlib
import pickle
import warnings

import cv2
import mmcv
import mmcv.image
import mmcv.image.photometric
import numpy as np
import torch
from mmengine.logging import HistoryBuffer

HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')
# numpy >= 1.25 rebuilds dtypes through per-type classes (numpy.dtypes.Float64DType, ...);
# only plain numeric and bool dtypes are allowed (no object dtype).
NUMERIC_DTYPE_CLASSES = tuple(
    type(np.dtype(name)) for name in ('bool', 'int8', 'int16', 'int32', 'int64', 'uint8',
                                      'uint16', 'uint32', 'uint64', 'float16', 'float32',
                                      'float64', 'complex64', 'complex128'))


def _history_buffer_statistic(owner, name: str):
    """Stands in for ``getattr`` while a checkpoint is unpickled with ``weights_only=True``.

    mmengine 0.10.7's ``HistoryBuffer.__getstate__`` pickles its statistics methods as
    ``getattr(HistoryBuffer, 'min')`` etc.; this resolves exactly those and refuses anything else.
    """
    if owner is HistoryBuffer and name in HISTORY_BUFFER_STATISTICS:
        return getattr(owner, name)
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({owner!r}, {name!r}); only HistoryBuffer statistics '
        f'methods {HISTORY_BUFFER_STATISTICS} are allowed')


def _empty_bytes(*args):
    """Stands in for ``bytes`` while a checkpoint is unpickled with ``weights_only=True``.

    ``torch.save`` pickles with protocol 2, which writes an *empty* ``bytes`` object as the call
    ``bytes()`` (non-empty ones go through ``_codecs.encode``, which torch allows). mmengine's
    ``HistoryBuffer`` of a message-hub entry that was never updated holds an empty numpy array,
    whose data is that empty ``bytes``. Only the argument-less call is allowed.
    """
    if args:
        raise pickle.UnpicklingError(f'checkpoint asks for bytes{args!r}; only bytes() (the '
                                     'empty bytes object of protocol 2) is allowed')
    return b''


# numpy's pickling helpers under the module numpy 1.x pickles name (``numpy.core.multiarray``,
# e.g. DINO's 2021 checkpoints) and the one numpy >= 2 pickles name (``numpy._core.multiarray``).
NUMPY_PICKLE_MODULES = ('numpy.core.multiarray', 'numpy._core.multiarray')
NUMPY_PICKLE_HELPERS = ('scalar', '_reconstruct')


def numpy_pickle_helpers() -> list:
    """``(function, global name)`` for the constructors of numpy scalars (``scalar(dtype,
    bytes)``) and arrays (``_reconstruct(ndarray, shape, typecode)``) under both numpy module
    names: a pickle written under numpy 1.x names ``numpy.core.multiarray.scalar``, which numpy 2
    keeps only as a deprecated alias. The dtype such an object is built from must still be one of
    :data:`NUMERIC_DTYPE_CLASSES` (weights-only loading refuses to build any other)."""
    try:  # numpy >= 2.0 moved the pickling helpers to numpy._core
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    return [(getattr(multiarray, helper), f'{module}.{helper}')
            for module in NUMPY_PICKLE_MODULES for helper in NUMPY_PICKLE_HELPERS]


def path_safe_globals() -> list:
    """The ``pathlib`` classes a pickled path names, each mapped to a class that can be built
    here: ``PosixPath`` / ``WindowsPath`` (e.g. DINO's ``args.output_dir`` under
    ``run_with_submitit.py``) load as themselves on the system that can instantiate them and as
    ``PurePosixPath`` / ``PureWindowsPath`` elsewhere (``pathlib.WindowsPath(...)`` raises on
    POSIX); the pure classes load as themselves. Building a path never touches the file system."""
    native = type(pathlib.Path())  # PosixPath or WindowsPath: the one this system builds
    stand_ins = {
        pathlib.PurePosixPath: pathlib.PurePosixPath,
        pathlib.PureWindowsPath: pathlib.PureWindowsPath,
        pathlib.PosixPath: native if native is pathlib.PosixPath else pathlib.PurePosixPath,
        pathlib.WindowsPath: native if native is pathlib.WindowsPath else pathlib.PureWindowsPath,
    }
    names = {}
    for cls, stand_in in stand_ins.items():  # pathlib's public name, and the defining module's
        for module in {'pathlib', cls.__module__}:
            names[f'{module}.{cls.__qualname__}'] = stand_in
    return [(stand_in, name) for name, stand_in in names.items()]


def _numeric_dtype(*args):
    """Stands in for ``numpy.dtype`` while a checkpoint is unpickled with ``weights_only=True``:
    builds the dtypes of :data:`NUMERIC_DTYPE_CLASSES` only (never an object dtype, whose arrays
    would hold arbitrary objects), whichever way the pickle asks for them."""
    dtype = np.dtype(*args)
    if type(dtype) not in NUMERIC_DTYPE_CLASSES:
        raise pickle.UnpicklingError(f'checkpoint asks for numpy.dtype{args!r}; only numeric and '
                                     'bool dtypes are allowed')
    return dtype


def checkpoint_safe_globals() -> list:
    """The globals beyond torch's defaults that the checkpoints this project reads hold, each
    one data, never a callable that could run code:

    * mmengine 0.10.7 runner checkpoints: numpy arrays and scalars (``HistoryBuffer``
      histories, message-hub values), ``HistoryBuffer`` itself and the empty ``bytes`` of an
      empty history;
    * the published training checkpoints :mod:`mmdense.transfer.checkpoints` imports (DINO's
      ``main_dino.py``, iBOT's ``main_ibot.py``, SlotCon's ``main_pretrain.py``): their
      ``args`` (an ``argparse.Namespace``, holding ``pathlib`` paths under DINO's
      ``run_with_submitit.py``) and numpy floats in the optimizer state, pickled under numpy
      1.x or 2.x (:func:`numpy_pickle_helpers`, :func:`path_safe_globals`)."""
    return [
        np.ndarray,
        (_numeric_dtype, 'numpy.dtype'),
        *NUMERIC_DTYPE_CLASSES,
        *numpy_pickle_helpers(),
        HistoryBuffer,
        (_history_buffer_statistic, 'builtins.getattr'),
        (_empty_bytes, 'builtins.bytes'),
        argparse.Namespace,
        *path_safe_globals(),
    ]


def allow_mmengine_checkpoints() -> None:
    """torch >= 2.6 loads with ``weights_only=True`` by default, which refuses mmengine 0.10.7's
    runner checkpoints (``--resume``) and the published training checkpoints. Allow-list the
    globals they contain (:func:`checkpoint_safe_globals`); every other global (e.g. an arbitrary
    callable in a malicious pickle) is still refused."""
    if hasattr(torch.serialization, 'add_safe_globals'):
        torch.serialization.add_safe_globals(checkpoint_safe_globals())


def adjust_hue(img: np.ndarray, hue_factor: float, backend=None) -> np.ndarray:
    """Rotate the hue of a BGR image by ``hue_factor`` ∈ [-0.5, 0.5] of a full turn.

    Replaces ``mmcv.adjust_hue`` (mmcv 2.1.0), whose ``np.uint8(hue_factor * 255)`` raises
    ``OverflowError`` for every negative factor under numpy >= 2, which breaks mmpretrain's
    ``ColorJitter``. The shift is wrapped into uint8 explicitly; ``backend`` is accepted for
    signature compatibility (the rotation is done in OpenCV's full-range HSV for both).
    """
    if not -0.5 <= hue_factor <= 0.5:
        raise ValueError(f'hue_factor {hue_factor} is not in [-0.5, 0.5]')
    if not (isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3):
        raise TypeError('adjust_hue expects an (H, W, 3) BGR ndarray')
    hsv = cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_BGR2HSV_FULL)
    shift = np.uint8(int(hue_factor * 255) % 256)
    with np.errstate(over='ignore'):
        hsv[..., 0] += shift
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR_FULL).astype(img.dtype)


def patch_mmcv_adjust_hue() -> None:
    """numpy >= 2 with mmcv 2.1.0: see :func:`adjust_hue`."""
    if int(np.__version__.split('.')[0]) < 2:
        return
    for module in (mmcv, mmcv.image, mmcv.image.photometric):
        module.adjust_hue = adjust_hue


def silence_mmcv_color_warning() -> None:
    """mmcv 2.1.0's ``adjust_color`` warns on every call with the pillow backend (the one
    mmpretrain's ``ColorJitter`` uses), flooding training logs with a message about arguments
    that are not even passed."""
    warnings.filterwarnings('ignore', message="Only use 'alpha' for pillow backend.")


def apply_all() -> None:
    allow_mmengine_checkpoints()
    patch_mmcv_adjust_hue()
    silence_mmcv_color_warning()
