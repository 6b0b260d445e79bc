"""Every algorithm of ``tests/algorithm_table.py``, and the code that runs models outside training,
on fake CUDA tensors (``tests/fake_cuda.py``): no GPU, but a CPU tensor used beside a CUDA one
fails with the file and line of the repository's code that mixed them.

Training: the model is moved to fake ``'cuda'``; its data preprocessor, training forward (first
step: the teacher copies the student; second step: the EMA update), every loss term, the teacher
update and an optimizer step (the algorithm's own optimizer, with fake gradients) run on it, and
everything stays on the device. Not on fake tensors: the backward pass (the autograd engine needs
a CUDA driver; it runs on the CPU in every other training test, and its host syncs are counted
there, ``tests/test_utils/test_host_readbacks.py``), and DSC's ``torch.Generator(device='cuda')``
(needs a driver: here its k-means draws come from the device's default generator, the same
operators on the same device).

Host syncs: the ones each step pays on CUDA tensors are counted by call site and must be the
ones listed here (``benchmarks/README.md``, host-sync section): in mmdense's code only
SlotCon's count of kept slots; besides, MMEngine's data preprocessor copies the batch to the
device with blocking copies, and MMEngine's gradient clipping logs the gradient norm.
"""
import copy
import os.path as osp
import uuid
from collections import Counter
from itertools import islice
from types import SimpleNamespace

import pytest
import torch
from mmengine.logging import MessageHub, MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.runner import Runner, set_random_seed

from algorithm_table import ALGORITHMS, tiny_config
from fake_cuda import off_device, record_and_replay, set_fake_gradients
from helpers import ROOT
from mmdense.registry import MODELS
from mmdense.utils import register_all_modules

pytestmark = pytest.mark.usefixtures('one_thread')

# Host syncs per training step in mmdense's code, on CUDA tensors: {(what, file, function): n}.
# A method without an entry must have none.
MMDENSE_SYNCS_PER_STEP = {
    # one read of the numbers of kept slots per view pair (the predictor's BatchNorm normalises
    # over exactly those slots: their number is the shape of its input)
    'SlotCon': {('tolist', 'mmdense/models/losses/slot_contrast_loss.py', 'slot_contrast_loss'):
                2},
}
DATA_PREPROCESSOR = 'mmengine/model/base_model/data_preprocessor.py'
DATA_SAMPLE = 'mmengine/structures/base_data_element.py'
CHANNEL_SWAP = 'mmpretrain/models/utils/data_preprocessor.py'
CLIP_GRAD = 'mmengine/optim/optimizer/optimizer_wrapper.py'
STORE_APPEND = ('copy to host', 'mmdense/evaluation/feature_store.py', 'append')


def build(algorithm, toy_root, num_batches=2):
    """The tiny model of ``algorithm`` in train mode, its config and ``num_batches`` batches."""
    register_all_modules(init_default_scope=False)
    set_random_seed(0)  # the model and the loader's draws (a batch of SlotCon's toy model may
    # keep a single slot, which its predictor's BatchNorm refuses in training)
    cfg = tiny_config(algorithm, toy_root, max_iters=10)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    model.set_teacher_schedule(cfg.train_cfg.max_iters)
    batches = list(islice(Runner.build_dataloader(cfg.train_dataloader), num_batches))
    return cfg, model, batches


def framework_syncs(cfg, batch):
    """The host syncs a step pays outside mmdense: MMEngine's data preprocessor copies each view
    and each tensor of each data sample to the device with a blocking copy, mmpretrain's swaps the
    channels of each view with an index list (copied to the device), and gradient clipping reads
    the norm it logs."""
    views = len(batch['inputs'])
    sample_tensors = sum(isinstance(value, torch.Tensor)
                         for sample in batch['data_samples'] for value in sample.values())
    syncs = {('copy to device', DATA_PREPROCESSOR, 'cast_data'): views,
             ('copy to device', DATA_SAMPLE, 'to'): sample_tensors,
             ('copy to device', CHANNEL_SWAP, '<listcomp>'): views}
    clip_grad = cfg.optim_wrapper.get('clip_grad') or {}
    if clip_grad and clip_grad.get('type', 'norm') == 'norm':  # (other types return no norm)
        syncs['value', CLIP_GRAD, '_clip_grad'] = 1
    return syncs


def by_place(syncs: Counter) -> dict:
    return dict(Counter({(site.what, site.file, site.function): n for site, n in syncs.items()}))


