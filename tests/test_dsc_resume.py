"""DSC resumes bit-exactly after a kill: the queue and its pointer are checkpointed buffers, and
the batch k-means is seeded from the momentum encoder's (checkpointed) step count."""
import torch
from test_reliability_checkpoint import test_resume_after_kill_is_bit_exact as bit_exact_resume
from test_train_resume import tiny_dsc_config


def test_dsc_resume_after_kill_is_bit_exact(toy_root, tmp_path):
    bit_exact_resume(tiny_dsc_config, toy_root, tmp_path)
    state = torch.load(tmp_path / 'split/iter_6.pth', map_location='cpu')['state_dict']
    assert int(state['queue_ptr']) == 6 * 8 % 20 and state['queue'].shape == (20, 16)
    assert int(state['teacher.steps']) == 6
