"""tools/analysis_tools/benchmark.py runs a config's real training step and reports its cost."""
import json
import os.path as osp
import subprocess
import sys

from algorithm_table import tiny_config
from helpers import ROOT


def test_benchmark_reports_timing_memory_and_flops(toy_root, tmp_path):
    config = tmp_path / 'tiny.py'
    tiny_config('DINO', toy_root, max_iters=10).dump(str(config))
    out = tmp_path / 'result.json'
    cmd = [sys.executable, osp.join(ROOT, 'tools/analysis_tools/benchmark.py'), str(config),
           '--iters', '2', '--warmup', '1', '--batch-size', '2', '--count-readbacks', '--count-ops',
           '--out',
           str(out)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report['batch_size'] == 2 and report['iters'] == 2
    assert report['median_s_per_iter'] > 0
    assert report['images_per_s'] == 2 / report['median_s_per_iter']
    assert report['peak_memory_mb'] > 0
    assert report['gflops_per_image'] > 0
    # one more step counted for host read-backs: none of them in mmdense's own code
    sites = report['host_readback_sites']
    assert report['host_readbacks_per_step'] == sum(sites.values())
    assert not [site for site in sites if ' at mmdense/' in site], sites
    # one more step counted for aten operators: a real step runs matmuls, backward and the
    # optimizer, and the top list is a subset of the total
    ops = report['aten_ops_top']
    assert report['aten_ops_per_step'] >= sum(ops.values()) > 0
    assert any(op.startswith('aten.mm') or op.startswith('aten.addmm') for op in ops)
    assert not set(ops) & {'aten.view.default', 'aten.detach.default'}
    # ... and by call site: the backward pass, the optimizer and DINO's own head
    sites = report['aten_ops_by_site']
    assert sum(sites.values()) <= report['aten_ops_per_step']
    assert 'torch/autograd/graph.py:_engine_run_backward' in sites
    assert any(site.startswith('torch/optim/') for site in sites), sites
    assert 'mmdense/models/heads/dino_head.py:forward' in sites


def test_op_sites_are_module_paths_whatever_the_checkout_is_called(tmp_path):
    """A checkout cloned as ``mmdense/`` holding its venv (``make install``'s layout): torch's
    sites are named from site-packages, mmdense's from the checkout, not at the first
    ``/mmdense/`` in the path."""
    import inspect

    import torch

    from mmdense.models.heads.dino_head import DINOHead
    from mmdense.utils.op_counter import _short
    checkout = tmp_path / 'mmdense'
    site_packages = checkout / '.venv' / 'lib' / 'python3.11' / 'site-packages'
    roots = (str(site_packages) + osp.sep, str(checkout) + osp.sep)
    assert _short(str(site_packages / 'torch' / 'optim' / 'sgd.py'), roots) == \
        'torch/optim/sgd.py'
    assert _short(str(site_packages / 'mmpretrain' / 'models' / 'x.py'), roots) == \
        'mmpretrain/models/x.py'
    assert _short(str(checkout / 'mmdense' / 'models' / 'x.py'), roots) == 'mmdense/models/x.py'
    assert _short('/usr/lib/python3.11/contextlib.py', roots) == 'contextlib.py'
    # this interpreter's own packages, wherever they and the checkout are
    assert _short(inspect.getfile(torch.optim.SGD)) == 'torch/optim/sgd.py'
    assert _short(inspect.getfile(DINOHead)) == 'mmdense/models/heads/dino_head.py'
