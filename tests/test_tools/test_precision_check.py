"""tools/analysis_tools/precision_check.py: its core on the algorithm table's tiny DINO for 2
steps in fp32, fp16 and bf16 (CPU autocast), with and without the fp32 losses."""
import copy
import importlib.util
import json
import math
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.registry import DefaultScope

from mmdense.utils import register_all_modules
from algorithm_table import ALGORITHMS, tiny_config
from helpers import ROOT

SCRIPT = osp.join(ROOT, 'tools', 'analysis_tools', 'precision_check.py')
pytestmark = pytest.mark.usefixtures('one_thread')


def load_tool():
    spec = importlib.util.spec_from_file_location('precision_check', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_algorithm_can_be_checked():
    assert set(load_tool().gpu_check.RECIPES) == set(ALGORITHMS)


def test_help_names_the_precisions_and_the_switch():
    result = subprocess.run([sys.executable, SCRIPT, '--help'], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    for word in ('fp32', 'fp16', 'bf16', '--fp32-losses', '--device', 'relative L2'):
        assert word in result.stdout


@pytest.fixture(scope='module')
def dino(toy_root):
    """The tool, the algorithm table's tiny DINO config and its first 2 batches."""
    tool = load_tool()
    cfg = tiny_config('DINO', toy_root, max_iters=2)
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmdense'):
        batches = tool.gpu_check.fetch_batches(cfg, 2)
    return tool, cfg, batches


@pytest.fixture(scope='module')
def report(dino):
    tool, cfg, batches = dino
    lines = []
    with DefaultScope.overwrite_default_scope('mmdense'):
        result = tool.check_algorithm('DINO', cfg, batches,
                                      tool.run_plan(['fp32', 'fp16', 'bf16'], 'both'), 'cpu',
                                      seed=0, log=lines.append)
    return tool, result, lines


def test_report_has_every_run_with_per_step_losses(report):
    tool, result, lines = report
    assert list(result) == ['fp32 reference', 'fp32', 'fp16, fp32 losses on',
                            'fp16, fp32 losses off', 'bf16, fp32 losses on',
                            'bf16, fp32 losses off']
    for name, run in result.items():
        assert list(run['losses']) == ['loss'] and len(run['losses']['loss']) == 2, name
        assert all(math.isfinite(v) for v in run['losses']['loss']), name
        if name != 'fp32 reference':
            assert len(run['loss_delta']) == 2
            assert {'grad_rel_l2', 'grad_cosine'} <= set(run)
    assert result['fp16, fp32 losses on']['loss_scale'] > 0
    assert sum('step 2/2' in line for line in lines) == 6  # progress of every run
    json.dumps(result)  # what --out writes
    table = tool.format_table(dict(DINO=result), steps=2).splitlines()
    assert len(table) == 2 + 6 and table[3].startswith('| DINO | fp32 |  | ')


def test_fp32_against_fp32_is_exact_and_low_precision_is_not(report):
    _, result, _ = report
    fp32 = result['fp32']
    assert fp32['grad_rel_l2'] == 0 and fp32['grad_cosine'] == pytest.approx(1, abs=1e-12)
    assert fp32['loss_delta'] == [0, 0]
    for name in ('fp16, fp32 losses on', 'bf16, fp32 losses on', 'bf16, fp32 losses off'):
        run = result[name]
        assert 0 < run['grad_rel_l2'] < 0.5 and 0.8 < run['grad_cosine'] < 1, name
    # the switch changes what runs in low precision: the gradients differ
    assert result['bf16, fp32 losses on']['grad_rel_l2'] != \
        result['bf16, fp32 losses off']['grad_rel_l2']


def test_gradient_error_is_measured_against_the_reference():
    tool = load_tool()
    reference = torch.tensor([3.0, 4.0], dtype=torch.float64)
    error = tool.gradient_error(torch.tensor([3.0, 5.0], dtype=torch.float64), reference)
    assert error['rel_l2'] == pytest.approx(1 / 5)
    assert error['cosine'] == pytest.approx((9 + 20) / (5 * 34 ** 0.5))
    with pytest.raises(ValueError, match='different parameter sets'):
        tool.gradient_error(torch.zeros(3, dtype=torch.float64), reference)


def test_an_overflowing_fp16_step_runs_again_from_the_state_before_it(dino, monkeypatch):
    """At a loss scale of 2^30 the scaled fp16 gradient overflows; the step is run again at
    half the scale from the state before it (EMA teacher, DINO centre), so its gradient is the
    one a fitting scale gives (powers of two scale fp16 values exactly)."""
    tool, cfg, batches = dino
    model = tool.gpu_check.build_model(cfg, 'cpu')
    fitting = tool.train_steps(copy.deepcopy(model), cfg.optim_wrapper, batches[:1], 'fp16',
                               'cpu', seed=0, fp32_losses=True)
    scaler = torch.amp.GradScaler
    monkeypatch.setattr(torch.amp, 'GradScaler',
                        lambda device: scaler(device, init_scale=2.0**30))
    retried = tool.train_steps(copy.deepcopy(model), cfg.optim_wrapper, batches[:1], 'fp16',
                               'cpu', seed=0, fp32_losses=True)
    assert retried['overflow_retries'] > fitting['overflow_retries']
    assert retried['losses'] == fitting['losses']
    error = tool.gradient_error(retried['first_gradient'], fitting['first_gradient'])
    assert error['rel_l2'] < 1e-3
