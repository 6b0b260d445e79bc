"""A new method is its own module plus one row of ``tests/algorithm_table.py``
(``docs/adding_a_method.md``): the throwaway :class:`DenseBYOL` (``dense_byol.py``, built only
from the teacher–student base and registered modules) is covered by every shared per-algorithm
test once ``dense_byol_row.py`` adds its row, and a registered method without a row is caught."""
import glob
import os
import os.path as osp
import re
import subprocess
import sys

from helpers import ROOT

HERE = osp.dirname(osp.abspath(__file__))
TESTS = osp.dirname(HERE)
# the shared tests that parametrise over tests/algorithm_table.py
SHARED = ('test_device_moves.py', 'test_reliability_algorithms.py',
          'test_reliability_checkpoint.py', 'test_reliability_transfer.py', 'test_fake_cuda.py',
          'test_host_readbacks.py', 'test_algorithm_table.py')


def shared_test_file(name):
    (path, ) = glob.glob(osp.join(TESTS, '**', name), recursive=True)
    return path


def run_pytest(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, TESTS,
                                                       os.environ.get('PYTHONPATH', '')]))
    return subprocess.run([sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider', '-rA',
                           *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1200)


def outcomes(report):
    """{test file basename: {'PASSED': n, 'FAILED': n, ...}} from ``-rA`` summary lines."""
    counts = {}
    for outcome, path in re.findall(r'^(PASSED|FAILED|ERROR|SKIPPED)\S* (?:\[\d+\] )?(\S+?\.py)',
                                     report, flags=re.M):
        file_counts = counts.setdefault(osp.basename(path), {})
        file_counts[outcome] = file_counts.get(outcome, 0) + 1
    return counts


def test_one_row_puts_a_new_method_under_every_shared_test():
    result = run_pytest('-p', 'dense_byol_row', '-k', 'DenseBYOL',
                        *[shared_test_file(name) for name in SHARED[:-1]])
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-4000:]
    counts = outcomes(report)
    for name in SHARED[:-1]:
        assert counts.get(name, {}).get('PASSED', 0) >= 1, (
            f'{name} ran no DenseBYOL test: it does not read tests/algorithm_table.py\n'
            f'{report[-2000:]}')
        assert not counts[name].get('FAILED') and not counts[name].get('ERROR'), report[-4000:]


def test_a_registered_method_without_a_row_fails_the_table_check():
    result = run_pytest('-p', 'dense_byol', shared_test_file('test_algorithm_table.py'))
    report = result.stdout + result.stderr
    assert result.returncode == 1, report[-3000:]
    assert 'DenseBYOL' in report and 'algorithm_table.py' in report, report[-3000:]

    with_row = run_pytest('-p', 'dense_byol_row', shared_test_file('test_algorithm_table.py'))
    assert with_row.returncode == 0, (with_row.stdout + with_row.stderr)[-3000:]
