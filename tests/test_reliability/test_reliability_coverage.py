"""No silent random weights: every tool that loads a checkpoint into a model reports its coverage
and refuses a partial load unless ``--allow-partial``; ``check_transfer`` simulates the runner's
whole start (model ``init_cfg``, ``load_from``, ``resume``) and the branch without a sidecar."""
import os.path as osp
import subprocess
import sys

import pytest
import torch
from algorithm_table import tiny_config
from helpers import ROOT, assert_fails, check, det_config, export, run_tool

import mmdense  # noqa: F401


def not_covering(kind, tiny_models, tmp_path):
    """A checkpoint that fills none of the tiny DINO model."""
    state_dict = torch.load(tiny_models['dino'][1], weights_only=True)['state_dict']
    path = str(tmp_path / f'{kind}.pth')
    if kind == 'dict-without-state_dict':
        torch.save(dict(model=state_dict), path)
    elif kind == 'another-architecture':
        return tiny_models['slotcon'][1]
    else:  # an exported backbone: tensors without prefix
        from mmdense.transfer import export_backbone
        export_backbone(tiny_models['dino'][1], path, 'mmpretrain')
    return path


TOOLS = {
    'test_dense': lambda config, ckpt, tmp_path, toy_root: (
        'tools/test_dense.py', config, ckpt, '--protocol', 'dispersion', '--data-root', toy_root,
        '--num-val', 2, '--img-size', 64, '--out', tmp_path / 'dense.json'),
    'visualize_dense': lambda config, ckpt, tmp_path, toy_root: (
        'tools/analysis_tools/visualize_dense.py', config, ckpt, '--data-root', toy_root,
        '--num-images', 2, '--img-size', 64, '--out-dir', tmp_path / 'vis'),
    'build_nn_pairs': lambda config, ckpt, tmp_path, toy_root: (
        'tools/misc/build_nn_pairs.py', config, ckpt, '--out', tmp_path / 'nn.json', '--topk',
        2, '--img-size', 64, '--num-workers', 0, '--data-root', toy_root, '--model-config',
        config),
}
CASES = [('test_dense', kind) for kind in ('dict-without-state_dict', 'another-architecture',
                                          'exported-backbone')] + [
    ('visualize_dense', 'exported-backbone'), ('build_nn_pairs', 'exported-backbone')]


@pytest.mark.parametrize('tool,kind', CASES)
def test_a_checkpoint_that_does_not_cover_the_model_is_refused(tool, kind, tiny_models, toy_root,
                                                              tmp_path, capsys):
    config = tiny_models['dino'][0]
    args = TOOLS[tool](config, not_covering(kind, tiny_models, tmp_path), tmp_path, toy_root)
    assert run_tool(*args) == 2
    captured = capsys.readouterr()
    assert 'covers only 0/' in captured.err and '--allow-partial' in captured.err
    assert captured.err.count('\n') == 1 and 'Traceback' not in captured.err
    assert run_tool(*args, '--allow-partial') == 0  # the user insists: it runs, and says so
    assert 'coverage: loaded 0/' in capsys.readouterr().out


