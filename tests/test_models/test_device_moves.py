"""Every algorithm keeps training correctly after its model is moved or cast.

``nn.Module.to()`` (a GPU move, ``.double()``, ``.half()``) keeps the ``Parameter`` objects but
*replaces* every buffer tensor, and with ``torch.__future__.set_overwrite_module_params_on_
conversion(True)`` the parameters too. State that holds tensor references taken before the move
(the EMA teacher's list of tensors to average, a centre, a queue) then updates dead tensors: on a
GPU the step crashes on mixed devices (SlotCon and DSC did, at step 1), and on the CPU the model
silently stops following. A dtype cast reproduces the move on the CPU: these tests train a step,
cast the whole model to float64, and check that the teacher, the centres and the queues follow.

The algorithms come from ``tests/algorithm_table.py``: a new algorithm is covered by its row.
"""
import math
from itertools import islice

import pytest
import torch
import torch.nn as nn
from mmengine.optim import build_optim_wrapper
from mmengine.runner import Runner

from algorithm_table import ALGORITHMS, tiny_config
from mmdense.registry import MODELS
from mmdense.utils import register_all_modules

pytestmark = pytest.mark.usefixtures('one_thread')


def build(algorithm, toy_root):
    """The tiny model of ``algorithm`` in train mode, its config and three batches."""
    register_all_modules(init_default_scope=False)
    torch.manual_seed(0)
    cfg = tiny_config(algorithm, toy_root, max_iters=10)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    model.set_teacher_schedule(cfg.train_cfg.max_iters)
    batches = list(islice(Runner.build_dataloader(cfg.train_dataloader), 3))
    return cfg, model, batches


def train_step(model, optim_wrapper, batch, dtype=torch.float32):
    """``model.train_step`` with the preprocessed inputs cast to ``dtype`` (mmengine's data
    preprocessor always returns float32)."""
    data = model.data_preprocessor(batch, True)
    data['inputs'] = [view.to(dtype) for view in data['inputs']]
    losses = model(**data, mode='loss')
    loss, log_vars = model.parse_losses(losses)
    optim_wrapper.update_params(loss)
    return log_vars


def snapshot(tensors):
    return {name: t.detach().clone() for name, t in tensors}


def changed(before, module):
    """Names of ``module``'s buffers whose values differ from ``before``."""
    return {name for name, t in module.named_buffers()
            if name in before and not torch.equal(before[name].to(t.dtype), t)}


def cast_to_double(model, overwrite_params):
    previous = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(overwrite_params)
    try:
        model.double()
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(previous)


def expected_teacher(before, student, mode, weight, parameter_names):
    """The teacher state after one EMA update, computed by hand: parameters (and, for
    ``average``, floating buffers) ``t + w (s − t)``; buffers copied (``copy``), or kept
    (``own``, and integer buffers under ``average``)."""
    expected = {}
    for name, t in before.items():
        s = student[name]
        if name in parameter_names or (mode == 'average' and t.dtype.is_floating_point):
            expected[name] = t + weight * (s - t)
        elif mode == 'copy':
            expected[name] = s
        else:
            expected[name] = t
    return expected


@pytest.mark.parametrize('overwrite_params', [False, True],
                         ids=['buffers-replaced', 'parameters-replaced'])
@pytest.mark.parametrize('algorithm', list(ALGORITHMS))
def test_teacher_follows_the_student_after_a_cast(algorithm, overwrite_params, toy_root):
    cfg, model, batches = build(algorithm, toy_root)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    for batch in batches[:2]:
        train_step(model, optim_wrapper, batch)
    cast_to_double(model, overwrite_params)

    teacher = model.teacher
    student = nn.ModuleDict(model.student_modules())
    with torch.no_grad():  # make every student tensor differ from the teacher's
        for tensor in student.state_dict().values():
            if tensor.dtype.is_floating_point:
                tensor.add_(torch.rand_like(tensor) + 0.5)
    before = snapshot(teacher.module.state_dict().items())
    weight = teacher.student_weight(teacher.num_updates)
    expected = expected_teacher(before, snapshot(student.state_dict().items()),
                                teacher.buffers_mode, weight,
                                {name for name, _ in teacher.module.named_parameters()})
    teacher.update(model.student_modules())

    after = teacher.module.state_dict()
    wrong = [name for name, value in expected.items()
             if value.dtype != after[name].dtype
             or not torch.allclose(after[name], value, rtol=1e-12, atol=1e-12)]
    assert not wrong, (f'{algorithm} ({teacher.buffers_mode} buffers): after .double() the '
                       f'teacher did not follow the student for {len(wrong)} tensors, e.g. '
                       f'{wrong[:4]}')


@pytest.mark.parametrize('algorithm', list(ALGORITHMS))
def test_a_step_after_a_cast_updates_the_same_state_in_the_new_dtype(algorithm, toy_root):
    cfg, model, batches = build(algorithm, toy_root)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    train_step(model, optim_wrapper, batches[0])
    before = snapshot(model.named_buffers())
    train_step(model, optim_wrapper, batches[1])
    changed_in_float32 = changed(before, model)

    model.double()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)  # as a Runner does after a move
    before = snapshot(model.named_buffers())
    log_vars = train_step(model, optim_wrapper, batches[2], torch.float64)

    assert changed(before, model) == changed_in_float32, (
        f'{algorithm}: the step after .double() updated other buffers than the one before: '
        f'{sorted(changed(before, model) ^ changed_in_float32)}')
    not_double = [name for name, t in model.state_dict().items()
                  if t.dtype.is_floating_point and t.dtype != torch.float64]
    assert not not_double, f'{algorithm}: state left in another dtype: {not_double[:4]}'
    # (losses may be computed in float32 whatever the model's dtype: they upcast for AMP)
    for name, value in log_vars.items():
        assert math.isfinite(value), f'{algorithm}: {name} = {value}'
