import torch.nn as nn
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.optim.optimizer import default_constructor

from mmdense.engine.optimizers import FrozenAwareOptimWrapperConstructor


class StudentTeacher(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        self.teacher = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)).requires_grad_(False)


def build(constructor_cls, monkeypatch):
    """Param groups (weight decay, shapes) and the 'requires_grad=False' messages logged."""
    messages = []
    monkeypatch.setattr(default_constructor, 'print_log',
                        lambda msg, *args, **kwargs: messages.append(msg))
    cfg = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=0.1, weight_decay=0.05))
    wrapper = constructor_cls(cfg, dict(norm_decay_mult=0.0, bias_decay_mult=0.0))(
        StudentTeacher())
    groups = [(g['weight_decay'], [tuple(p.shape) for p in g['params']])
              for g in wrapper.optimizer.param_groups]
    return groups, [m for m in messages if 'requires_grad=False' in m]


def test_same_settings_as_mmengine_in_merged_groups_without_per_parameter_warnings(monkeypatch):
    default_groups, default_warnings = build(DefaultOptimWrapperConstructor, monkeypatch)
    groups, warnings = build(FrozenAwareOptimWrapperConstructor, monkeypatch)
    assert len(default_warnings) == 4 and warnings == []

    def per_parameter(groups):
        return [(wd, shape) for wd, shapes in groups for shape in shapes]

    # every student parameter gets mmengine's settings; parameters with equal settings share one
    # group (one fused optimizer update instead of one per parameter)
    assert per_parameter(groups) == per_parameter(default_groups)
    assert [wd for wd, _ in default_groups] == [0.05, 0.0, 0.0, 0.0]
    assert groups == [(0.05, [(4, 4)]), (0.0, [(4, ), (4, ), (4, )])]
