import os.path as osp
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture(scope='session')
def toy_root(tmp_path_factory):
    """A small toy scene set shared by the tests that train or build datasets."""
    from mmdense.datasets.toy_scenes import generate_toy_scenes
    root = tmp_path_factory.mktemp('toy_scenes')
    generate_toy_scenes(str(root), num_train=24, num_val=8, img_size=96, seed=0)
    return str(root)


@pytest.fixture(scope='module')
def one_thread():
    """One torch thread for a module of tiny models: several threads only contend on a small
    shared CPU. Use with ``pytestmark = pytest.mark.usefixtures('one_thread')``."""
    import torch
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def message_hub_max_iters():
    """Give CosineEMA the runner info it reads (max_iters) outside a runner."""
    import uuid

    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance(f'mmdense-test-{uuid.uuid4().hex}')
    hub.update_info('max_iters', 100)
    return hub


@pytest.fixture(autouse=True)
def mmdense_default_scope():
    """Run every test in the mmdense scope: a Runner built by an earlier test (a downstream mmdet
    or mmseg one, say) leaves its own scope as the process-wide default."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdense'):
        yield
