"""A new method is covered by every shared per-algorithm test through its record alone
(``docs/adding_a_method.md``): each shared test file parametrises over every method record, so
a record added to ``configs/<method>/metafile.yml`` (PixPro's was added so, with no other test
edit) puts its method under all of them; a registered method without a record fails
``test_algorithm_table.py``."""
import glob
import os.path as osp
import re
import subprocess
import sys

import pytest

from algorithm_table import ALGORITHMS
from helpers import ROOT

TESTS = osp.join(ROOT, 'tests')
# the shared test files that parametrise over tests/algorithm_table.py (the method records)
SHARED = ('test_device_moves.py', 'test_reliability_algorithms.py',
          'test_reliability_checkpoint.py', 'test_reliability_transfer.py', 'test_fake_cuda.py',
          'test_host_readbacks.py', 'test_gpu_check.py')


def shared_test_file(name):
    (path, ) = glob.glob(osp.join(TESTS, '**', name), recursive=True)
    return path


@pytest.fixture(scope='module')
def collected():
    """{shared test file basename: [test ids]} as pytest collects them."""
    result = subprocess.run(
        [sys.executable, '-m', 'pytest', '--collect-only', '-q', '-p', 'no:cacheprovider',
         *map(shared_test_file, SHARED)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ids = {}
    for line in result.stdout.splitlines():
        if '::' in line:
            path, test = line.split('::', 1)
            ids.setdefault(osp.basename(path), []).append(test)
    return ids


@pytest.mark.parametrize('algorithm', list(ALGORITHMS))
def test_every_shared_test_file_covers_every_record(algorithm, collected):
    mentions = re.compile(rf'[\[-]{re.escape(algorithm)}[\]-]')
    for name in SHARED:
        assert any(mentions.search(test) for test in collected.get(name, [])), (
            f'{name} collects no {algorithm} test: it does not read tests/algorithm_table.py '
            f'(the method records)')
