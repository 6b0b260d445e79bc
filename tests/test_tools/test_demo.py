"""tools/demo.py and its library (mmdense.apis): schedules and their commands, the scores and
margins, the tiny end-to-end run."""
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys
import time

import pytest
from helpers import ROOT
from mmengine.config import Config

from mmdense.apis import METHOD_CONFIGS, SCHEDULES, SCORES, summarise
from mmdense.apis.demo_steps import lr_schedule_options

_spec = importlib.util.spec_from_file_location('demo', osp.join(ROOT, 'tools', 'demo.py'))
demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo)


def test_device_picks_the_schedule_unless_one_is_named():
    assert demo.parse_args(['--device', 'cpu']).schedule == 'cpu'
    assert demo.parse_args(['--device', 'cuda']).schedule == 'gpu'
    assert demo.parse_args(['--device', 'cuda', '--schedule', 'tiny']).schedule == 'tiny'


def recorded_commands(schedule, tmp_path, device='cpu'):
    args = demo.parse_args(['--device', device, '--schedule', schedule, '--work-dir',
                            str(tmp_path), '--data-root', 'data/x'])
    runner = demo.steps_of(args)
    commands = []
    runner.run = lambda cmd, *args, **kwargs: commands.append(cmd)
    runner.pretrain_slotcon()
    runner.cotap_recipe()
    return runner, commands


def options(command):
    return dict(item.split('=', 1) for item in command[command.index('--cfg-options') + 1:])


def test_gpu_schedule_runs_the_same_steps_longer(tmp_path):
    cpu_runner, cpu = recorded_commands('cpu', tmp_path / 'cpu')
    gpu_runner, gpu = recorded_commands('gpu', tmp_path / 'gpu', device='cuda')
    # the same tools and configs in the same order
    assert [c[:3] for c in cpu] == [c[:3] for c in gpu]
    assert [c[1] for c in cpu] == ['tools/train.py', 'tools/train.py',
                                   'tools/misc/build_nn_pairs.py', 'tools/train.py']
    slotcon_cpu, slotcon_gpu = options(cpu[0]), options(gpu[0])
    assert int(slotcon_gpu['train_cfg.max_epochs']) >= 10 * int(slotcon_cpu['train_cfg.max_epochs'])
    # the cosine schedule ends with the run, whatever its length, and starts where the warm-up
    # ends: the options name the config's entries of those types
    schedulers = [entry['type'] for entry in Config.fromfile(
        osp.join(ROOT, cpu[0][2])).param_scheduler]
    ramp = f'param_scheduler.{schedulers.index("LinearLR")}'
    cosine = f'param_scheduler.{schedulers.index("CosineAnnealingLR")}'
    for slotcon in (slotcon_cpu, slotcon_gpu):
        assert slotcon[f'{cosine}.end'] == slotcon['train_cfg.max_epochs']
        begin, length = (float(slotcon[f'{cosine}.{key}']) for key in ('begin', 'T_max'))
        assert begin + length == float(slotcon['train_cfg.max_epochs'])
        assert float(slotcon[f'{ramp}.end']) == begin
    assert int(options(gpu[3])['train_cfg.max_iters']) > int(options(cpu[3])['train_cfg.max_iters'])
    assert gpu[2][gpu[2].index('--device') + 1] == 'cuda'
    # on the CPU the GPU is hidden from MMEngine; on cuda the environment is left alone
    assert cpu_runner.env['CUDA_VISIBLE_DEVICES'] == ''
    assert gpu_runner.env.get('CUDA_VISIBLE_DEVICES') == os.environ.get('CUDA_VISIBLE_DEVICES')


