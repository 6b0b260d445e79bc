"""Checkpoint files in and out, for every algorithm: exported transfer files hold tensors only
and load with ``weights_only=True``; exports are atomic; a malicious pickle is refused, its
payload never run, at every place a checkpoint is read."""
import json
import os
import os.path as osp
import pickle
import subprocess
import sys

import pytest
import torch
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

import mmdense  # noqa: F401
from mmdense.registry import MODELS
from mmdense.utils import register_all_modules
from algorithm_table import ALGORITHMS, tiny_config
from helpers import ROOT, LinearModel, pickle_globals

TARGETS = {'vit': ('mmpretrain', 'mmdet', 'mmseg', 'timm'),
           'resnet': ('mmpretrain', 'mmdet', 'mmseg', 'timm', 'torchvision')}
PREFIX = dict(teacher='teacher.module.backbone.', student='backbone.')


@pytest.fixture(scope='module')
def pretrained(toy_root, tmp_path_factory):
    """Per algorithm: an MMEngine-style checkpoint (config text + weights) of its tiny model,
    teacher perturbed away from the student so that a branch mix-up shows."""
    register_all_modules(init_default_scope=False)
    folder = tmp_path_factory.mktemp('pretrained')
    paths = {}
    for algorithm in ALGORITHMS:
        cfg = tiny_config(algorithm, toy_root, 1)
        torch.manual_seed(0)
        with DefaultScope.overwrite_default_scope('mmdense'):
            model = MODELS.build(cfg.model)
        with torch.no_grad():
            for param in model.teacher.parameters():
                param.add_(0.05 * torch.randn_like(param))
        paths[algorithm] = str(folder / f'{algorithm}.pth')
        torch.save(dict(meta=dict(cfg=cfg.pretty_text, iter=1), state_dict=model.state_dict()),
                   paths[algorithm])
    return paths


def tensors_only(path):
    """What an exported file must be: ``{str: Tensor}`` whose pickle names no global beyond
    the tensor-rebuilding ones (so it loads with ``weights_only=True`` and no allow-list)."""
    state = torch.load(path, map_location='cpu', weights_only=True)
    assert isinstance(state, dict) and state
    assert all(isinstance(k, str) and type(v) is torch.Tensor for k, v in state.items())
    allowed = {'collections.OrderedDict', 'torch._utils._rebuild_tensor_v2'}
    assert {g for g in pickle_globals(path) if not g.endswith('Storage')} <= allowed
    return state


@pytest.mark.parametrize('algorithm', list(ALGORITHMS))
def test_exported_files_hold_only_the_transfer_branch_tensors(algorithm, pretrained, tmp_path):
    """Every target of the algorithm's backbone family gets the tensors of its class's
    ``default_transfer_branch``, nothing else."""
    from mmdense.transfer import export_backbone
    source = torch.load(pretrained[algorithm], map_location='cpu')['state_dict']
    branch = MODELS.get(algorithm).default_transfer_branch
    prefix = PREFIX[branch]
    backbone = {k[len(prefix):]: v for k, v in source.items() if k.startswith(prefix)}
    for target in TARGETS[ALGORITHMS[algorithm].backbone_family]:
        out = str(tmp_path / f'{target}.pth')
        sidecar = export_backbone(pretrained[algorithm], out, target)
        state = tensors_only(out)
        assert sidecar['branch'] == branch and sidecar['num_tensors'] == len(state)
        assert sum(v.numel() for v in state.values()) == sum(v.numel()
                                                             for v in backbone.values())
        with open(osp.splitext(out)[0] + '.json') as f:
            assert json.load(f)['file_sha256'] == sidecar['file_sha256']
        if target == 'mmpretrain':  # the same names: the very tensors of the branch
            assert state.keys() == backbone.keys()
            assert all(torch.equal(state[k], backbone[k]) for k in state)


def test_the_export_tool_writes_tensors_only(pretrained, tmp_path):
    out = tmp_path / 'dsc_torchvision.pth'
    result = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools/model_converters/export.py'), pretrained['DSC'],
         str(out), '--target', 'torchvision'], cwd=ROOT, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'exported the student backbone of DSC' in result.stdout
    assert 'fc.weight' not in tensors_only(str(out))


