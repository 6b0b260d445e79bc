"""Loss fingerprints: every algorithm's logged losses over three training steps of its tiny
model on a fixed toy batch stream, the reference that refactors must leave unchanged.

``loss_fingerprints.json`` was written by ``python tests/loss_fingerprints.py --write`` at commit
951e259 (before the *One house* restructuring) and is never rewritten by a refactor;
``test_models/test_loss_fingerprints.py`` recomputes the values and compares.
"""
import argparse
import json
import os.path as osp
import sys
import tempfile
from itertools import islice

import torch

TESTS = osp.dirname(osp.abspath(__file__))
REFERENCE = osp.join(TESTS, 'loss_fingerprints.json')
STEPS = 3
SCHEDULE_LENGTH = 10  # iterations of the teacher's momentum schedule


def algorithm_losses(algorithm: str, toy_root: str, start_model) -> list:
    """The logged values (``parse_losses``' log_vars) of ``STEPS`` SGD steps of ``algorithm``'s
    tiny model, one dict per step. ``start_model(model, schedule_length)`` is what makes a
    freshly built model ready to step outside a Runner."""
    from mmengine.registry import DefaultScope

    from mmdense.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmdense'):
        return _step_tiny_model(algorithm, toy_root, start_model)


def _step_tiny_model(algorithm: str, toy_root: str, start_model) -> list:
    from mmengine.optim import build_optim_wrapper
    from mmengine.runner import Runner, set_random_seed

    from algorithm_table import tiny_config
    from mmdense.registry import MODELS
    set_random_seed(0)
    cfg = tiny_config(algorithm, toy_root, max_iters=SCHEDULE_LENGTH)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    start_model(model, SCHEDULE_LENGTH)
    optim_wrapper = build_optim_wrapper(
        model, dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.05, momentum=0.9)))
    steps = []
    for batch in islice(Runner.build_dataloader(cfg.train_dataloader, seed=0), STEPS):
        data = model.data_preprocessor(batch, True)
        losses = model(**data, mode='loss')
        loss, log_vars = model.parse_losses(losses)
        optim_wrapper.update_params(loss)
        steps.append({k: float(v) for k, v in log_vars.items()})
    return steps


def toy_scenes(root: str) -> str:
    """The toy set of the tests' ``toy_root`` fixture."""
    from mmdense.datasets.toy_scenes import generate_toy_scenes
    generate_toy_scenes(root, num_train=24, num_val=8, img_size=96, seed=0)
    return root


def write_reference(start_model) -> dict:
    from algorithm_table import ALGORITHMS
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = toy_scenes(tmp)
        reference = {name: algorithm_losses(name, root, start_model) for name in ALGORITHMS}
    with open(REFERENCE, 'w') as f:
        json.dump(reference, f, indent=1, sort_keys=True)
        f.write('\n')
    return reference


if __name__ == '__main__':
    sys.path[:0] = [osp.dirname(TESTS), TESTS]
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--write', action='store_true', required=True)
    parser.parse_args()

    def message_hub_schedule(model, length):  # how the teacher read its length at 951e259
        from mmengine.logging import MessageHub
        MessageHub.get_instance('loss-fingerprints').update_info('max_iters', length)

    print(json.dumps(write_reference(message_hub_schedule), indent=1))