def test_the_lr_schedule_is_set_by_scheduler_type_not_position(tmp_path):
    config = tmp_path / 'cosine_first.py'
    config.write_text("param_scheduler = [dict(type='CosineAnnealingLR', begin=1, end=6),\n"
                      "                   dict(type='LinearLR', start_factor=0.1, end=1)]\n")
    options = dict(option.split('=') for option in lr_schedule_options(str(config), 0.5, 3))
    assert options == {'param_scheduler.1.end': '0.5', 'param_scheduler.0.begin': '0.5',
                       'param_scheduler.0.T_max': '2.5', 'param_scheduler.0.end': '3'}
    twice = tmp_path / 'two_cosines.py'
    twice.write_text("param_scheduler = [dict(type='LinearLR', end=1),\n"
                     "                   dict(type='CosineAnnealingLR', begin=1, end=3),\n"
                     "                   dict(type='CosineAnnealingLR', begin=3, end=6)]\n")
    with pytest.raises(ValueError, match='2 entries of type CosineAnnealingLR'):
        lr_schedule_options(str(twice), 1, 6)


def test_tiny_schedule_is_the_gpu_schedule_at_test_size():
    tiny, gpu = SCHEDULES['tiny'], SCHEDULES['gpu']
    assert tiny.scores == gpu.scores == SCORES  # the linear probe and k-means run too
    assert tiny.num_train < gpu.num_train and tiny.slotcon_epochs < gpu.slotcon_epochs


def test_timed_steps_record_wall_and_cpu_time_of_subprocesses(tmp_path):
    runner = demo.steps_of(demo.parse_args(['--device', 'cpu', '--work-dir', str(tmp_path)]))
    spin = 'import time\nstart = time.process_time()\nwhile time.process_time() - start < 0.5: pass'
    runner.timed('spin', subprocess.check_call, [sys.executable, '-c', spin])
    # the subprocess's CPU time counts (the training runs are subprocesses)
    assert runner.times['spin']['cpu'] >= 0.5
    assert runner.times['spin']['wall'] >= 0.5
    runner.timed('sleep', time.sleep, 0.3)
    assert runner.times['sleep']['wall'] >= 0.3 and runner.times['sleep']['cpu'] < 0.1


def test_resume_demo_skips_a_finished_run(tmp_path):
    args = demo.parse_args(['--device', 'cpu', '--schedule', 'tiny', '--work-dir',
                            str(tmp_path), '--resume-demo'])
    runner = demo.steps_of(args)
    commands = []
    runner.run = lambda cmd, *args, **kwargs: commands.append(cmd)
    checkpoint = runner.pretrain_slotcon()
    assert len(commands) == 1  # nothing to reuse yet
    os.makedirs(osp.dirname(checkpoint))
    open(checkpoint, 'w').close()
    runner.pretrain_slotcon()
    assert len(commands) == 1


def test_margins_are_in_standard_deviations_of_the_draws():
    results = {'pretrained': dict(knn=0.30), 'random init 0': dict(knn=0.10),
               'random init 1': dict(knn=0.12), 'random init 2': dict(knn=0.14)}
    row = summarise(results)['knn']
    # draws 0.10, 0.12, 0.14: mean 0.12, sample std 0.02
    assert row['draws'] == [0.10, 0.12, 0.14]
    assert row['mean'] == pytest.approx(0.12) and row['std'] == pytest.approx(0.02)
    assert row['margin_over_max_std'] == pytest.approx((0.30 - 0.14) / 0.02)
    assert row['margin_over_mean_std'] == pytest.approx((0.30 - 0.12) / 0.02)


def test_texture_period_changes_the_images_and_is_recorded(tmp_path):
    from mmdense.datasets.toy_scenes import generate_toy_scenes, toy_scenes_exist
    import cv2
    default, wide = tmp_path / 'default', tmp_path / 'wide'
    generate_toy_scenes(str(default), num_train=2, num_val=1, img_size=64, class_hues=False)
    generate_toy_scenes(str(wide), num_train=2, num_val=1, img_size=64, class_hues=False,
                        texture_period=(6, 8))
    image = 'images/train/000000.jpg'
    assert (cv2.imread(str(default / image)) != cv2.imread(str(wide / image))).any()
    # the same objects in the same places: only the textures differ
    semantic = 'semantic/train/000000.png'
    assert (cv2.imread(str(default / semantic)) == cv2.imread(str(wide / semantic))).all()
    assert toy_scenes_exist(str(wide), texture_period=(6, 8))
    assert not toy_scenes_exist(str(wide))
    assert not toy_scenes_exist(str(default), texture_period=(6, 8))
    with pytest.raises(ValueError, match='texture_period'):
        generate_toy_scenes(str(tmp_path / 'bad'), texture_period=(8, 6))