class TrainingSteps:
    """Training steps without the backward pass, one optimizer wrapper per model (built after the
    model is on its device, as a Runner does): the data preprocessor, the forward with every loss
    term, the teacher update inside it, fake gradients and the optimizer step."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.optim_wrappers = {}

    def step(self, batch):

        def run(model):
            if id(model) not in self.optim_wrappers:
                self.optim_wrappers[id(model)] = build_optim_wrapper(model, self.cfg.optim_wrapper)
            optim_wrapper = self.optim_wrappers[id(model)]
            with optim_wrapper.optim_context(model):
                data = model.data_preprocessor(batch, True)
                losses = model._run_forward(data, mode='loss')
            model.parse_losses(losses)
            set_fake_gradients(model)
            optim_wrapper.step()
            optim_wrapper.zero_grad()
            return losses

        return run


@pytest.mark.parametrize('algorithm', list(ALGORITHMS))
def test_training_steps_stay_on_the_device(algorithm, toy_root):
    cfg, model, batches = build(algorithm, toy_root)
    reference = copy.deepcopy(model)
    if hasattr(model, 'kmeans_generator'):  # DSC: torch.Generator(device='cuda') needs a driver
        model.kmeans_generator = lambda device: None
    steps = TrainingSteps(cfg)
    outputs, syncs = record_and_replay([steps.step(batch) for batch in batches], model, reference)

    for losses in outputs:  # first step: teacher copy; second step: EMA update
        assert not off_device(losses), f'{algorithm}: outputs off the device: {off_device(losses)}'
        assert all(value.dim() == 0 for value in losses.values())
    assert not off_device(dict(model.named_parameters()))
    assert not off_device(dict(model.named_buffers()))
    optimizer = steps.optim_wrappers[id(model)].optimizer
    state = {f'{i}.{key}': value for i, param_state in enumerate(optimizer.state.values())
             for key, value in param_state.items() if key != 'step'}  # torch keeps steps on host
    assert optimizer.state and not off_device(state), off_device(state)

    expected = MMDENSE_SYNCS_PER_STEP.get(algorithm, {})
    for step, (batch, step_syncs) in enumerate(zip(batches, syncs)):
        assert by_place(step_syncs) == {**expected, **framework_syncs(cfg, batch)}, (
            f'{algorithm}, step {step}: host syncs on CUDA tensors by call site:\n  '
            + '\n  '.join(f'{n} x {site}' for site, n in sorted(step_syncs.items(), key=str)))


# ------------------------------------------------------------------- models outside training
def dense_eval_loader(toy_root, split, num_images, batch_size=2):
    from mmdense.evaluation import DenseEvalDataset, load_dataset_config
    from mmdense.evaluation.feature_store import build_loader
    data_cfg = dict(load_dataset_config('toy', toy_root), img_size=64)
    return data_cfg, build_loader(DenseEvalDataset(data_cfg, split, num_images), batch_size,
                                  num_workers=0)


@pytest.mark.parametrize('algorithm', list(ALGORITHMS))
def test_dense_features_are_extracted_on_the_device(algorithm, toy_root, tmp_path):
    """Dense-evaluation extraction (``extract_to_store``): images to the model's device, the
    transfer backbone there, features copied to the host for the store."""
    from mmdense.evaluation.feature_store import FeatureStore, extract_to_store
    _, model, _ = build(algorithm, toy_root, num_batches=0)
    model.eval()
    _, loader = dense_eval_loader(toy_root, 'val', 4)
    stores = []

    def extract(model):
        stores.append(FeatureStore(str(tmp_path / f'store{len(stores)}')))
        extract_to_store(model, loader, stores[-1], channel_order='rgb', grid=(4, 4))

    _, (syncs, ) = record_and_replay([extract], model, copy.deepcopy(model))
    cpu, fake = stores
    assert fake.feat_shape == cpu.feat_shape and fake.indices == cpu.indices == [0, 1, 2, 3]
    # the features of each batch were computed on the device and copied to the host once;
    # nothing else was read back (model_inputs takes the preprocessor's buffers as they are)
    assert by_place(syncs) == {STORE_APPEND: len(loader)}, syncs


def test_dense_eval_hook_evaluates_a_fake_cuda_model(toy_root, tmp_path):
    """The hook's whole evaluation: extraction on the device, the knn protocol run on the
    model's device from the stores read back."""
    from mmdense.engine.hooks import DenseEvalHook
    _, model, _ = build('DINO', toy_root, num_batches=0)
    logged = []

    def evaluate(model):
        hook = DenseEvalHook(dataset='toy', data_root=toy_root, protocol='knn', num_train=4,
                             num_val=2, img_size=64, cache_dir=str(tmp_path))
        runner = SimpleNamespace(
            model=model, iter=0,
            message_hub=MessageHub.get_instance(f'fake-cuda-{uuid.uuid4().hex}'),
            visualizer=SimpleNamespace(add_scalars=lambda scalars, step: logged.append(scalars)),
            logger=MMLogger.get_instance(f'fake-cuda-{uuid.uuid4().hex}'))
        hook.before_train(runner)
        return hook.evaluate(runner)

    (metrics, ), (syncs, ) = record_and_replay([evaluate], model, copy.deepcopy(model))
    assert set(metrics) >= {'mIoU', 'pAcc'} and logged[0] == logged[1], logged
    places = by_place(syncs)
    assert places[STORE_APPEND] == 2  # one batch of 4 train, one of 2 val images, on the device
    # the protocol ran on the model's device: it read values of CUDA tensors back
    assert any(file == 'mmdense/evaluation/protocols.py' for _, file, _ in places), places


