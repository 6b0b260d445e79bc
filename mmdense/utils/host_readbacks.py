"""Count the host synchronisations of a block of code: the points where, on a GPU, the host
waits until the device has finished all the work queued before.

Three kinds, each named by what the host waits for (:class:`SyncSite`'s ``what``):

* a value read into Python: ``'value'`` (``.item()``, ``bool(t)``, ``int(t)``, ``float(t)``,
  formatting, indexing by a 0-d tensor; aten ``_local_scalar_dense``), ``'equal'``
  (``torch.equal``), ``'tolist'`` and ``'numpy'``;
* a data-dependent shape: the device computes how large the output is and the host reads that
  size to allocate it: ``'nonzero'`` (also ``torch.where(mask)``, ``argwhere``), ``'index by
  mask'`` and ``'index_put by mask'`` (``x[mask]``, ``x[mask] = v`` and their gradients),
  ``'masked_select'``, ``'unique'``, ``'bincount'`` (its size is the largest value + 1) and
  ``'repeat_interleave'`` with tensor repeats and no ``output_size``;
* a blocking copy (without ``non_blocking=True``) between host and device memory: ``'copy to
  host'`` (``.cpu()``, ``.to('cpu')``) and ``'copy to device'`` (``.to('cuda')``,
  ``torch.tensor(..., device='cuda')``, ``x.new_tensor([...])``, indexing by a Python list):
  torch synchronises the stream after such a copy.

The data-dependent operators are seen where torch dispatches them (a ``TorchDispatchMode``), so
the ones that C++ code asks for are counted too (``x[mask]`` is ``aten.index.Tensor`` with a
boolean index); ``.tolist()`` and ``.numpy()``, which read a CPU tensor without dispatching an
operator, are counted at the Python level. The counter runs on any device. On the CPU it cannot
know which tensors would live on a GPU, so it counts every read (torch.optim's reads of its
step counters, host tensors by design, excepted) and no copies; on (fake) CUDA tensors,
``device_type='cuda'`` counts exactly the syncs of tensors on that device, copies included.
"""
import functools
import os.path as osp
import sys
from collections import Counter
from contextlib import contextmanager
from typing import Iterator, NamedTuple, Optional

import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .op_counter import _short

aten = torch.ops.aten
_TORCH_DIR = osp.dirname(torch.__file__) + osp.sep
# torch.optim reads its per-parameter step counters, which it keeps on the host by design
_HOST_BY_DESIGN = osp.join(_TORCH_DIR, 'optim') + osp.sep
_THIS_FILE = osp.abspath(__file__)

VALUE_READS = {aten._local_scalar_dense.default: 'value', aten.item.default: 'value',
               aten.equal.default: 'equal'}
SHAPE_FROM_DATA = {
    aten.nonzero.default: 'nonzero', aten.masked_select.default: 'masked_select',
    aten._unique.default: 'unique', aten._unique2.default: 'unique',
    aten.unique_dim.default: 'unique', aten.unique_consecutive.default: 'unique',
    aten.bincount.default: 'bincount'}
MASK_INDEXING = {aten.index.Tensor: 'index by mask', aten.index_put.default: 'index_put by mask',
                 aten.index_put_.default: 'index_put by mask',
                 aten._index_put_impl_.default: 'index_put by mask'}
COPIES = (aten._to_copy.default, aten.copy_.default)
# Python-level reads that dispatch no operator on a CPU tensor
PYTHON_READS = ('tolist', 'numpy')


class SyncSite(NamedTuple):
    """One kind of host synchronisation at one place: ``what`` the host waits for (see the
    module doc), and the innermost frame outside torch that asked for it."""
    what: str
    file: str  # from its package directory on, e.g. 'mmdense/models/algorithms/cotap.py'
    line: int
    function: str

    def __str__(self) -> str:
        return f'{self.what} at {self.file}:{self.line} ({self.function})'


def _device_type(value) -> Optional[str]:
    return value.device.type if isinstance(value, torch.Tensor) else None


def host_sync(func, args, kwargs) -> Optional[str]:
    """What the host waits for when the aten operator ``func`` runs on ``args``/``kwargs`` with
    its tensors on a GPU (a :class:`SyncSite` ``what``), or ``None`` if it queues its work
    without waiting."""
    if func in VALUE_READS:
        return VALUE_READS[func]
    if func in SHAPE_FROM_DATA:
        return SHAPE_FROM_DATA[func]
    if func is aten.repeat_interleave.Tensor:
        return 'repeat_interleave' if kwargs.get('output_size') is None else None
    if func in MASK_INDEXING:
        indices = args[1] if len(args) > 1 else kwargs.get('indices', ())
        masks = [i for i in indices if i is not None and i.dtype in (torch.bool, torch.uint8)]
        return MASK_INDEXING[func] if masks else None
    if func in COPIES:
        if func is aten._to_copy.default:
            source, target = args[0].device.type, torch.device(
                kwargs.get('device') or args[0].device).type
        else:
            target, source = args[0].device.type, args[1].device.type
        non_blocking = kwargs.get('non_blocking', args[2] if len(args) > 2 else False)
        if non_blocking or (source == 'cpu') == (target == 'cpu'):
            return None
        return 'copy to device' if source == 'cpu' else 'copy to host'
    return None


