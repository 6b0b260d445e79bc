"""Models and batches on fake CUDA tensors: device bugs of GPU code found on a machine without one.

``torch._subclasses.fake_tensor.FakeTensorMode`` gives tensors a device and a shape but no data
and needs no driver: a model moved to ``'cuda'`` under it runs its operators on metadata, and an
operator that mixes a CUDA tensor with a CPU one (other than a 0-d CPU scalar) raises
``FakeTensorDeviceMismatchError``, as it would on a GPU. Real tensors may enter
(``allow_non_fake_inputs=True``): batches from a loader, files read back, and also a tensor the
model held on to from before its move (a stale buffer reference) or a constant made at import
are real CPU tensors, which the mode turns into fake CPU ones, so using one beside a CUDA tensor
fails like any other mix. The failure is re-raised by :func:`explain_device_errors` as an
``AssertionError`` that names the innermost frame of the repository's code (file, line,
source).

What fake tensors cannot follow, and how the tests cover it:

* **Values.** A fake tensor has none, so an operator whose output shape or Python value depends
  on data (the host synchronisations of :mod:`mmdense.utils.host_readbacks`: ``.item()``,
  ``bool(t)``, ``.tolist()``, ``nonzero``, boolean-mask indexing, ...) cannot run. The same step
  is first run on the real CPU model (:class:`SyncRecorder`), which records each such result by
  call site; the fake run (:class:`SyncReplayer`) takes the result recorded at the same site
  (a Python value, or a fake output of the recorded size on the operator's device, after the
  device check the operator makes) and counts it as a host synchronisation when a CUDA tensor
  takes part. A fake run that asks for a result the CPU run did not record fails. Such an
  operator on real tensors only (a file read back) runs for real.
* **Autograd.** The backward pass cannot run on fake CUDA tensors (the autograd engine needs a
  CUDA driver for their device): the optimizer steps with given fake gradients
  (:func:`set_fake_gradients`), and the backward pass runs (and has its synchronisations
  counted) on the CPU.
* **Generators.** ``torch.Generator(device='cuda')`` needs a driver, and fake random operators
  take no generator: the replayer drops a ``generator=`` argument (the draws land where the code
  puts them, on the generator's device), and DSC's test draws its k-means seeds from the
  device's default generator instead of a CUDA one (the same operators on the same device).
"""
import os.path as osp
import sys
import traceback
from collections import Counter, defaultdict, deque
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple

import torch
import torch.nn as nn
from torch._subclasses.fake_tensor import (DataDependentOutputException,
                                           DynamicOutputShapeException, FakeTensor,
                                           FakeTensorDeviceMismatchError, FakeTensorMode,
                                           unset_fake_temporarily)
from torch.utils._pytree import tree_leaves, tree_map_only

from mmdense.utils.host_readbacks import (MASK_INDEXING, HostSyncCounter, SyncSite, host_sync,
                                          sync_site)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
COPIES = ('copy to host', 'copy to device')


def _is_mask(index) -> bool:
    return index is not None and index.dtype in (torch.bool, torch.uint8)


class _Meta:
    """The shape and dtype of a recorded output tensor."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.shape, self.dtype = tuple(tensor.shape), tensor.dtype


def _summary(func, args, out) -> Any:
    """What the fake run needs of a data-dependent result: a Python value, the number of True
    entries of each mask index, or the :class:`_Meta` of the outputs."""
    if func in MASK_INDEXING:
        return [int(index.sum()) for index in args[1] if _is_mask(index)]
    return tree_map_only(torch.Tensor, _Meta, out)


class SyncRecorder(HostSyncCounter):
    """Records the result of every data-dependent operator (and ``tolist``/``numpy``) of a run on
    real tensors, by :class:`SyncSite`, in order; counts them like ``count_host_readbacks()``."""

    def __init__(self) -> None:
        super().__init__(Counter())
        self.results: Dict[SyncSite, deque] = defaultdict(deque)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        what = host_sync(func, args, kwargs)
        if what is not None and what not in COPIES and not self.inside_python_read:
            frame = sys._getframe(1)
            self.count(what, frame, func, args, kwargs)
            self.results[sync_site(what, frame)].append(_summary(func, args, out))
        return out

    def python_read(self, name, original, tensor, *args, **kwargs):
        out = super().python_read(name, original, tensor, *args, **kwargs)
        if not self.inside_python_read:
            self.results[sync_site(name, sys._getframe(2))].append(out)
        return out


class SyncReplayer(HostSyncCounter):
    """Under a :class:`FakeTensorMode`: answers each data-dependent operator with the result a
    :class:`SyncRecorder` recorded at the same call site, and counts the host synchronisations of
    CUDA tensors (copies between host and device included) into ``counts``."""

    def __init__(self, recorder: SyncRecorder) -> None:
        super().__init__(Counter(), device_type='cuda')
        self.results = recorder.results

    def recorded(self, site: SyncSite):
        if not self.results[site]:
            raise AssertionError(f'the fake-CUDA run asked for {site}, which the CPU run of the '
                                 'same step did not: the two runs took different paths')
        return self.results[site].popleft()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        what = host_sync(func, args, kwargs)
        if what is None:
            if kwargs.get('generator') is not None:  # fake random ops cannot take one
                kwargs = dict(kwargs, generator=None)
            return func(*args, **kwargs)
        frame = sys._getframe(1)
        self.count(what, frame, func, args, kwargs)
        if what in COPIES:
            return func(*args, **kwargs)
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        site = sync_site(what, frame)
        if not any(isinstance(t, FakeTensor) for t in tensors):
            if self.results[site]:  # the CPU run read it too
                self.results[site].popleft()
            with unset_fake_temporarily():
                return func(*args, **kwargs)
        recorded = self.recorded(site)
        if func in MASK_INDEXING:  # the operator itself checks devices with long indices
            counts = iter(recorded)
            indices = []
            for index in args[1]:
                if _is_mask(index):
                    count = next(counts)
                    indices += [torch.empty(count, dtype=torch.long, device=index.device)
                                for _ in range(index.dim())]
                else:
                    indices.append(index)
            return func(args[0], indices, *args[2:], **kwargs)
        FakeTensor._find_common_device(func, tensors)  # raises on a device mix
        return tree_map_only(
            _Meta, lambda meta: torch.empty(meta.shape, dtype=meta.dtype, device=tensors[0].device),
            recorded)

    def python_read(self, name, original, tensor, *args, **kwargs):
        site = sync_site(name, sys._getframe(2))
        if not isinstance(tensor, FakeTensor):
            if self.results[site]:
                self.results[site].popleft()
            return original(tensor, *args, **kwargs)
        self.count(name, sys._getframe(2), args=(tensor, ))
        return self.recorded(site)


def _project_frames(error: BaseException) -> List[str]:
    """``file:line in function: source`` of the repository's frames of ``error``'s traceback
    (innermost last), this helper's own excepted."""
    frames = []
    for frame in traceback.extract_tb(error.__traceback__):
        path = osp.abspath(frame.filename)
        if path.startswith(ROOT + osp.sep) and '.venv' not in path and path != __file__:
            frames.append(f'{osp.relpath(path, ROOT)}:{frame.lineno} in {frame.name}: '
                          f'{(frame.line or "").strip()}')
    return frames


