"""The fast path of tools/train.py (mmdense/engine/fast_path.py): each config switch resolves to
the right optim wrapper and hooks on a machine with and without a bf16 GPU, every recipe trains
in the precision its README states, and a step with a compiled backbone equals the eager step."""
import copy
import glob
import os.path as osp
from itertools import islice
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

from mmdense.engine.fast_path import FAST_PATH_DEFAULTS, apply_fast_path, training_precision
from mmdense.engine.optimizers import AutocastOptimWrapper
from algorithm_table import tiny_config
from helpers import ROOT

SLOTCON_RECIPE = f'{ROOT}/configs/slotcon/r50_coco-800e.py'  # fp16 AmpOptimWrapper, NHWC hook
# The precision tools/train.py trains each method's recipes in on a GPU, as
# configs/<method>/README.md states it (fp32 on the CPU); decided by
# tools/analysis_tools/precision_check.py (benchmarks/README.md, "Precision").
RECIPE_PRECISION = dict(dino='fp16', adclr='fp32', cotap='fp32', slotcon='fp16', dsc='fp16',
                        ibot='fp16')
RECIPES = sorted(path for method in RECIPE_PRECISION
                 for path in glob.glob(f'{ROOT}/configs/{method}/*.py') if 'toy' not in path)


@pytest.fixture(params=['cpu', 'cuda-fp16-only', 'cuda-bf16'])
def machine(request, monkeypatch):
    """Pretend to be a CPU-only machine, a GPU without bf16 (e.g. V100) or one with it."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: request.param != 'cpu')
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported',
                        lambda *args, **kwargs: request.param == 'cuda-bf16')
    return request.param


def hook_types(cfg):
    return [h['type'] for h in cfg.get('custom_hooks', [])]


def test_default_runtime_sets_every_switch():
    runtime = Config.fromfile(f'{ROOT}/configs/_base_/default_runtime.py')
    assert dict(runtime.fast_path) == FAST_PATH_DEFAULTS
    assert FAST_PATH_DEFAULTS == dict(bf16=False, channels_last=True, compile=False)
    assert runtime.env_cfg.cudnn_benchmark is True


@pytest.mark.parametrize('config', RECIPES, ids=lambda path: osp.relpath(path, f'{ROOT}/configs'))
def test_recipe_trains_in_the_precision_its_readme_states(config, machine):
    cfg = apply_fast_path(Config.fromfile(config))
    method = osp.basename(osp.dirname(config))
    expected = 'fp32' if machine == 'cpu' else RECIPE_PRECISION[method]
    assert training_precision(cfg.optim_wrapper) == expected


def test_training_precision_of_each_optim_wrapper():
    assert training_precision(dict(type='OptimWrapper')) == 'fp32'
    assert training_precision(dict(optimizer=dict(type='SGD'))) == 'fp32'
    assert training_precision(dict(type='AmpOptimWrapper', loss_scale='dynamic')) == 'fp16'
    assert training_precision(dict(type='AmpOptimWrapper', dtype='bfloat16')) == 'bf16'
    assert training_precision(dict(type='AmpOptimWrapper', dtype=torch.bfloat16)) == 'bf16'
    assert training_precision(dict(type='AutocastOptimWrapper')) == 'bf16'
    assert training_precision(dict(type='AutocastOptimWrapper', dtype='float16')) == 'fp16'


def test_fp32_config_trains_in_bf16_only_on_a_bf16_gpu(machine, toy_root, monkeypatch):
    cfg = tiny_config('SlotCon', toy_root, max_iters=2)
    assert apply_fast_path(copy.deepcopy(cfg)).optim_wrapper == cfg.optim_wrapper  # default off
    cfg.fast_path = dict(bf16=True)
    cfg = apply_fast_path(cfg)
    if machine == 'cuda-bf16':
        assert dict(cfg.optim_wrapper, optimizer=None) == dict(
            type='AutocastOptimWrapper', dtype='bfloat16', device_type='cuda', optimizer=None)
        monkeypatch.undo()  # mmengine's logger asks the (pretended) GPU for its index
        wrapper = build_optim_wrapper(torch.nn.Linear(2, 2), cfg.optim_wrapper)
        assert isinstance(wrapper, AutocastOptimWrapper)
        assert (wrapper.cast_dtype, wrapper.device_type) == (torch.bfloat16, 'cuda')
    else:
        assert cfg.optim_wrapper.type == 'OptimWrapper'
        assert 'dtype' not in cfg.optim_wrapper


def test_fp16_recipe_becomes_bf16_without_loss_scaler_only_on_a_bf16_gpu(machine):
    cfg = Config.fromfile(SLOTCON_RECIPE)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    recipe_wrapper = copy.deepcopy(cfg.optim_wrapper)
    cfg.fast_path = dict(bf16=True)
    apply_fast_path(cfg)
    if machine == 'cuda-bf16':
        assert cfg.optim_wrapper.type == 'AutocastOptimWrapper'
        assert cfg.optim_wrapper.dtype == 'bfloat16' and 'loss_scale' not in cfg.optim_wrapper
        # the optimizer, its parameter-wise settings and clipping are the recipe's
        kept = {k: v for k, v in recipe_wrapper.items()
                if k not in ('type', 'dtype', 'loss_scale')}
        assert {k: cfg.optim_wrapper[k] for k in kept} == kept
    elif machine == 'cuda-fp16-only':
        assert cfg.optim_wrapper == recipe_wrapper
    else:
        assert cfg.optim_wrapper == dict(recipe_wrapper, type='OptimWrapper')


def test_bf16_switch_off_keeps_the_fp16_recipe_on_a_gpu_and_fp32_on_the_cpu(machine):
    cfg = Config.fromfile(SLOTCON_RECIPE)
    cfg.fast_path = dict(bf16=False)
    recipe_wrapper = copy.deepcopy(cfg.optim_wrapper)
    if machine == 'cpu':  # mmengine refuses to build an AmpOptimWrapper without an accelerator
        recipe_wrapper.type = 'OptimWrapper'
    assert apply_fast_path(cfg).optim_wrapper == recipe_wrapper


def test_channels_last_for_resnets_only_and_switch_removes_the_recipe_hook(machine, toy_root):
    resnet = apply_fast_path(tiny_config('SlotCon', toy_root, max_iters=2))  # no hook listed
    assert hook_types(resnet).count('ChannelsLastHook') == 1
    vit = tiny_config('DINO', toy_root, max_iters=2)
    assert hook_types(apply_fast_path(copy.deepcopy(vit))) == hook_types(vit)
    recipe = Config.fromfile(SLOTCON_RECIPE)
    assert hook_types(apply_fast_path(copy.deepcopy(recipe))).count('ChannelsLastHook') == 1
    recipe.fast_path = dict(channels_last=False)
    assert 'ChannelsLastHook' not in hook_types(apply_fast_path(recipe))


def test_compile_is_opt_in_with_torch_compile_arguments(toy_root):
    cfg = tiny_config('SlotCon', toy_root, max_iters=2)
    assert 'CompileBackboneHook' not in hook_types(apply_fast_path(copy.deepcopy(cfg)))
    cfg.fast_path = dict(compile=dict(mode='max-autotune', dynamic=False))
    hooks = apply_fast_path(cfg).custom_hooks
    assert dict(type='CompileBackboneHook', mode='max-autotune', dynamic=False) in hooks
    cfg.fast_path = dict(compile=False)  # turns off a hook a config listed
    assert 'CompileBackboneHook' not in hook_types(apply_fast_path(cfg))


def test_unknown_switch_is_named():
    cfg = Config(dict(fast_path=dict(bf16=True, channel_last=False)))
    with pytest.raises(KeyError, match=r"no switch \['channel_last'\]"):
        apply_fast_path(cfg)


def test_train_step_with_compiled_backbone_equals_the_eager_step(toy_root):
    """Inductor's fused kernels sum in another order than eager, so the two agree to rounding,
    and how far two SlotCon steps carry rounding depends on the CPU. The spread of rounding is
    measured on the spot: an eager copy whose parameters differ by one rounding (x (1 ± eps)
    each) trains beside them. Losses may differ from eager by 10 times that copy's difference;
    the two steps' update of all parameters (and of the EMA teacher), as one vector, by 1000
    times its difference in norm. Measured on this project's 2-core CPU (relative to the update's
    norm): rounding copy 1.9e-7, compiled 1.2e-7 (teacher 1.3e-7 and 1.4e-8), losses 1e-7 both.
    The factor 1000 admits a ReLU or argmax input that rounding moves across its kink: in one of
    three runs a BatchNorm bias whose gradient sums near-cancelling terms (layer1.0.bn2.bias)
    ended 1.4 % of its largest value away (64 values within 6e-4: under 5e-5 of the update's
    norm); a compiled kernel that computes something else moves the update by its own size."""
    from mmengine.runner import Runner

    from mmdense.engine.hooks import CompileBackboneHook
    from mmdense.registry import MODELS
    cfg = tiny_config('SlotCon', toy_root, max_iters=4)
    torch.manual_seed(0)
    eager = MODELS.build(cfg.model)
    eager.init_weights()
    eager.set_teacher_schedule(cfg.train_cfg.max_iters)
    initial, compiled, perturbed = (copy.deepcopy(eager) for _ in range(3))
    names = [name for name, _ in compiled.named_parameters()]
    CompileBackboneHook(backend='inductor').before_train(SimpleNamespace(model=compiled))
    # compiled in place: the names the EMA teacher and checkpoints use are unchanged
    assert [name for name, _ in compiled.named_parameters()] == names
    eps = torch.finfo(torch.float32).eps
    with torch.no_grad():
        for param in perturbed.parameters():
            param.mul_(1 + eps * torch.randn_like(param).sign())
    models = dict(eager=eager, compiled=compiled, perturbed=perturbed)

    def assert_within_spread(what, factor, expected, actual, reference):
        spread = (reference - expected).norm() + eps * expected.norm()
        assert (actual - expected).norm() <= factor * spread, what

    loader = Runner.build_dataloader(cfg.train_dataloader)
    wrappers = {key: build_optim_wrapper(model, cfg.optim_wrapper) for key, model in models.items()}
    for batch in islice(loader, 2):  # the second step uses the teacher updated by the first
        outputs = {}
        for key, model in models.items():
            torch.manual_seed(1)
            outputs[key] = model.train_step(batch, wrappers[key])
        for name in outputs['eager']:
            assert_within_spread(name, 10, *(outputs[key][name].float() for key in models))

    def updates(tensors_of):
        start = torch.cat([t.detach().float().flatten() for t in tensors_of(initial)])
        return [torch.cat([t.detach().float().flatten() for t in tensors_of(model)]) - start
                for model in models.values()]

    assert_within_spread('parameters', 1000, *updates(lambda model: model.parameters()))
    assert_within_spread('teacher', 1000, *updates(
        lambda model: [t for t in model.teacher.state_dict().values() if t.is_floating_point()]))


@pytest.mark.parametrize('schedule', ['dino_adamw_100e.py', 'cotap_adamw.py', 'dsc_sgd.py'])
def test_recipe_optimizers_take_the_foreach_update_on_every_device(schedule):
    """torch picks its per-parameter loop on the CPU unless asked: the recipes ask for the
    foreach update (one call over all parameters, torch's choice on CUDA), which gives the same
    parameters bit for bit."""
    cfg = Config.fromfile(f'{ROOT}/configs/_base_/schedules/{schedule}')
    assert cfg.optim_wrapper.optimizer.foreach is True
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8),
                                torch.nn.Linear(8, 2))
    looped = copy.deepcopy(model)
    settings = {k: v for k, v in cfg.optim_wrapper.optimizer.items() if k != 'type'}
    optimizer_type = getattr(torch.optim, cfg.optim_wrapper.optimizer.type)
    fused_opt = optimizer_type(model.parameters(), **settings)
    looped_opt = optimizer_type(looped.parameters(), **dict(settings, foreach=False))
    for step in range(3):
        x = torch.randn(3, 4)
        for net, opt in ((model, fused_opt), (looped, looped_opt)):
            opt.zero_grad()
            net(x).square().sum().backward()
            opt.step()
    for (name, a), b in zip(model.named_parameters(), looped.parameters()):
        assert torch.equal(a, b), name
