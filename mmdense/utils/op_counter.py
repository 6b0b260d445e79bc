"""Count the aten operators a block of code dispatches: a CPU proxy for GPU kernel launches.

A training step that is launch-bound on a GPU (many small kernels, the device idle between
them) is dominated by how many operators it dispatches, whatever their size; counting them on
the CPU shows where a step does per-view, per-tensor or per-parameter work that one batched or
fused call could do. ``count_aten_ops(by_site=True)`` also says where each operator came from
(the innermost Python function outside torch's internals), which finds those places.
"""
import os.path as osp
import site
import sys
import sysconfig
from collections import Counter
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Operators that only describe a tensor (no computation, no kernel on a GPU).
METADATA_OPS = frozenset(
    ('aten.detach.default', 'aten.view.default', 'aten._unsafe_view.default', 'aten.t.default',
     'aten.alias.default', 'aten.expand.default', 'aten.permute.default',
     'aten.transpose.int', 'aten.unsqueeze.default', 'aten.squeeze.dim', 'aten.slice.Tensor',
     'aten.select.int', 'aten.split.Tensor', 'aten.unbind.int', 'aten.as_strided.default',
     'aten.split_with_sizes.default', 'aten._reshape_alias.default'))

_TORCH_DIR = osp.dirname(torch.__file__) + osp.sep
# torch code that is a call site of its own (not an implementation detail of the caller's op)
_TORCH_SITES = tuple(osp.join(_TORCH_DIR, name) + osp.sep for name in ('optim', 'autograd'))
# the read-back counter's wrappers (count_host_readbacks) stand between an op and its caller
_READBACK_WRAPPER = osp.join(osp.dirname(osp.abspath(__file__)), 'host_readbacks.py')


def _import_roots() -> tuple:
    """The directories Python imports packages from, longest first: the directory holding the
    ``mmdense`` package (the checkout of an editable install) and every site-packages directory
    (which a virtualenv inside the checkout puts below the checkout)."""
    roots = {osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))}
    roots.update(sysconfig.get_paths()[key] for key in ('purelib', 'platlib'))
    roots.update(site.getsitepackages())
    return tuple(sorted((osp.abspath(root) + osp.sep for root in roots), key=len, reverse=True))


_IMPORT_ROOTS = _import_roots()


def _short(filename: str, roots: Sequence[str] = _IMPORT_ROOTS) -> str:
    """``filename`` relative to the first of ``roots`` (directories ending in a separator,
    longest first) it lies below: its module path (``mmdense/models/utils/kmeans.py``,
    ``torch/optim/sgd.py``), whatever the checkout's folder is called; the file name alone
    for a file below none of them."""
    for root in roots:
        if filename.startswith(root):
            return filename[len(root):]
    return osp.basename(filename)


def _call_site() -> str:
    """``file:function`` of the innermost Python frame outside torch's module, functional and
    tensor internals (and the read-back counter's wrappers): the code that asked for the
    operator. Operators of the backward pass are dispatched under ``torch/autograd`` (the
    ``backward()`` call), those of an optimizer step under ``torch/optim``."""
    frame = sys._getframe(3)
    while frame is not None:
        filename = frame.f_code.co_filename
        outside_torch = not filename.startswith(_TORCH_DIR) or filename.startswith(_TORCH_SITES)
        if outside_torch and filename != _READBACK_WRAPPER:
            return f'{_short(filename)}:{frame.f_code.co_name}'
        frame = frame.f_back
    return '<torch>'


class _OpCounter(TorchDispatchMode):

    def __init__(self, counts: Counter, by_site: Optional[Counter]) -> None:
        super().__init__()
        self.counts = counts
        self.by_site = by_site

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        self.counts[name] += 1
        if self.by_site is not None and name not in METADATA_OPS:
            self.by_site[_call_site()] += 1
        return func(*args, **(kwargs or {}))


@contextmanager
def count_aten_ops(by_site: Optional[Counter] = None) -> Iterator[Counter]:
    """Within the block, count every aten operator dispatched (forward, autograd's backward and
    optimizer steps alike), keyed by overload name (``'aten.mm.default'``). Behaviour is
    unchanged; :func:`compute_ops` drops the metadata-only ones.

    Args:
        by_site: if given, also counts there the non-metadata operators by call site
            (``'mmdense/models/utils/kmeans.py:_kmeans_plus_plus'``, see :func:`_call_site`).
    """
    counts = Counter()
    with _OpCounter(counts, by_site):
        yield counts


def compute_ops(counts: Counter) -> Counter:
    """``counts`` without :data:`METADATA_OPS`: the operators that launch work."""
    return Counter({op: n for op, n in counts.items() if op not in METADATA_OPS})
