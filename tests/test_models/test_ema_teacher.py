import math

import pytest
import torch
import torch.nn as nn

from mmdense.models.utils import EMATeacher


def test_first_update_copies_then_follows_cosine_momentum():
    torch.manual_seed(0)
    student = nn.Linear(3, 2)
    teacher = EMATeacher(dict(net=student), momentum=0.99, end_momentum=1.0,
                         schedule_length=100)
    nn.init.constant_(student.weight, 1.0)
    teacher.update(dict(net=student))  # step 0: copy
    assert torch.equal(teacher['net'].weight, student.weight)

    old = teacher['net'].weight.clone()
    nn.init.constant_(student.weight, 3.0)
    teacher.update(dict(net=student))  # step 1
    m = 1 - (1 - 0.99) * (math.cos(math.pi * 1 / 100) + 1) / 2
    assert torch.allclose(teacher['net'].weight, m * old + (1 - m) * 3.0)


def test_teacher_has_no_gradients_and_no_drop_path():
    from mmpretrain.models import VisionTransformer
    vit = VisionTransformer(arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                                      feedforward_channels=64), img_size=32, patch_size=16,
                            drop_path_rate=0.3)
    teacher = EMATeacher(dict(backbone=vit))
    assert not any(p.requires_grad for p in teacher.parameters())
    drop_probs = [m.drop_prob for m in teacher.modules() if hasattr(m, 'drop_prob')]
    assert drop_probs and all(p == 0 for p in drop_probs)
    assert any(getattr(m, 'drop_prob', 0) > 0 for m in vit.modules())


def test_invalid_momentum_is_refused():
    with pytest.raises(ValueError, match='momentum'):
        EMATeacher(dict(net=nn.Linear(1, 1)), momentum=1.2)


def small_convnet():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


@pytest.mark.parametrize('buffers', ['copy', 'average'])
def test_fused_update_matches_mmpretrain_cosine_ema(buffers):
    import uuid

    from mmengine.logging import MessageHub
    from mmpretrain.models.utils import CosineEMA
    # the reference reads its schedule length from the runner's MessageHub
    MessageHub.get_instance(f'ema-reference-{uuid.uuid4().hex}').update_info('max_iters', 100)
    torch.manual_seed(0)
    student = small_convnet()
    teacher = EMATeacher(dict(net=student), momentum=0.9, end_momentum=0.99, buffers=buffers,
                         schedule_length=100)
    reference = CosineEMA(nn.ModuleDict(dict(net=student)), momentum=0.1, end_momentum=0.01,
                          update_buffers=buffers == 'average')
    for _ in range(5):
        with torch.no_grad():
            for p in student.parameters():
                p.add_(torch.randn_like(p))
        student.train()(torch.randn(2, 3, 8, 8))  # moves the BatchNorm running statistics
        teacher.update(dict(net=student))
        reference.update_parameters(nn.ModuleDict(dict(net=student)))
    expected = reference.module.state_dict()
    for name, value in teacher.module.state_dict().items():
        assert torch.allclose(value.float(), expected[name].float(), atol=1e-6), name
    assert teacher.num_updates == int(teacher.steps) == 5


def test_update_reads_nothing_back_after_the_first_step():
    from mmdense.utils import count_host_readbacks
    student = small_convnet()
    teacher = EMATeacher(dict(net=student), schedule_length=100)
    teacher.update(dict(net=student))
    with count_host_readbacks() as readbacks:
        for _ in range(3):
            teacher.update(dict(net=student))
    assert sum(readbacks.values()) == 0, readbacks


def test_step_count_follows_a_loaded_checkpoint():
    student = nn.Linear(3, 2)
    teacher = EMATeacher(dict(net=student), momentum=0.9, schedule_length=100)
    teacher.update(dict(net=student))
    state = teacher.state_dict()
    state['steps'] = torch.tensor(50)
    teacher.load_state_dict(state)
    assert teacher.num_updates == 50
    old = teacher['net'].weight.clone()
    with torch.no_grad():
        student.weight.add_(1.0)
    teacher.update(dict(net=student))
    weight = teacher.student_weight(50)  # 1 − m at the loaded step, not at step 1
    assert weight == pytest.approx(0.1 * (math.cos(math.pi * 50 / 100) + 1) / 2)
    assert torch.allclose(teacher['net'].weight, old + weight * (student.weight - old))
    assert teacher.num_updates == 51


def test_schedule_without_a_message_hub_gives_the_cosine_momentum_by_hand():
    """m_k = m_end − (m_end − m_0)·(1 + cos(πk/T))/2 at update k (k = 0 copies), with T given
    by set_schedule_length, no runner and no MessageHub info involved."""
    momentum, end_momentum, length = 0.9, 0.99, 8
    student = nn.Linear(2, 1, bias=False)
    teacher = EMATeacher(dict(net=student), momentum=momentum, end_momentum=end_momentum)
    teacher.set_schedule_length(length)
    teacher_weight = None
    for k in range(length + 1):
        with torch.no_grad():
            student.weight.fill_(float(k + 1))
        teacher.update(dict(net=student))
        if k == 0:
            teacher_weight = 1.0
        else:
            cosine = (1 + math.cos(math.pi * k / length)) / 2
            m = end_momentum - (end_momentum - momentum) * cosine
            teacher_weight = m * teacher_weight + (1 - m) * (k + 1)
        assert teacher['net'].weight[0, 0].item() == pytest.approx(teacher_weight, rel=1e-6), k
    # the ends of the schedule: 1 − m_1 just below 1 − m_0, 1 − m_T = 1 − m_end
    assert teacher.student_weight(length) == pytest.approx(1 - end_momentum)
    assert teacher.student_weight(0) == pytest.approx(1 - momentum)


def test_an_update_without_a_schedule_length_names_the_call_to_make():
    student = nn.Linear(2, 1)
    teacher = EMATeacher(dict(net=student))
    with pytest.raises(RuntimeError, match=r'no length: call model\.set_teacher_schedule'):
        teacher.update(dict(net=student))
    assert teacher.num_updates == 0  # nothing was updated
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match='schedule length must be a number of steps'):
            teacher.set_schedule_length(bad)


def test_the_schedule_length_is_not_read_from_a_message_hub():
    """A MessageHub holding another max_iters (a runner of another model, an old fixture) does
    not change the schedule that set_schedule_length gave."""
    import uuid

    from mmengine.logging import MessageHub
    MessageHub.get_instance(f'other-runner-{uuid.uuid4().hex}').update_info('max_iters', 3)
    teacher = EMATeacher(dict(net=nn.Linear(2, 1)), momentum=0.9, end_momentum=1.0,
                         schedule_length=100)
    assert teacher.student_weight(3) == pytest.approx(0.1 * (1 + math.cos(math.pi * 3 / 100)) / 2)
