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
