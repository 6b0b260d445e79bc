import os
import pickle

import numpy as np
import pytest
import torch

import mmdense  # noqa: F401  applies the allow-list


class Payload:

    def __reduce__(self):
        return (os.system, ('echo this must never run',))


def test_malicious_pickle_is_still_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'meta': Payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)
    from mmengine.runner import CheckpointLoader
    with pytest.raises(pickle.UnpicklingError):
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')


def test_mmengine_message_hub_state_loads_safely(tmp_path):
    from mmengine.logging import HistoryBuffer, MessageHub
    hub = MessageHub.get_instance('compat-test')
    hub.update_scalar('train/loss', np.float64(1.5))
    hub.update_scalar('train/lr', 0.1)
    hub.update_info('iter', np.int64(3))
    path = tmp_path / 'ckpt.pth'
    torch.save({'meta': {'message_hub': hub.state_dict(), 'seed': np.int64(7)},
                'state_dict': {'w': torch.ones(2)}}, path)
    loaded = torch.load(path)  # weights_only=True by default on torch >= 2.6
    buffer = loaded['meta']['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer) and buffer.current() == 1.5
    assert loaded['meta']['seed'] == 7


def test_checkpoint_with_an_empty_history_buffer_loads_safely(tmp_path):
    """A message-hub entry that was never updated pickles an empty numpy array, whose protocol-2
    form calls ``bytes()``; weights_only loading refused it ('Unsupported global: GLOBAL
    bytes')."""
    from mmengine.logging import HistoryBuffer
    path = tmp_path / 'ckpt.pth'
    torch.save({'meta': {'message_hub': {'log_scalars': {'train/loss': HistoryBuffer()}}},
                'state_dict': {'w': torch.ones(2)}}, path)
    loaded = torch.load(path)
    buffer = loaded['meta']['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer) and len(buffer.data[0]) == 0


@pytest.mark.parametrize('args', [(5, ), ('text', 'utf-8'), (10**12, )])
def test_bytes_with_arguments_is_refused(tmp_path, args):

    class CallsBytes:

        def __reduce__(self):
            return (bytes, args)

    path = tmp_path / 'evil.pth'
    torch.save({'meta': CallsBytes()}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)


def test_negative_hue_jitter_works_and_rotates_hue():
    import cv2
    import mmcv

    from mmdense.utils.compat import adjust_hue
    assert mmcv.adjust_hue is adjust_hue
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 2] = 255  # BGR red, hue 0
    for factor in (-0.25, 0.25, -0.5, 0.0):
        out = adjust_hue(red, factor)
        hue = cv2.cvtColor(out, cv2.COLOR_BGR2HSV_FULL)[0, 0, 0]
        assert abs(int(hue) - int(factor * 255) % 256) <= 2
    with pytest.raises(ValueError):
        adjust_hue(red, 0.7)


def test_mmpretrain_color_jitter_runs_with_negative_hue():
    from mmpretrain.datasets.transforms import ColorJitter
    img = np.random.RandomState(0).randint(0, 255, (8, 8, 3), dtype=np.uint8)
    jitter = ColorJitter(hue=0.5)
    for seed in range(10):
        np.random.seed(seed)
        assert jitter(dict(img=img.copy()))['img'].shape == img.shape