def _involves(device_type: Optional[str], func, args, kwargs) -> bool:
    """Whether a tensor of ``device_type`` takes part (any tensor when ``None``)."""
    if device_type is None:
        return True
    if func is aten._to_copy.default and kwargs.get('device') is not None:
        if torch.device(kwargs['device']).type == device_type:
            return True
    return any(_device_type(t) == device_type for t in tree_leaves((args, kwargs)))


def _passes_on(frame) -> bool:
    """Whether ``frame`` only passes an operator on: torch's code, this module's, or another
    dispatch mode stacked above this one (e.g. ``count_aten_ops``)."""
    code = frame.f_code
    return (code.co_filename.startswith(_TORCH_DIR) or code.co_filename == _THIS_FILE
            or code.co_name == '__torch_dispatch__')


def _asked_by_torch_optim(frame) -> bool:
    """Whether torch.optim's code, between ``frame`` and the first frame that does not only
    pass the operator on, asked."""
    while frame is not None and _passes_on(frame):
        if frame.f_code.co_filename.startswith(_HOST_BY_DESIGN):
            return True
        frame = frame.f_back
    return False


def sync_site(what: str, frame) -> SyncSite:
    """The :class:`SyncSite` of the innermost frame from ``frame`` outwards that does not only
    pass the operator on (where the synchronisation was asked for)."""
    while frame is not None and _passes_on(frame):
        frame = frame.f_back
    if frame is None:
        return SyncSite(what, '<torch>', 0, '')
    return SyncSite(what, _short(frame.f_code.co_filename), frame.f_lineno, frame.f_code.co_name)


class HostSyncCounter(TorchDispatchMode):
    """Counts host synchronisations into ``counts`` by :class:`SyncSite` while entered (see
    :func:`count_host_readbacks`): :func:`host_sync` operators where torch dispatches them,
    ``Tensor.tolist``/``Tensor.numpy`` (patched for the block) where Python calls them. The
    operators that a ``tolist``/``numpy`` call dispatches are not counted again."""

    def __init__(self, counts: Counter, device_type: Optional[str] = None) -> None:
        super().__init__()
        self.counts = counts
        self.device_type = device_type
        self.inside_python_read = False

    def count(self, what: str, frame, func=None, args=(), kwargs=None) -> Optional[SyncSite]:
        """Count ``what``, asked for at ``frame`` by ``func`` on ``args``/``kwargs``, unless a
        ``tolist``/``numpy`` asked for it, no tensor of ``device_type`` takes part, or torch.optim
        reads its host step counter. Returns the site counted, if any."""
        if self.inside_python_read or not _involves(self.device_type, func, args, kwargs or {}) \
                or _asked_by_torch_optim(frame):
            return None
        site = sync_site(what, frame)
        self.counts[site] += 1
        return site

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        what = host_sync(func, args, kwargs)
        if what is not None:
            self.count(what, sys._getframe(1), func, args, kwargs)
        return func(*args, **kwargs)

    def python_read(self, name: str, original, tensor: torch.Tensor, *args, **kwargs):
        """``tensor.<name>(*args, **kwargs)`` (``tolist``/``numpy``), counted."""
        if self.inside_python_read:
            return original(tensor, *args, **kwargs)
        self.count(name, sys._getframe(2), args=(tensor, ))
        self.inside_python_read = True
        try:
            return original(tensor, *args, **kwargs)
        finally:
            self.inside_python_read = False

    def __enter__(self):
        if any(name in vars(torch.Tensor) for name in PYTHON_READS):
            raise RuntimeError('host synchronisation counters cannot be nested')
        # (class, name, its own attribute or None): torch.Tensor inherits both methods from
        # torch._C.TensorBase, FakeTensor has a tolist of its own
        self._shadowed = [(cls, name, vars(cls).get(name)) for cls in (torch.Tensor, FakeTensor)
                          for name in PYTHON_READS
                          if cls is torch.Tensor or name in vars(cls)]
        for cls, name, _ in self._shadowed:
            setattr(cls, name, self._counted(name, getattr(cls, name)))
        return super().__enter__()

    def _counted(self, name: str, original):

        @functools.wraps(original)
        def read(tensor, *args, **kwargs):
            return self.python_read(name, original, tensor, *args, **kwargs)

        return read

    def __exit__(self, *exc_info):
        try:
            return super().__exit__(*exc_info)
        finally:
            for cls, name, own in self._shadowed:
                if own is None:
                    delattr(cls, name)
                else:
                    setattr(cls, name, own)


@contextmanager
def count_host_readbacks(device_type: Optional[str] = None) -> Iterator[Counter]:
    """Within the block, count every host synchronisation (see the module doc) by
    :class:`SyncSite`; behaviour is unchanged.

    Args:
        device_type: count only the synchronisations of tensors on this device type (e.g.
            ``'cuda'`` for fake CUDA tensors, where copies to and from the host count too);
            ``None`` counts every value read and data-dependent shape, whatever the device,
            except torch.optim's reads of its host-side step counters.

    Yields:
        A ``Counter`` keyed by :class:`SyncSite`.
    """
    counts = Counter()
    with HostSyncCounter(counts, device_type):
        yield counts
