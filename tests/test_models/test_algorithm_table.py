"""``tests/algorithm_table.py`` has one row per registered algorithm, so that every shared
per-algorithm test (resume, reliability, transfer, device moves) covers it."""
import inspect
import os.path as osp

import mmdense.models.algorithms  # noqa: F401 (registers the algorithms)
from algorithm_table import ALGORITHMS
from helpers import ROOT
from mmdense.models.algorithms.base import TeacherStudentSelfSupervisor
from mmdense.registry import MODELS


def registered_algorithms():
    """Names of the teacher–student algorithms in mmdense's ``MODELS`` registry."""
    return {name for name, cls in MODELS.module_dict.items()
            if inspect.isclass(cls) and issubclass(cls, TeacherStudentSelfSupervisor)
            and cls is not TeacherStudentSelfSupervisor}


def test_every_registered_algorithm_has_a_row():
    registered = registered_algorithms()
    assert registered, 'found no algorithm in the MODELS registry'
    missing = registered - set(ALGORITHMS)
    assert not missing, (f'{sorted(missing)} registered but absent from tests/algorithm_table.py: '
                         'add a row so the per-algorithm tests cover it')
    assert set(ALGORITHMS) <= registered, f'stale rows: {sorted(set(ALGORITHMS) - registered)}'


def test_rows_name_a_shipped_toy_config_and_a_backbone_family():
    for name, row in ALGORITHMS.items():
        assert osp.isfile(osp.join(ROOT, row.toy_config)), (name, row.toy_config)
        assert row.backbone in ('vit', 'resnet'), (name, row.backbone)
