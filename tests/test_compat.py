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
