"""Count the aten operators a block of code dispatches: a CPU proxy for GPU kernel launches.

A training step that is launch-bound on a GPU (many small kernels, the device idle between
them) is dominated by how many operators it dispatches, whatever their size; counting them on
the CPU shows where a step does per-view, per-tensor or per-parameter work that one batched or
fused call could do.
"""
from collections import Counter
from contextlib import contextmanager
from typing import Iterator

from torch.utils._python_dispatch import TorchDispatchMode

# Operators that only describe a tensor (no computation, no kernel on a GPU).
METADATA_OPS = frozenset(
    ('aten.detach.default', 'aten.view.default', 'aten._unsafe_view.default', 'aten.t.default',
     'aten.alias.default', 'aten.expand.default', 'aten.permute.default',
     'aten.transpose.int', 'aten.unsqueeze.default', 'aten.squeeze.dim', 'aten.slice.Tensor',
     'aten.select.int', 'aten.split.Tensor', 'aten.unbind.int', 'aten.as_strided.default',
     'aten.split_with_sizes.default', 'aten._reshape_alias.default'))


class _OpCounter(TorchDispatchMode):

    def __init__(self, counts: Counter) -> None:
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func)] += 1
        return func(*args, **(kwargs or {}))


@contextmanager
def count_aten_ops() -> Iterator[Counter]:
    """Within the block, count every aten operator dispatched (forward, autograd's backward and
    optimizer steps alike), keyed by overload name (``'aten.mm.default'``). Behaviour is
    unchanged; :func:`compute_ops` drops the metadata-only ones."""
    counts = Counter()
    with _OpCounter(counts):
        yield counts


def compute_ops(counts: Counter) -> Counter:
    """``counts`` without :data:`METADATA_OPS`: the operators that launch work."""
    return Counter({op: n for op, n in counts.items() if op not in METADATA_OPS})
