import math

import pytest
import torch
import torch.nn as nn

from mmdense.models.utils import EMATeacher


def test_first_update_copies_then_follows_cosine_momentum(message_hub_max_iters):
    torch.manual_seed(0)
    student = nn.Linear(3, 2)
    teacher = EMATeacher(dict(net=student), momentum=0.99, end_momentum=1.0)
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
def test_fused_update_matches_mmpretrain_cosine_ema(message_hub_max_iters, buffers):
    from mmpretrain.models.utils import CosineEMA
    torch.manual_seed(0)
    student = small_convnet()
    teacher = EMATeacher(dict(net=student), momentum=0.9, end_momentum=0.99, buffers=buffers)
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


def test_update_reads_nothing_back_after_the_first_step(message_hub_max_iters):
    from mmdense.utils import count_host_readbacks
    student = small_convnet()
    teacher = EMATeacher(dict(net=student))
    teacher.update(dict(net=student))
    with count_host_readbacks() as readbacks:
        for _ in range(3):
            teacher.update(dict(net=student))
    assert sum(readbacks.values()) == 0, readbacks


def test_step_count_follows_a_loaded_checkpoint(message_hub_max_iters):
    student = nn.Linear(3, 2)
    teacher = EMATeacher(dict(net=student), momentum=0.9)
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
