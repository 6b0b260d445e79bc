"""No code from checkpoints: a weights-only-safe checkpoint whose config text (``meta.cfg``,
``meta.config``) would create a marker folder is given to every tool and API that reads
checkpoints; the marker never appears, and the tools that need the model config still work,
reading it as plain data."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

import mmdense  # noqa: F401  (allow-lists mmengine checkpoints for weights_only loads)
from algorithm_table import tiny_config
from helpers import LinearModel, det_config, run_train, run_tool

PAYLOAD = '\npayload = __import__("os").makedirs({marker!r}, exist_ok=True)\n'


def poison(path, marker, out=None):
    """Append the payload to the checkpoint's config text (``meta.cfg`` and ``meta.config``);
    the file stays loadable with ``weights_only=True``."""
    checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    meta = checkpoint.setdefault('meta', {})
    meta['cfg'] = meta.get('cfg', '') + PAYLOAD.format(marker=marker)
    meta['config'] = PAYLOAD.format(marker=marker)
    torch.save(checkpoint, out or path)
    torch.load(out or path, map_location='cpu', weights_only=True)
    return str(out or path)


def export_api(files, evil, tmp_path, toy_root):
    from mmdense.transfer import export_backbone
    sidecar = export_backbone(evil, str(tmp_path / 'out.pth'), 'mmdet')
    assert sidecar['algorithm'] == 'DINO' and sidecar['branch'] == 'teacher'
    return 0


def check_transfer_api(files, evil, tmp_path, toy_root):
    from mmdense.transfer.check import check_transfer
    cfg = det_config()
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=evil,
                                       prefix='teacher.module.backbone.')
    cfg.load_from = evil
    check_transfer(cfg, evil)
    return 0


def check_transfer_tool(files, evil, tmp_path, toy_root):
    config = tmp_path / 'det.py'
    det_config().dump(str(config))
    return run_tool('tools/analysis_tools/check_transfer.py', config, evil, '--branch', 'teacher',
                    '--cfg-options', f'load_from={evil}')


ENTRIES = {
    'export-api': (export_api, 0),
    'export-tool': (lambda files, evil, tmp_path, toy_root: run_tool(
        'tools/model_converters/export.py', evil, tmp_path / 'out.pth', '--target', 'mmdet'), 0),
    'build_nn_pairs': (lambda files, evil, tmp_path, toy_root: run_tool(
        'tools/misc/build_nn_pairs.py', files['dino'][0], evil, '--out', tmp_path / 'nn.json',
        '--topk', 2, '--img-size', 64, '--num-workers', 0, '--data-root', toy_root), 0),
    'test_dense': (lambda files, evil, tmp_path, toy_root: run_tool(
        'tools/test_dense.py', files['dino'][0], evil, '--protocol', 'dispersion', '--data-root',
        toy_root, '--num-val', 2, '--img-size', 64, '--out', tmp_path / 'dense.json'), 0),
    'visualize_dense': (lambda files, evil, tmp_path, toy_root: run_tool(
        'tools/analysis_tools/visualize_dense.py', files['dino'][0], evil, '--data-root',
        toy_root, '--num-images', 2, '--img-size', 64, '--out-dir', tmp_path / 'vis'), 0),
    'visualize_slots': (lambda files, evil, tmp_path, toy_root: run_tool(
        'tools/analysis_tools/visualize_slots.py', files['slotcon'][0], evil,
        osp.join(toy_root, 'images', 'val'), '--out', tmp_path / 'slots', '--size', 64,
        '--max-images', 2, '--rows', 2, '--top-k', 1), 0),
    'import_weights': (lambda files, evil, tmp_path, toy_root: run_tool(
        'tools/model_converters/import_weights.py', evil, tmp_path / 'imported.pth', '--from',
        'dino'), None),
    'check_transfer-api': (check_transfer_api, 0),
    'check_transfer-tool': (check_transfer_tool, None),
}


@pytest.mark.parametrize('entry', list(ENTRIES))
def test_config_text_in_a_checkpoint_never_runs(entry, tiny_models, toy_root, tmp_path):
    marker = str(tmp_path / 'payload_ran')
    model = 'slotcon' if entry == 'visualize_slots' else 'dino'
    evil = poison(tiny_models[model][1], marker, tmp_path / 'evil.pth')
    run, expected_code = ENTRIES[entry]
    code = run(tiny_models, evil, tmp_path, toy_root)
    assert not osp.exists(marker), f'{entry} executed the config text of the checkpoint'
    if expected_code is not None:
        assert code == expected_code
    Config.fromstring(torch.load(evil, weights_only=True)['meta']['cfg'], '.py')
    assert osp.isdir(marker)  # executing the text, as the old code did, runs the payload


def test_resume_never_runs_the_config_text_of_the_checkpoint(toy_root, tmp_path):
    """``--resume CKPT`` and the automatic ``--resume``: mmengine executes ``meta.config``."""
    config = tmp_path / 'dino.py'
    tiny_config('DINO', toy_root, max_iters=2).dump(str(config))
    work = tmp_path / 'work'
    run_train(str(config), str(work))
    marker = str(tmp_path / 'payload_ran')
    log = run_train(str(config), str(work), '--resume', poison(work / 'iter_2.pth', marker),
                    '--cfg-options', 'train_cfg.max_iters=3')
    assert not osp.exists(marker)
    assert 'ignored the config text' in log and 'coverage: loaded' in log
    assert (work / 'iter_3.pth').exists()
    poison(work / 'iter_3.pth', marker)  # the latest checkpoint, found by the automatic resume
    run_train(str(config), str(work), '--resume', '--cfg-options', 'train_cfg.max_iters=4')
    assert not osp.exists(marker)
    assert (work / 'iter_4.pth').exists()


def test_a_model_config_that_is_not_plain_data_is_refused_not_run(tiny_models, tmp_path):
    from mmdense.fileio.checkpoint import CheckpointReadError
    from mmdense.transfer import export_backbone
    marker = str(tmp_path / 'payload_ran')
    checkpoint = torch.load(tiny_models['dino'][1], weights_only=True)
    checkpoint['meta'] = dict(cfg=f"model = dict(type=__import__('os').makedirs({marker!r}))\n")
    torch.save(checkpoint, tmp_path / 'evil.pth')
    with pytest.raises(CheckpointReadError, match=r'evil.pth: the config text in meta.cfg is '
                       r'not plain data \(line 1: .* is not a literal\).*give the config file'):
        export_backbone(str(tmp_path / 'evil.pth'), str(tmp_path / 'out.pth'), 'mmdet')
    assert not osp.exists(marker)
    sidecar = export_backbone(str(tmp_path / 'evil.pth'), str(tmp_path / 'out.pth'), 'mmdet',
                              config=tiny_models['dino'][0])  # the user's own config file
    assert sidecar['algorithm'] == 'DINO' and not osp.exists(marker)


def test_checkpoints_record_the_model_config_as_plain_data(tmp_path):
    from mmengine.runner import Runner

    from mmdense.fileio.checkpoint import stored_model_config
    from mmdense.registry import MODELS
    MODELS.register_module(name='ReliabilityLinearModel', module=LinearModel, force=True)
    model = dict(type='ReliabilityLinearModel')
    runner = Runner.from_cfg(Config(dict(
        model=model, work_dir=str(tmp_path),
        train_dataloader=dict(dataset=[dict(inputs=torch.ones(2))] * 2, batch_size=2,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=1),
        default_hooks=dict(checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False,
                                           interval=1)),
        default_scope='mmdense')))
    runner.train()
    checkpoint = torch.load(tmp_path / 'iter_1.pth', weights_only=True)
    assert checkpoint['meta']['model_config'] == model
    checkpoint['meta']['cfg'] = 'model = dict(type="SomethingElse")'  # the record comes first
    assert stored_model_config(checkpoint, 'iter_1.pth') == model
