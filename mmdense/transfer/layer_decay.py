"""Layer-wise lr decay for detectors and segmentors whose backbone reports layer depths."""
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor


class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """lr × ``layer_decay_rate`` ** (depth below the top) for backbone parameters, and no weight
    decay for 1-D parameters (norms, biases) and for ``no_decay_names`` (``pos_embed``,
    ``cls_token``).

    Works for any model with a ``backbone`` attribute (mmdet's ``MaskRCNN``, mmseg's
    ``EncoderDecoder`` ...). Depths come from the backbone's ``get_layer_depth(name)`` (mmpretrain
    ViTs and ResNets, :class:`ViTPyramid`): patch embedding and tokens 0, block i at i + 1, and
    everything above the last block (final norm, pyramid adapter, neck, heads) at the top (lr × 1).

    ``paramwise_cfg``: ``layer_decay_rate`` (default 1.0: no decay), ``no_decay_names``.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict = None) -> None:
        paramwise_cfg = dict(paramwise_cfg or {})
        self.layer_decay_rate = float(paramwise_cfg.pop('layer_decay_rate', 1.0))
        self.no_decay_names = tuple(paramwise_cfg.pop('no_decay_names', ('pos_embed',
                                                                         'cls_token')))
        if paramwise_cfg:
            raise KeyError(f'{type(self).__name__} takes paramwise_cfg keys layer_decay_rate and '
                           f'no_decay_names, got also {sorted(paramwise_cfg)}')
        if not 0.0 < self.layer_decay_rate <= 1.0:
            raise ValueError(f'layer_decay_rate must lie in (0, 1], got {self.layer_decay_rate}')
        # a non-empty paramwise_cfg makes the parent call add_params
        super().__init__(optim_wrapper_cfg, dict(layer_decay_rate=self.layer_decay_rate))

    def add_params(self, params: list, module: nn.Module, **kwargs) -> None:
        backbone = getattr(module, 'backbone', None)
        if backbone is None:
            raise TypeError(f'{type(self).__name__}: {type(module).__name__} has no backbone')
        depth_of = getattr(backbone, 'get_layer_depth', None)
        if depth_of is None and self.layer_decay_rate != 1.0:
            raise TypeError(f'layer decay needs a backbone with get_layer_depth(); '
                            f'{type(backbone).__name__} has none')
        groups = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            scale = 1.0
            if depth_of is not None and name.startswith('backbone.'):
                depth, num_depths = depth_of(name[len('backbone.'):])
                scale = self.layer_decay_rate**(num_depths - 1 - depth)
            decay = param.ndim > 1 and not any(n in name for n in self.no_decay_names)
            group = groups.get((scale, decay))
            if group is None:
                group = groups[scale, decay] = dict(params=[], lr=self.base_lr * scale)
                if self.base_wd is not None:
                    group['weight_decay'] = self.base_wd if decay else 0.0
            group['params'].append(param)
        params.extend(groups.values())
        print_log(
            f'{type(self).__name__}: {len(groups)} parameter groups, layer decay '
            f'{self.layer_decay_rate}, lr x {min(s for s, _ in groups):.3g}..1, weight decay off '
            f'for {sum(len(g["params"]) for (_, d), g in groups.items() if not d)} tensors',
            logger='current')
