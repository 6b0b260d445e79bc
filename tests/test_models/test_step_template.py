"""The training step template of ``TeacherStudentSelfSupervisor``: a method that implements only
its modules, its two encoders and ``compute_losses`` trains; the base checks the views, updates
the teacher once per step before encoding, runs the teacher branch without gradient, takes the
shared constructor arguments once and builds the teacher after the method's modules; the teacher
schedule's length comes from ``set_teacher_schedule`` or, under a Runner, ``TeacherScheduleHook``
(every shipped config has it through ``configs/_base_/default_runtime.py``)."""
import glob
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdense.models.algorithms.base import TeacherStudentSelfSupervisor

pytestmark = pytest.mark.usefixtures('one_thread')

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY_VIT = dict(type='mmpretrain.VisionTransformer', img_size=32, patch_size=16,
                drop_path_rate=0.5, arch=dict(embed_dims=16, num_layers=2, num_heads=2,
                                              feedforward_channels=32))


class ViewRegression(TeacherStudentSelfSupervisor):
    """A minimal method: the student's projection of each view regresses the teacher's
    projection of the other view, ``L = Σ_{(s,t)∈{(0,1),(1,0)}} mean (p_s − z_t)²``. It records
    what the template passed to its parts."""
    view_hint = 'give two views'

    def __init__(self, out_channels: int = 4, **kwargs) -> None:
        super().__init__(**kwargs)
        self.projector = nn.Linear(16, out_channels)  # built after the base's __init__
        self.calls = []

    def student_modules(self) -> dict:
        return dict(backbone=self.backbone, projector=self.projector)

    def view_bounds(self):
        return 2, 2

    @staticmethod
    def project(modules, views):
        return [modules['projector'](modules['backbone'](view)[-1]) for view in views]

    def encode_teacher(self, batch):
        self.calls.append(('teacher', torch.is_grad_enabled(), self.teacher.num_updates,
                           self.teacher['projector'].weight.detach().clone()))
        return self.project(self.teacher, batch.views)

    def encode_student(self, batch):
        self.calls.append(('student', torch.is_grad_enabled(), self.teacher.num_updates, None))
        return self.project(self.student_modules(), batch.views)

    def compute_losses(self, student, teacher, batch):
        assert not any(t.requires_grad for t in teacher)
        assert all(s.requires_grad for s in student)
        return dict(loss=sum(F.mse_loss(student[s], teacher[t]) for s, t in ((0, 1), (1, 0))))


def two_views(batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, 32, 32, generator=g) for _ in range(2)]


def test_a_method_with_only_encoders_and_losses_trains_with_one_teacher_update_per_step():
    torch.manual_seed(0)
    model = ViewRegression(backbone=TINY_VIT, teacher_momentum=0.9)
    model.init_weights()
    model.train()
    assert set(model.teacher.module) == {'backbone', 'projector'}  # built after the projector
    model.set_teacher_schedule(10)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    students = []
    for step in range(3):
        students.append(model.projector.weight.detach().clone())
        losses = model.loss(two_views(seed=step), None)
        optimizer.zero_grad()
        losses['loss'].backward()
        optimizer.step()
        assert model.teacher.num_updates == step + 1  # exactly one update per step
    assert all(p.grad is None for p in model.teacher.parameters())
    # teacher then student, the teacher under no_grad, both after this step's update
    assert [call[:3] for call in model.calls] == [
        ('teacher', False, 1), ('student', True, 1), ('teacher', False, 2),
        ('student', True, 2), ('teacher', False, 3), ('student', True, 3)]
    # the teacher the step encodes with: a copy of the student at step 0, then
    # m_k·teacher + (1 − m_k)·student-before-the-step, m_k = 1 − 0.1·(1 + cos(πk/10))/2
    expected = students[0]
    assert torch.equal(model.calls[0][3], expected)
    for k in (1, 2):
        m = 1 - 0.1 * (1 + math.cos(math.pi * k / 10)) / 2
        expected = m * expected + (1 - m) * students[k]
        assert torch.allclose(model.calls[2 * k][3], expected, atol=1e-6), k


def test_wrong_view_count_and_missing_schedule_are_refused_before_the_teacher_moves():
    model = ViewRegression(backbone=TINY_VIT)
    with pytest.raises(ValueError, match=r'^ViewRegression needs exactly 2 views per image, '
                                         r'got 3: give two views$'):
        model.loss(two_views() + two_views()[:1], None)
    with pytest.raises(RuntimeError, match=r'call model\.set_teacher_schedule\(total_steps\)'):
        model.loss(two_views(), None)
    assert model.teacher.num_updates == 0 and model.calls == []


