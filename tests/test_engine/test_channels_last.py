"""ChannelsLastHook: the ResNet recipes train in NHWC, with the same values as in NCHW."""
import copy
from types import SimpleNamespace

import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

from mmdense.engine.hooks import ChannelsLastHook
from mmdense.registry import MODELS
from algorithm_table import tiny_config
from helpers import ROOT


def test_recipes_enable_it():
    for config in ('configs/slotcon/r50_coco-800e.py', 'configs/slotcon/r50_in1k-200e.py',
                   'configs/slotcon/r50_cocoplus-800e.py', 'configs/dsc/r50_coco-800e.py',
                   'configs/dsc/r50_coco-800e_pm.py', 'configs/dsc/r50_in1k-200e.py'):
        hooks = Config.fromfile(f'{ROOT}/{config}').custom_hooks
        assert {'type': 'ChannelsLastHook'} in [dict(h) for h in hooks], config


def test_model_trains_in_nhwc_with_unchanged_values(toy_root):
    from itertools import islice

    from mmengine.runner import Runner
    cfg = tiny_config('SlotCon', toy_root, max_iters=4)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.set_teacher_schedule(cfg.train_cfg.max_iters)
    reference = copy.deepcopy(model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    params = [id(p) for p in model.parameters()]

    ChannelsLastHook().before_train(SimpleNamespace(model=model))
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert [id(p) for p in model.parameters()] == params  # the optimizer's objects, kept
    # the EMA teacher averages into NHWC tensors too
    assert all(p.is_contiguous(memory_format=torch.channels_last)
               for p in model.teacher.parameters() if p.dim() == 4)

    batch = next(islice(Runner.build_dataloader(cfg.train_dataloader), 1))
    torch.manual_seed(1)
    nhwc = model.train_step(batch, wrapper)
    torch.manual_seed(1)
    nchw = reference.train_step(batch, build_optim_wrapper(reference, cfg.optim_wrapper))
    for key in nchw:
        assert torch.allclose(torch.tensor(float(nhwc[key])), torch.tensor(float(nchw[key])),
                              rtol=1e-4, atol=1e-5), key