@contextmanager
def explain_device_errors() -> Iterator[None]:
    """Re-raise a device mix (``FakeTensorDeviceMismatchError``) or a data-dependent operator
    that was not replayed as an ``AssertionError`` that names the innermost frame of the
    repository's code first, then its callers."""
    try:
        yield
    except (FakeTensorDeviceMismatchError, DataDependentOutputException,
            DynamicOutputShapeException) as error:
        frames = _project_frames(error)
        if not frames:
            raise
        kind = ('cpu/cuda mix' if isinstance(error, FakeTensorDeviceMismatchError) else
                'data-dependent operator not replayed')
        raise AssertionError(f'{kind} at {frames[-1]}\n  ({type(error).__name__}: '
                             f'{str(error).splitlines()[0]})\n  called from:\n    '
                             + '\n    '.join(reversed(frames[:-1]))) from error


class FakeCuda:
    """A :class:`FakeTensorMode` and a model moved into it.

    :meth:`move` moves a real module to fake ``'cuda'`` the way a user does (``module.to``
    under the mode): every parameter and buffer becomes a fake CUDA tensor; the ``Parameter``
    objects are new ones, as with ``torch.__future__.set_overwrite_module_params_on_conversion``,
    so state that kept references to the old ones is caught.
    """

    def __init__(self) -> None:
        self.mode = FakeTensorMode(allow_non_fake_inputs=True)

    def move(self, module: nn.Module) -> nn.Module:
        with self.mode:
            return module.to('cuda')

    @contextmanager
    def running(self, recorder: 'SyncRecorder') -> Iterator['SyncReplayer']:
        """The mode, with ``recorder``'s results replayed (and CUDA syncs counted)."""
        replayer = SyncReplayer(recorder)
        with explain_device_errors(), self.mode, replayer:
            yield replayer


def set_fake_gradients(model: nn.Module) -> None:
    """Give every trainable parameter a gradient of its own shape, dtype and device (fake
    tensors under the fake mode, random ones on real tensors)."""
    for param in model.parameters():
        if param.requires_grad:
            param.grad = torch.randn_like(param)


def off_device(tensors: Dict[str, Any], device_type: str = 'cuda') -> List[str]:
    """Names of the tensors of ``tensors`` (name → tensor) that are not on ``device_type``."""
    return [name for name, t in tensors.items()
            if isinstance(t, torch.Tensor) and t.device.type != device_type]


def record_and_replay(steps: Sequence[Callable[[nn.Module], Any]], model: nn.Module,
                      reference: nn.Module) -> Tuple[List[Any], List[Counter]]:
    """Run ``steps`` (each called with the model) on the real CPU ``reference`` (a copy of
    ``model``), recording their data-dependent results, then on ``model`` moved to fake CUDA.

    Returns the fake run's outputs and, per step, the host synchronisations it paid on CUDA
    tensors (a ``Counter`` by :class:`SyncSite`).
    """
    recorder = SyncRecorder()
    with recorder:
        for step in steps:
            step(reference)
    fake = FakeCuda()
    fake.move(model)
    outputs, syncs = [], []
    with fake.running(recorder) as replayer:
        for step in steps:
            outputs.append(step(model))
            syncs.append(Counter(replayer.counts))
            replayer.counts.clear()
    return outputs, syncs
