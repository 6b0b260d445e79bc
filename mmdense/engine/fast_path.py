"""The fast training path of ``tools/train.py``: bf16 autocast, channels_last, torch.compile.

A config's ``fast_path`` (``configs/_base_/default_runtime.py`` sets the defaults) holds one
switch per speed-up; :func:`apply_fast_path` turns them into the optim wrapper and hooks the
Runner builds, for the machine it runs on:

* ``bf16`` (default True): on a CUDA GPU with bf16 (``torch.cuda.is_bf16_supported()``,
  Ampere and later), the forward pass and losses run under ``torch.autocast(dtype=bfloat16)``
  (:class:`~mmdense.engine.optimizers.AutocastOptimWrapper`, no loss scaler: bf16 has fp32's
  exponent range, and a scaler reads its inf check back to the host every step). It replaces
  a plain ``OptimWrapper`` and an fp16 ``AmpOptimWrapper`` alike; anywhere else (CPU, a GPU
  without bf16) the wrapper is left as the config has it (fp32, or the recipe's fp16).
* ``channels_last`` (default True): :class:`~mmdense.engine.hooks.ChannelsLastHook` for models
  with a ResNet backbone (NHWC convolutions); False also removes the hook a recipe lists.
* ``compile`` (default False, opt-in): ``torch.compile`` of the student backbone in place
  (:class:`~mmdense.engine.hooks.CompileBackboneHook`); True or a dict of ``torch.compile``
  arguments.
"""
import logging

import torch
from mmengine.config import Config
from mmengine.logging import print_log

FAST_PATH_DEFAULTS = dict(bf16=True, channels_last=True, compile=False)
_BF16_REPLACES = ('OptimWrapper', 'AmpOptimWrapper')


def bf16_autocast_available() -> bool:
    """Whether this machine has a CUDA GPU that computes in bf16."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


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
    for fp16_only in ('loss_scale', 'dtype', 'use_fsdp'):
        wrapper.pop(fp16_only, None)
    wrapper.update(type='AutocastOptimWrapper', dtype='bfloat16', device_type='cuda')


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
    if switches['bf16'] and 'optim_wrapper' in cfg and bf16_autocast_available():
        _use_bf16(cfg)
    resnet = _has_resnet_backbone(cfg)
    if resnet or not switches['channels_last']:
        _set_hook(cfg, 'ChannelsLastHook', bool(switches['channels_last']) and resnet)
    compile_kwargs = switches['compile']
    if compile_kwargs or any(h.get('type') == 'CompileBackboneHook'
                             for h in cfg.get('custom_hooks', [])):
        _set_hook(cfg, 'CompileBackboneHook', bool(compile_kwargs),
                  **(compile_kwargs if isinstance(compile_kwargs, dict) else {}))
    return cfg