def test_prototype_initialisation_runs_on_the_device(toy_root):
    """CoTAP's PrototypeInitHook: the student encodes batches on the device, k-means there, the
    prototypes written in place on the device."""
    from mmdense.engine.hooks import PrototypeInitHook
    _, model, batches = build('CoTAP', toy_root, num_batches=2)
    hook = PrototypeInitHook(num_images=4, windows_per_image=4, num_iters=2)

    def initialise(model):
        runner = SimpleNamespace(model=model, train_dataloader=batches,
                                 logger=MMLogger.get_instance(f'fake-cuda-{uuid.uuid4().hex}'))
        hook.before_train(runner)
        return model.backbone.object_filter

    (layer, ), _ = record_and_replay([initialise], model, copy.deepcopy(model))
    assert layer.prototypes.device.type == 'cuda'
    assert layer.prototypes_initialised.device.type == 'cuda'


def test_neighbour_mining_embeds_on_the_device(toy_root):
    """``tools/misc/build_nn_pairs.py``: the teacher backbone embeds the images on the device,
    the embeddings come back to the host."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'build_nn_pairs', osp.join(ROOT, 'tools/misc/build_nn_pairs.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    _, model, _ = build('DINO', toy_root, num_batches=0)
    model.eval()
    images = [dict(inputs=torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8))
              for _ in range(4)]
    loader = torch.utils.data.DataLoader(images, batch_size=2)

    (embeddings, ), (syncs, ) = record_and_replay(
        [lambda model: tool.embed_images(model, loader, next(model.parameters()).device)],
        model, copy.deepcopy(model))
    assert embeddings.device.type == 'cpu' and embeddings.shape[0] == 4
    assert by_place(syncs)['copy to host', 'tools/misc/build_nn_pairs.py', 'embed_images'] == \
        len(loader)


def test_feature_pictures_extract_on_the_device(toy_root):
    """``extract_features`` (``tools/analysis_tools/visualize_dense.py`` and the demo's pictures):
    batches to the device, features back to the host."""
    from mmdense.evaluation.features import extract_features
    _, model, _ = build('SlotCon', toy_root, num_batches=0)
    images = torch.randint(0, 256, (3, 3, 64, 64)).float()
    (feats, ), (syncs, ) = record_and_replay(
        [lambda model: extract_features(model, images, channel_order='rgb', batch_size=2)],
        model, copy.deepcopy(model))
    assert feats.device.type == 'cpu' and feats.shape[0] == 3
    # two batches: each copied to the device and its features back to the host, nothing else
    # (no read of the pixel range or of the preprocessor's mean/std)
    assert sorted((site.what, n) for site, n in syncs.items()) == [
        ('copy to device', 2), ('copy to host', 2)], syncs


@pytest.mark.parametrize('optimizer_type', ['SyncFreeLARS', 'BarlowTwinsLARS'])
def test_lars_steps_stay_on_the_device_without_host_syncs(optimizer_type):
    """mmdense's LARS optimizers (no toy config uses SyncFreeLARS, the recipes' LARS before
    BarlowTwinsLARS): their state on the device, their steps without a read."""
    from mmdense.engine import optimizers
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))

    def steps(model):
        matrices = [p for p in model.parameters() if p.dim() > 1]
        vectors = [p for p in model.parameters() if p.dim() == 1]
        optimizer = getattr(optimizers, optimizer_type)(
            [dict(params=matrices), dict(params=vectors, weight_decay=0.0, lars_exclude=True)],
            lr=0.1, momentum=0.9, weight_decay=1e-5)
        for _ in range(2):
            set_fake_gradients(model)
            optimizer.step()
        return optimizer

    (optimizer, ), (syncs, ) = record_and_replay([steps], model, copy.deepcopy(model))
    state = {f'{i}.{key}': value for i, param_state in enumerate(optimizer.state.values())
             for key, value in param_state.items()}
    assert len(optimizer.state) == 4 and not off_device(state), state
    assert not off_device(dict(model.named_parameters()))
    assert not syncs, syncs
