"""Losses and temperature-scaled logits in fp32 when the rest of the step runs under autocast.

Under ``torch.autocast`` a ``.float()`` does not keep what follows in fp32: autocast casts the
operands of ``mm``, ``bmm``, ``einsum``, ``linear``, ``conv`` back to fp16/bf16 (CUDA and CPU
autocast alike), so ``q.float() @ k.float().t() / τ`` is a bf16 product whose relative error
(2⁻⁸ for bf16, 2⁻¹¹ for fp16, per rounding) is then multiplied by ``1/τ`` = 5 to 25 for the
temperatures these methods use (0.04–0.2). :func:`fp32_forward` runs a function with autocast
disabled for the device type of its tensor arguments and those arguments narrower than fp32
cast to fp32, so every product inside it is fp32::

    @fp32_forward
    def forward(self, student_logits, teacher_logits, temp): ...

Outside autocast the decorated function is called exactly as written (no cast, no context), so
fp32 training computes the same numbers bit for bit. Inside autocast, autograd still carries the
gradient back through the cast to the fp16/bf16 tensors that came in.

:func:`fp32_forward_enabled` switches the decorator off for a block, so that
``tools/analysis_tools/precision_check.py --fp32-losses both`` measures what it changes.
"""
import functools
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Iterator, Set, TypeVar

import torch
from torch import Tensor

Function = TypeVar('Function', bound=Callable)
NARROW_FLOATS = (torch.float16, torch.bfloat16)
_enabled = True


@contextmanager
def fp32_forward_enabled(enabled: bool) -> Iterator[None]:
    """Within the block, :func:`fp32_forward` functions compute in fp32 under autocast
    (``enabled=True``, the default everywhere) or are called as written, in the autocast
    precision (``False``: how the code ran before they were decorated)."""
    global _enabled
    previous, _enabled = _enabled, enabled
    try:
        yield
    finally:
        _enabled = previous


def _tensors(value: Any) -> Iterator[Tensor]:
    """The tensors in ``value``: a tensor, or a (nested) tuple, list or dict of them."""
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _upcast(value: Any) -> Any:
    """``value`` with every fp16/bf16 tensor in it (nested in tuples, lists, dicts) as fp32."""
    if isinstance(value, Tensor):
        return value.float() if value.dtype in NARROW_FLOATS else value
    if isinstance(value, (tuple, list)):
        return type(value)(_upcast(item) for item in value)
    if isinstance(value, dict):
        return {key: _upcast(item) for key, item in value.items()}
    return value


def autocast_device_types(*values: Any) -> Set[str]:
    """The device types of the tensors in ``values`` for which autocast is on right now."""
    types = {tensor.device.type for value in values for tensor in _tensors(value)}
    return {device_type for device_type in types
            if torch.amp.is_autocast_available(device_type)
            and torch.is_autocast_enabled(device_type)}


def fp32_forward(function: Function) -> Function:
    """Decorate ``function`` (a function or a method) to compute in fp32 under autocast.

    When autocast is on for the device type of a tensor argument, ``function`` runs with
    autocast off for those device types and its fp16/bf16 tensor arguments (also inside
    tuples, lists and dicts) cast to fp32; its outputs are then fp32 wherever they are computed
    from fp32 inputs and parameters. Otherwise it is called unchanged. Nested calls of
    decorated functions cost nothing: inside the first, autocast is already off.
    """

    @functools.wraps(function)
    def run_in_fp32(*args, **kwargs):
        device_types = autocast_device_types(args, kwargs) if _enabled else ()
        if not device_types:
            return function(*args, **kwargs)
        with ExitStack() as stack:
            for device_type in sorted(device_types):
                stack.enter_context(torch.autocast(device_type, enabled=False))
            return function(*_upcast(args), **_upcast(kwargs))

    return run_in_fp32
