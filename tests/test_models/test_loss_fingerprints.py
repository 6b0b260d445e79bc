"""The losses of every algorithm over three steps of its tiny model equal the reference written
before the *One house* restructuring (``tests/loss_fingerprints.json``, commit 951e259): moving
the training step into the base class, the teacher schedule and the method records changed no
number. Tolerance: 1e-5 relative (other CPUs may sum in another order)."""
import json

import pytest

from algorithm_table import ALGORITHMS
from loss_fingerprints import REFERENCE, algorithm_losses

pytestmark = pytest.mark.usefixtures('one_thread')

with open(REFERENCE) as f:
    EXPECTED = json.load(f)


def start_teacher_schedule(model, length):
    model.set_teacher_schedule(length)


def test_every_algorithm_has_a_reference_fingerprint():
    # PixPro was added after the reference was written: it has no number to keep
    assert sorted(EXPECTED) == sorted(set(ALGORITHMS) - {'PixPro'})


@pytest.mark.parametrize('algorithm', sorted(EXPECTED))
def test_losses_equal_the_reference_fingerprint(algorithm, toy_root):
    got = algorithm_losses(algorithm, toy_root, start_teacher_schedule)
    expected = EXPECTED[algorithm]
    assert [sorted(step) for step in got] == [sorted(step) for step in expected]
    for step, (got_step, expected_step) in enumerate(zip(got, expected)):
        for name, value in expected_step.items():
            assert got_step[name] == pytest.approx(value, rel=1e-5, abs=1e-7), (
                f'{algorithm} step {step} {name}: {got_step[name]!r} != reference {value!r}')