def test_the_demo_writes_colour_free_textures_with_large_objects(tmp_path):
    """The demo's data (``TEXTURE_DATA``): random hues, 4-8 px textures and objects of
    circumradius 0.12-0.35 of the image, which cover over a fifth of the labelled pixels
    (PIL-read label maps; the default radii 0.06-0.30 leave 14 % of these 48 images')."""
    import numpy as np
    from PIL import Image
    data = tmp_path / 'data'
    args = demo.parse_args(['--device', 'cpu', '--schedule', 'tiny', '--work-dir',
                            str(tmp_path / 'work'), '--data-root', str(data)])
    demo.steps_of(args).make_data()
    summary = json.loads((data / 'meta' / 'summary.json').read_text())
    assert summary['class_hues'] is False and summary['texture_period'] == [4.0, 8.0]
    assert summary['object_radius'] == [0.12, 0.35]
    labels = np.stack([np.asarray(Image.open(path))
                       for path in sorted((data / 'semantic' / 'train').iterdir())])
    labelled = labels[labels != 255]
    assert len(labels) == SCHEDULES['tiny'].num_train and (labelled > 0).mean() > 0.2


def test_tiny_demo_runs_end_to_end_and_resumes(tmp_path):
    """Every step of the demo on CPU with the tiny schedule: scores of the pretrained model and
    of both random draws, pictures, loss curves and the report; a second run with
    --resume-demo reuses the data and the checkpoints."""
    work, data = tmp_path / 'demo', tmp_path / 'data'
    command = [sys.executable, 'tools/demo.py', '--device', 'cpu', '--schedule', 'tiny',
               '--work-dir', str(work), '--data-root', str(data)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads((work / 'scores.json').read_text())
    assert sorted(scores) == ['pretrained', 'random init 0', 'random init 1']
    assert set(scores['pretrained']) == set(SCORES) | {'grid_ceiling'}
    for name in ('prototypes.png', 'features_pca.png', 'similarity.png', 'losses.png'):
        assert (work / name).stat().st_size > 1000
    report = (work / 'report.md').read_text()
    assert '![prototype maps](prototypes.png)' in report and '| kNN (k=10) |' in report
    assert '| step | wall s | CPU s |' in report and '| total |' in report
    assert 'margin over max' in result.stdout and 's CPU' in result.stdout
    # the console: one line per step, the table and the report's path; the runs' own logs
    # (MMEngine's, with its per-parameter optimizer settings) are in their work dirs
    lines = result.stdout.splitlines()
    assert all(line.startswith('[demo] ') for line in lines), lines
    assert [line.split(':')[0] for line in lines if line.startswith('[demo] 1/5')] == \
        ['[demo] 1/5 toy textures']
    assert any(line.startswith('[demo] 5/5 pictures: ') for line in lines), lines
    assert len(lines) < 30 and 'lr_mult' not in result.stdout + result.stderr
    assert 'Epoch(train)' in (work / 'pretrain_slotcon' / 'console.log').read_text()
    assert 'Iter(train)' in (work / 'pretrain_cotap' / 'console.log').read_text()
    checkpoint = work / 'pretrain_slotcon' / 'epoch_1.pth'
    image = data / 'images' / 'train' / '000000.jpg'
    stamps = checkpoint.stat().st_mtime_ns, image.stat().st_mtime_ns
    result = subprocess.run(command + ['--resume-demo'], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (checkpoint.stat().st_mtime_ns, image.stat().st_mtime_ns) == stamps
    assert 'reusing the toy textures' in result.stdout


def test_methods_name_every_method_in_run_order():
    assert demo.parse_args(['--methods', 'all']).methods == \
        ['SlotCon', 'DSC', 'DINO', 'CoTAP', 'ADCLR', 'iBOT']
    # CoTAP post-trains DINO's teacher: DINO comes along, and first
    assert demo.parse_args(['--methods', 'cotap,dsc']).methods == ['DSC', 'DINO', 'CoTAP']
    assert demo.parse_args([]).methods is None  # the demo as it is
    assert demo.parse_args(['--methods', 'all']).work_dir == 'work_dirs/demo_methods'
    with pytest.raises(SystemExit):
        demo.parse_args(['--methods', 'dino,byol'])


def test_methods_commands_train_every_demo_config_on_the_demo_data(tmp_path):
    args = demo.parse_args(['--device', 'cpu', '--methods', 'all', '--work-dir', str(tmp_path),
                            '--data-root', 'data/x'])
    runner = demo.steps_of(args)
    commands = []
    runner.run = lambda cmd, *args, **kwargs: commands.append(cmd)
    for method in args.methods:
        if method == 'CoTAP':
            runner.method_pairs()
        runner.pretrain(method)
    trained = [c for c in commands if c[1] == 'tools/train.py']
    assert [c[2] for c in trained] == [METHOD_CONFIGS[m] for m in args.methods]
    for command in trained:
        cfg, given = Config.fromfile(osp.join(ROOT, command[2])), options(command)
        # every option replaces a key the config has (a misspelt one would be added, unused)
        for key in given:
            node = cfg
            for part in key.split('.')[:-1]:
                node = node[int(part)] if part.isdigit() else node[part]
            assert key.split('.')[-1] in node, (command[2], key)
        assert 'data/x' in [value for key, value in given.items() if key.endswith('data_root')]
        # the cpu schedule keeps each demo config's own length
        unit = 'iters' if 'max_iters' in cfg.train_cfg else 'epochs'
        assert int(given[f'train_cfg.max_{unit}']) == cfg.train_cfg[f'max_{unit}']
    pairs = next(c for c in commands if c[1] == 'tools/misc/build_nn_pairs.py')
    cotap = options(trained[args.methods.index('CoTAP')])
    dino_checkpoint = runner.checkpoints['DINO']
    assert pairs[3] == dino_checkpoint == cotap['model.backbone_checkpoint.path']
    assert pairs[pairs.index('--out') + 1] == cotap['train_dataloader.dataset.neighbours_file']
    assert dino_checkpoint == str(tmp_path / 'pretrain_dino' / 'epoch_1.pth')


def test_methods_tiny_run_scores_dino_and_cotap_against_random_inits(tmp_path):
    """``--methods cotap --schedule tiny`` end to end: DINO, its neighbour pairs, CoTAP from it,
    each scored against two random draws; the table, methods.json and the console."""
    work, data = tmp_path / 'methods', tmp_path / 'data'
    command = [sys.executable, 'tools/demo.py', '--device', 'cpu', '--schedule', 'tiny',
               '--methods', 'cotap', '--work-dir', str(work), '--data-root', str(data)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((work / 'methods.json').read_text())
    assert list(record['evidence']) == ['DINO', 'CoTAP']
    for method, row in record['evidence'].items():
        assert list(row['results']) == ['pretrained', 'random init 0', 'random init 1']
        knn = row['margins']['knn']
        assert knn['draws'] == [row['results'][f'random init {i}']['knn'] for i in range(2)]
        assert 0 < knn['pretrained'] <= 1 and 'loss' in row['losses']
        assert osp.isfile(row['checkpoint'])
        assert row['times']['pretrain']['cpu'] > 0
        # the student (not transferred) against the same draws
        other = row['other_branch']
        assert other['branch'] == 'student' and other['margins']['knn']['draws'] == knn['draws']
        assert other['margins']['knn']['pretrained'] == other['scores']['knn']
    assert record['evidence']['DINO']['checkpoint'].endswith('epoch_1.pth')
    assert record['evidence']['CoTAP']['checkpoint'].endswith('iter_2.pth')
    table = (work / 'methods.md').read_text()
    assert table.count('\n| DINO |') == table.count('\n| CoTAP |') == 1
    assert table.count('| student 0.') == 2
    lines = result.stdout.splitlines()
    assert all(line.startswith('[demo] ') for line in lines), lines
    assert '[demo] 5/6 CoTAP pretraining' in result.stdout and 'lr_mult' not in result.stdout
    assert 'Iter(train)' in (work / 'pretrain_cotap' / 'console.log').read_text()
