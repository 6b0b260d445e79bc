"""The fast training path of ``tools/train.py``: the recipe's precision, channels_last, compile.

A config's ``fast_path`` (``configs/_base_/default_runtime.py`` sets the defaults) holds one
switch per speed-up; :func:`apply_fast_path` turns them into the optim wrapper and hooks the
Runner builds, for the machine it runs on:

* precision: a config trains in the precision of its optim wrapper (:func:`training_precision`):
  ``AmpOptimWrapper`` is fp16 autocast with a dynamic loss scale (the SlotCon, DSC and DINO
  recipes, as their authors train), a plain ``OptimWrapper`` fp32 (ADCLR, CoTAP, the toy
  configs). mmengine builds an ``AmpOptimWrapper`` only on an accelerator: on the CPU it
  becomes an ``OptimWrapper``, so fp16 recipes train in fp32 there.
* ``bf16`` (default False): on a CUDA GPU with bf16 (``torch.cuda.is_bf16_supported()``,
  Ampere and later), the forward pass and losses run under ``torch.autocast(dtype=bfloat16)``
  instead (:class:`~mmdense.engine.optimizers.AutocastOptimWrapper`, no loss scaler: bf16 has
  fp32's exponent range, and a scaler reads its inf check back to the host every step), in
  place of a plain ``OptimWrapper`` or an fp16 ``AmpOptimWrapper``; anywhere else the switch
  does nothing. Off by default: measured from one state on the same batches
  (``tools/analysis_tools/precision_check.py``, benchmarks/README.md "Precision"), bf16 moves
  every method's gradient further from fp32 than fp16 does.
* ``channels_last`` (default True): :class:`~mmdense.engine.hooks.ChannelsLastHook` for models
  with a ResNet backbone (NHWC convolutions); False also removes the hook a recipe lists.
* ``compile`` (default False, opt-in): ``torch.compile`` of the student backbone in place
  (:class:`~mmdense.engine.hooks.CompileBackboneHook`); True or a dict of ``torch.compile``
  arguments.

Whatever the precision, losses and temperature-scaled logits compute in fp32
(:func:`mmdense.models.losses.fp32_forward`).
"""
import logging

import torch
from mmengine.config import Config
from mmengine.device import (is_cuda_available, is_mlu_available, is_musa_available,
                             is_npu_available)
from mmengine.logging import print_log

FAST_PATH_DEFAULTS = dict(bf16=False, channels_last=True, compile=False)
_BF16_REPLACES = ('OptimWrapper', 'AmpOptimWrapper')
_AUTOCAST_DTYPES = dict(AmpOptimWrapper='float16', AutocastOptimWrapper='bfloat16')
_MIXED_PRECISION_ONLY = ('loss_scale', 'dtype', 'use_fsdp')


def bf16_autocast_available() -> bool:
    """Whether this machine has a CUDA GPU that computes in bf16."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def training_precision(optim_wrapper: dict) -> str:
    """``'fp32'``, ``'fp16'`` or ``'bf16'``: what a model trains in under this optim wrapper
    config: the ``dtype`` of an ``AmpOptimWrapper`` (default float16) or of an
    ``AutocastOptimWrapper`` (default bfloat16); fp32 for any other wrapper."""
    wrapper_type = optim_wrapper.get('type', 'OptimWrapper')
    if wrapper_type not in _AUTOCAST_DTYPES:
        return 'fp32'
    dtype = str(optim_wrapper.get('dtype') or _AUTOCAST_DTYPES[wrapper_type])
    return 'bf16' if 'bfloat16' in dtype else 'fp16'


def _has_resnet_backbone(cfg: Config) -> bool:
    backbone = cfg.get('model', {}).get('backbone') or {}
    return 'ResNet' in str(backbone.get('type', ''))


def _use_bf16(cfg: Config) -> None:
    wrapper = cfg.optim_wrapper
    wrapper_type = wrapper.get('type', 'OptimWrapper')
    if wrapper_type not in _BF16_REPLACES:
        print_log(f'fast_path.bf16: the config uses {wrapper_type}, which is kept (bf16 '
                  f'replaces {" or ".join(_BF16_REPLACES)})', logger='current',
                  level=logging.WARNING)
        return
    for fp16_only in _MIXED_PRECISION_ONLY:
        wrapper.pop(fp16_only, None)
    wrapper.update(type='AutocastOptimWrapper', dtype='bfloat16', device_type='cuda')


def _fp32_without_accelerator(cfg: Config) -> None:
    """An ``AmpOptimWrapper`` on a machine without an accelerator (mmengine refuses to build
    one there) becomes an ``OptimWrapper`` with the same optimizer: fp32."""
    wrapper = cfg.optim_wrapper
    accelerator = (is_cuda_available() or is_npu_available() or is_mlu_available()
                   or is_musa_available())  # the devices AmpOptimWrapper accepts
    if wrapper.get('type') != 'AmpOptimWrapper' or accelerator:
        return
    print_log('the config trains in fp16 with AmpOptimWrapper, which needs a GPU: training in '
              'fp32 on this machine', logger='current', level=logging.WARNING)
    for fp16_only in _MIXED_PRECISION_ONLY:
        wrapper.pop(fp16_only, None)
    wrapper.type = 'OptimWrapper'


def _set_hook(cfg: Config, hook_type: str, enabled: bool, **kwargs) -> None:
    hooks = [h for h in cfg.get('custom_hooks', []) if h.get('type') != hook_type]
    if enabled:
        hooks.append(dict(type=hook_type, **kwargs))
    cfg.custom_hooks = hooks


def apply_fast_path(cfg: Config) -> Config:
    """Resolve ``cfg.fast_path`` (unset switches take :data:`FAST_PATH_DEFAULTS`) into
    ``cfg.optim_wrapper`` and ``cfg.custom_hooks``, in place; returns ``cfg``."""
    switches = dict(FAST_PATH_DEFAULTS, **cfg.get('fast_path', {}))
    unknown = sorted(set(switches) - set(FAST_PATH_DEFAULTS))
    if unknown:
        raise KeyError(f'fast_path has no switch {unknown}: it has {sorted(FAST_PATH_DEFAULTS)}')
    if 'optim_wrapper' in cfg:
        if switches['bf16'] and bf16_autocast_available():
            _use_bf16(cfg)
        _fp32_without_accelerator(cfg)
    resnet = _has_resnet_backbone(cfg)
    if resnet or not switches['channels_last']:
        _set_hook(cfg, 'ChannelsLastHook', bool(switches['channels_last']) and resnet)
    compile_kwargs = switches['compile']
    if compile_kwargs or any(h.get('type') == 'CompileBackboneHook'
                             for h in cfg.get('custom_hooks', [])):
        _set_hook(cfg, 'CompileBackboneHook', bool(compile_kwargs),
                  **(compile_kwargs if isinstance(compile_kwargs, dict) else {}))
    return cfg
