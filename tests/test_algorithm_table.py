import inspect

from mmpretrain.models import BaseSelfSupervisor

import mmdense.models.algorithms as algorithms
from algorithm_table import ALGORITHMS
from mmdense.registry import MODELS


def registered_algorithms():
    """Self-supervised algorithms that mmdense defines and registers."""
    return {name for name, cls in vars(algorithms).items()
            if inspect.isclass(cls) and issubclass(cls, BaseSelfSupervisor)
            and cls.__module__.startswith(algorithms.__name__) and MODELS.get(name) is cls}


def test_every_registered_algorithm_has_a_row():
    registered = registered_algorithms()
    assert registered, 'found no algorithm in mmdense.models.algorithms'
    missing = registered - set(ALGORITHMS)
    assert not missing, (f'{sorted(missing)} registered but absent from tests/algorithm_table.py: '
                         'add a row so the per-algorithm tests cover it')
    assert set(ALGORITHMS) <= registered, f'stale rows: {sorted(set(ALGORITHMS) - registered)}'