class SimulatedCrash(Exception):
    pass


def test_an_interrupted_export_keeps_the_previous_file(pretrained, tmp_path, monkeypatch):
    from mmdense.transfer import export_backbone
    out = str(tmp_path / 'backbone.pth')
    export_backbone(pretrained['DINO'], out, 'mmpretrain')
    before = {name: open(tmp_path / name, 'rb').read() for name in os.listdir(tmp_path)}

    def crash(fd):
        raise SimulatedCrash  # the new file is written, not yet synced nor renamed

    monkeypatch.setattr(os, 'fsync', crash)
    with pytest.raises(SimulatedCrash):
        export_backbone(pretrained['DINO'], out, 'mmpretrain', branch='student')
    assert sorted(os.listdir(tmp_path)) == sorted(before)  # no temporary file left behind
    assert all(open(tmp_path / name, 'rb').read() == data for name, data in before.items())
    tensors_only(out)


# ----------------------------------------------------------------------------- malicious pickles
class Payload:
    """Unpickling this runs ``os.makedirs(marker)``: the proof that a payload ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker, ))


def load_with_runner(path, work_dir, resume):
    runner = Runner(
        model=LinearModel(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=[dict(inputs=torch.ones(2))] * 4, batch_size=2,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=2), load_from=path, resume=resume,
        default_hooks=dict(checkpoint=None), default_scope='mmdense')
    runner.train()


def cotap_backbone_checkpoint(path, toy_root):
    cfg = tiny_config('CoTAP', toy_root, 1)
    cfg.model.backbone_checkpoint = dict(path=path, prefix='teacher.module.backbone.')
    with DefaultScope.overwrite_default_scope('mmdense'):
        MODELS.build(cfg.model).init_weights()


def export_tool(path, tmp_path):
    result = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools/model_converters/export.py'), path,
         str(tmp_path / 'out.pth'), '--target', 'mmdet'], cwd=ROOT, capture_output=True,
        text=True, timeout=300)
    assert result.returncode != 0
    raise pickle.UnpicklingError(result.stderr[-2000:])


ENTRY_POINTS = {
    'export': lambda path, tmp_path, toy_root: __import__(
        'mmdense.transfer', fromlist=['export_backbone']).export_backbone(
            path, str(tmp_path / 'out.pth'), 'mmdet'),
    'export-tool': lambda path, tmp_path, toy_root: export_tool(path, tmp_path),
    'import-published': lambda path, tmp_path, toy_root: __import__(
        'mmdense.transfer', fromlist=['import_published']).import_published(
            path, str(tmp_path / 'out.pth'), 'dino'),
    'cotap-backbone-checkpoint': lambda path, tmp_path, toy_root: cotap_backbone_checkpoint(
        path, toy_root),
    'runner-load-from': lambda path, tmp_path, toy_root: load_with_runner(
        path, tmp_path / 'work', resume=False),
    'runner-resume': lambda path, tmp_path, toy_root: load_with_runner(
        path, tmp_path / 'work', resume=True),
}


@pytest.mark.parametrize('entry', list(ENTRY_POINTS))
def test_a_malicious_checkpoint_is_refused_and_its_payload_never_runs(entry, pretrained,
                                                                       toy_root, tmp_path):
    checkpoint = torch.load(pretrained['CoTAP'], map_location='cpu')
    marker = str(tmp_path / 'payload_ran')
    checkpoint['meta']['note'] = Payload(marker)
    path = str(tmp_path / 'evil.pth')
    torch.save(checkpoint, path)
    with pytest.raises(pickle.UnpicklingError, match='os.makedirs') as error:
        ENTRY_POINTS[entry](path, tmp_path, toy_root)
    assert 'weights_only' in str(error.value) or 'Weights only load failed' in str(error.value)
    assert not osp.exists(marker)
    assert not osp.exists(tmp_path / 'out.pth')
    torch.load(path, map_location='cpu', weights_only=False)  # the unsafe way does run it
    assert osp.isdir(marker)