def test_a_full_checkpoint_adds_only_a_coverage_line(tiny_models, toy_root, tmp_path, capsys):
    config, checkpoint = tiny_models['dino']
    assert run_tool(*TOOLS['test_dense'](config, checkpoint, tmp_path, toy_root)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith('coverage: loaded ')
    loaded, expected = lines[0].split()[2].split('/')
    assert loaded == expected and int(loaded) > 0
    assert 'tensors of the evaluated backbone' in lines[0]
    assert lines[1].startswith('protocol') and lines[-1].startswith('results written to')


def test_a_slotcon_checkpoint_in_visualize_slots_needs_the_whole_model(tiny_models, toy_root,
                                                                      tmp_path, capsys):
    config, checkpoint = tiny_models['slotcon']
    weights = torch.load(checkpoint, weights_only=True)
    weights['state_dict'] = {k: v for k, v in weights['state_dict'].items()
                             if not k.startswith('head.')}  # the prototypes are lost
    torch.save(weights, tmp_path / 'no_head.pth')
    args = ('tools/analysis_tools/visualize_slots.py', config, tmp_path / 'no_head.pth',
            osp.join(toy_root, 'images', 'val'), '--out', tmp_path / 'slots', '--size', 64,
            '--max-images', 2)
    assert run_tool(*args) == 2
    assert 'no_head.pth covers only' in capsys.readouterr().err


def train(config, work_dir, *extra):
    return subprocess.run([sys.executable, osp.join(ROOT, 'tools/train.py'), config,
                           '--work-dir', work_dir, *extra], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_train_refuses_a_load_from_of_another_architecture(tiny_models, toy_root, tmp_path):
    config = tmp_path / 'dino.py'
    tiny_config('DINO', toy_root, max_iters=1).dump(str(config))
    load_from = f'load_from={tiny_models["slotcon"][1]}'
    result = train(str(config), str(tmp_path / 'refused'), '--cfg-options', load_from)
    assert result.returncode == 2, result.stderr[-3000:]
    assert 'covers only 0/' in result.stderr and 'tensors of the backbones' in result.stderr
    assert not (tmp_path / 'refused' / 'iter_1.pth').exists()
    result = train(str(config), str(tmp_path / 'allowed'), '--cfg-options', load_from,
                   '--allow-partial')
    assert result.returncode == 0, result.stderr[-3000:]
    assert '--allow-partial: going on' in result.stdout + result.stderr


@pytest.fixture(scope='module')
def detector(dino, tmp_path_factory):
    """A full Mask R-CNN checkpoint of the toy ViT detector (random weights)."""
    from mmdense.transfer.downstream import build_model, set_backbone_init
    path = tmp_path_factory.mktemp('detector') / 'mask_rcnn.pth'
    torch.manual_seed(5)
    cfg = det_config()
    set_backbone_init(cfg, None)
    model = build_model(cfg)
    model.init_weights()
    torch.save(dict(meta=dict(epoch=12), state_dict=model.state_dict()), path)
    return str(path)


def test_load_from_a_full_detector_overwrites_the_export(dino, detector):
    cfg = det_config()
    cfg.load_from = detector
    report = check(cfg, export(dino, 'mmdet'))
    assert_fails(report, f'load_from={detector} is loaded after the init')
    assert set(report.statuses.values()) == {'overwritten', 'new'}


def test_a_model_level_pretrained_init_overwrites_the_export(dino, detector):
    cfg = det_config()
    cfg.model.init_cfg = dict(type='Pretrained', checkpoint=detector)
    report = check(cfg, export(dino, 'mmdet'))
    assert_fails(report, 'are overwritten after loading')
    assert_fails(report, f'model.init_cfg loads {detector}')


def test_resume_replaces_the_export(dino, detector, tmp_path):
    cfg = det_config()
    cfg.resume, cfg.work_dir = True, str(tmp_path)
    (tmp_path / 'last_checkpoint').write_text(detector)
    assert_fails(check(cfg, export(dino, 'mmdet')), 'resume=True: the runner resumes')
    cfg.work_dir = str(tmp_path / 'empty')  # nothing to resume: the run starts from the init
    assert check(cfg, export(dino, 'mmdet')).ok


def test_the_student_branch_of_a_raw_checkpoint_is_refused_unless_asked_for(dino):
    cfg = det_config()
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=dino.path,
                                       prefix='backbone.')
    assert_fails(check(cfg, dino.path), 'the init loads the student one')
    assert check(cfg, dino.path, branch='student').ok
    cfg.model.backbone.init_cfg.prefix = 'teacher.module.backbone.'
    report = check(cfg, dino.path)
    assert report.ok and 'loads the teacher one' in report.format()


def test_a_nan_tensor_is_named_as_such(dino, tmp_path):
    weights = torch.load(export(dino, 'mmdet'), weights_only=True)
    weights['ln1.weight'] = torch.full_like(weights['ln1.weight'], float('nan'))
    torch.save(weights, tmp_path / 'nan.pth')
    report = check(det_config(), str(tmp_path / 'nan.pth'), branch='teacher')
    assert_fails(report, "1 backbone tensors hold NaN or Inf values in the file "
                 "({'non-finite': 1}), e.g. ['ln1.weight']")
    assert not any('random init' in failure for failure in report.failures)
