"""Count host read-backs of tensor values: on CUDA each one waits for the device to finish."""
import functools
import os.path as osp
import sys
from collections import Counter
from contextlib import contextmanager
from typing import Iterator

import torch

# Tensor methods that copy a value to Python. Read-backs inside C++ (boolean-mask indexing,
# ``torch.unique``, ...) are not seen by this Python-level count.
READBACK_METHODS = ('item', 'tolist', 'numpy', 'nonzero', '__bool__', '__int__', '__float__',
                    '__index__')
_TORCH_DIR = osp.dirname(torch.__file__) + osp.sep
# torch.optim reads its per-parameter step counters, which it keeps on the host by design
_HOST_BY_DESIGN = osp.join(_TORCH_DIR, 'optim') + osp.sep


def _call_site() -> str:
    """``file:line`` of the innermost caller outside torch (where the read-back was asked for)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_TORCH_DIR):
        frame = frame.f_back
    if frame is None:
        return '<torch>'
    return f'{frame.f_code.co_filename}:{frame.f_lineno}'


@contextmanager
def count_host_readbacks() -> Iterator[Counter]:
    """Within the block, count every call of :data:`READBACK_METHODS` on a tensor.

    Yields a ``Counter`` keyed by ``(method, call site)``; behaviour is unchanged (each wrapper
    calls the original). Run on CPU it finds the read-backs that would synchronise a GPU step;
    torch.optim's reads of its own step counters (host tensors by design) are not counted.
    """
    counts = Counter()
    originals = {name: getattr(torch.Tensor, name) for name in READBACK_METHODS}
    own = {name for name in READBACK_METHODS if name in vars(torch.Tensor)}  # others inherited

    def counted(name, original):

        @functools.wraps(original)
        def wrapper(self, *args, **kwargs):
            if not sys._getframe(1).f_code.co_filename.startswith(_HOST_BY_DESIGN):
                counts[name, _call_site()] += 1
            return original(self, *args, **kwargs)

        return wrapper

    for name, original in originals.items():
        setattr(torch.Tensor, name, counted(name, original))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            if name in own:
                setattr(torch.Tensor, name, original)
            else:
                delattr(torch.Tensor, name)
