"""DINO's weight initialisation as an mmengine initializer: ``init_cfg=dict(type='DINOInit')``."""
import math

import torch.nn as nn
from mmengine.model import BaseModule
from mmengine.model.weight_init import BaseInit, trunc_normal_, update_init_info

from mmdense.registry import WEIGHT_INITIALIZERS
from .dino_head import WeightNormLinear

TOKEN_PARAMETERS = ('cls_token', 'pos_embed')


@WEIGHT_INITIALIZERS.register_module()
class DINOInit(BaseInit):
    """Initialise a ViT backbone or a DINO head as facebookresearch/dino does.

    DINO initialises its networks with one pass over every submodule
    (``vision_transformer.py``, ``VisionTransformer._init_weights`` and
    ``DINOHead._init_weights``):

    * ``nn.Linear``: weight ~ N(0, 0.02²) truncated to [-2, 2] (an absolute bound, 100 standard
      deviations: in effect untruncated), bias 0;
    * ``nn.LayerNorm``: weight 1, bias 0;
    * ``cls_token`` and ``pos_embed``: N(0, 0.02²) truncated to [-2, 2];
    * the head's weight-normalised prototype layer (:class:`WeightNormLinear`): direction ``v``
      with torch's default ``nn.Linear`` init, U(-1/√in, 1/√in) (rows of norm ≈ 1/√3 ≈ 0.58),
      scale ``g`` = 1;
    * everything else (the patch-embedding convolution) keeps the values it was constructed with:
      torch's defaults.

    mmengine runs a module's ``init_cfg`` before its children's own ``init_weights``, which would
    then overwrite parts of it (mmpretrain's ``TransformerEncoderLayer`` re-draws its FFN with
    Xavier). As DINO's one pass replaces every submodule's init, the submodules of the
    initialised module are marked initialised, so their ``init_weights`` are skipped.
    ``tests/test_models/test_dino_init.py`` checks the statistics against DINO's rules.
    """

    def __init__(self) -> None:
        super().__init__()

    def __call__(self, module: nn.Module) -> None:
        for submodule in module.modules():
            if isinstance(submodule, nn.Linear):
                trunc_normal_(submodule.weight, std=0.02, a=-2.0, b=2.0)
                if submodule.bias is not None:
                    nn.init.zeros_(submodule.bias)
            elif isinstance(submodule, nn.LayerNorm):
                nn.init.ones_(submodule.weight)
                nn.init.zeros_(submodule.bias)
            elif isinstance(submodule, WeightNormLinear):
                nn.init.kaiming_uniform_(submodule.weight_v, a=math.sqrt(5))
                nn.init.ones_(submodule.weight_g)
            for name in TOKEN_PARAMETERS:
                token = submodule._parameters.get(name)
                if token is not None:
                    trunc_normal_(token, std=0.02, a=-2.0, b=2.0)
            if submodule is not module and isinstance(submodule, BaseModule):
                submodule._is_init = True
        if hasattr(module, '_params_init_info'):
            update_init_info(module, init_info=self._get_init_info())

    def _get_init_info(self) -> str:
        return ('DINOInit: Linear and cls/pos tokens trunc-normal std 0.02, biases 0, LayerNorm '
                '1/0, prototype layer torch-default Linear init with g = 1')
