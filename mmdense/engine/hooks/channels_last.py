import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmdense.registry import HOOKS


@HOOKS.register_module()
class ChannelsLastHook(Hook):
    """Train a convolutional model in the ``channels_last`` (NHWC) memory format.

    cuDNN's fp16/bf16 convolutions (tensor cores) and oneDNN's run natively in NHWC; in the
    default NCHW layout every convolution pays for layout transposes. Before training, every
    4-D parameter and buffer of the model (student, teacher, heads) is converted in place
    (``Module.to(memory_format=...)`` keeps the parameter objects, so the optimizer, the EMA
    teacher and checkpoints are unaffected: a state dict loads into either layout); before
    every iteration the batch's image views are converted too, so that the first convolution
    does not convert them. Values are unchanged: only the layout differs
    (``tests/test_engine/test_channels_last.py``). The ResNet recipes enable it; remove it from
    ``custom_hooks`` to train in NCHW.
    """
    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        model.to(memory_format=torch.channels_last)