def test_shared_arguments_are_taken_once_with_the_class_defaults():
    model = ViewRegression(backbone=TINY_VIT)
    assert (model.teacher.momentum, model.teacher.end_momentum) == (1 - 0.996, 1 - 1.0)
    assert model.teacher.buffers_mode == 'copy' and model.feat_branch == 'teacher'

    class SlowTeacher(ViewRegression):
        default_teacher_momentum = 0.99
        default_teacher_buffers = 'own'
        default_transfer_branch = 'student'

    model = SlowTeacher(backbone=TINY_VIT, end_teacher_momentum=0.999)
    assert model.teacher.momentum == pytest.approx(1 - 0.99)
    assert model.teacher.end_momentum == pytest.approx(1 - 0.999)
    assert model.teacher.buffers_mode == 'own' and model.feat_branch == 'student'
    model = SlowTeacher(backbone=TINY_VIT, teacher_momentum=0.5, teacher_buffers='average',
                        feat_branch='teacher')
    assert model.teacher.momentum == pytest.approx(0.5)
    assert model.teacher.buffers_mode == 'average' and model.feat_branch == 'teacher'
    with pytest.raises(TypeError, match=r"ViewRegression.__init__\(\) got unexpected keyword "
                                        r"argument\(s\) \['teacher_momentun'\]"):
        ViewRegression(backbone=TINY_VIT, teacher_momentun=0.9)


def test_the_step_is_final_and_widths_are_checked_with_both_values():
    with pytest.raises(TypeError, match='overrides loss'):
        type('OwnStep', (ViewRegression, ), dict(loss=lambda self, inputs, samples: {}))
    model = ViewRegression(backbone=TINY_VIT)
    assert model.backbone_out_channels() == ('the backbone embed_dims', 16)
    with pytest.raises(ValueError, match=r'^ViewRegression: projector in_channels=8 does not '
                                         r'match the backbone embed_dims=16$'):
        model.check_backbone_width('projector in_channels', 8)
    model.check_channels('anything', 3, 'an unknown width', None)  # unknown: not checked


def test_teacher_schedule_hook_gives_the_runners_max_iters():
    from types import SimpleNamespace

    from mmdense.engine.hooks import TeacherScheduleHook
    model = ViewRegression(backbone=TINY_VIT)
    TeacherScheduleHook().before_train(SimpleNamespace(model=model, max_iters=37))
    assert model.teacher.schedule_length == 37
    TeacherScheduleHook().before_train(SimpleNamespace(model=nn.Linear(1, 1), max_iters=5))
    # a wrapped model (DataParallel, DDP) is reached through .module
    TeacherScheduleHook().before_train(SimpleNamespace(model=nn.DataParallel(model),
                                                       max_iters=9))
    assert model.teacher.schedule_length == 9


def shipped_algorithm_configs():
    paths = sorted(glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True))
    return [osp.relpath(p, ROOT) for p in paths
            if '_base_' not in p and f'{osp.sep}benchmarks{osp.sep}mm' not in p]


def test_every_shipped_teacher_student_config_gets_the_schedule_hook():
    from mmengine.config import Config

    from mmdense.registry import MODELS
    from mmdense.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    checked = []
    for path in shipped_algorithm_configs():
        cfg = Config.fromfile(osp.join(ROOT, path))
        model_type = cfg.get('model', {}).get('type')
        model_class = MODELS.get(model_type) if isinstance(model_type, str) else None
        if model_class is None or not issubclass(model_class, TeacherStudentSelfSupervisor):
            continue
        hook = cfg.get('default_hooks', {}).get('teacher_schedule')
        assert hook == dict(type='TeacherScheduleHook'), path
        checked.append(path)
    assert len(checked) >= 20, checked


def test_a_runner_trains_with_the_schedule_of_its_max_iters(toy_root, tmp_path):
    from mmengine.runner import Runner

    from algorithm_table import tiny_config
    cfg = tiny_config('DINO', toy_root, max_iters=2)
    cfg.work_dir = str(tmp_path)
    cfg.default_hooks.checkpoint = dict(type='AtomicCheckpointHook', interval=100)
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.model.teacher.schedule_length == 2
    assert runner.model.teacher.num_updates == 2
