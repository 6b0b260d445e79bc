import json
import os.path as osp
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmdense.engine.hooks import PrototypeInitHook
from mmdense.models.losses import ContinuousAPLoss, SinkhornCrossEntropyLoss
from mmdense.registry import DATASETS, MODELS
from mmdense.utils import register_all_modules
from algorithm_table import tiny_config
from helpers import ROOT, pair_batch, run_train, tiny_cotap

def test_all_terms_finite_and_only_the_student_learns():
    model = tiny_cotap()
    inputs, samples = pair_batch()
    losses = model.loss(inputs, samples)
    assert set(losses) == {'loss_patch', 'loss_cls', 'loss_cross_patch', 'loss_cross_cls'}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.backbone.object_filter.prototypes.grad.abs().sum() > 0
    assert model.backbone.patch_embed.projection.weight.grad.abs().sum() > 0
    assert model.patch_head.last_layer.weight_v.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())


@pytest.mark.parametrize('term', ['patch', 'cls', 'cross_patch', 'cross_cls'])
def test_each_term_sends_gradient_on_its_own(term):
    weights = dict.fromkeys(['patch', 'cls', 'cross_patch', 'cross_cls'], 0.0)
    weights[term] = 1.0
    model = tiny_cotap(loss_weights=weights)
    inputs, samples = pair_batch()
    losses = model.loss(inputs, samples)
    assert list(losses) == [f'loss_{term}']
    losses[f'loss_{term}'].backward()
    head = model.cls_head if term.endswith('cls') else model.patch_head
    other = model.patch_head if term.endswith('cls') else model.cls_head
    assert head.mlp[0].weight.grad.abs().sum() > 0
    assert other.mlp[0].weight.grad is None


def test_cross_terms_need_pairs_and_bad_config_is_refused():
    inputs, samples = pair_batch(paired=False)
    with pytest.raises(ValueError, match='NeighbourPairDataset'):
        tiny_cotap().loss(inputs, samples)
    losses = tiny_cotap(loss_weights=dict(cross_patch=0, cross_cls=0)).loss(inputs, samples)
    assert set(losses) == {'loss_patch', 'loss_cls'}
    with pytest.raises(KeyError, match='unknown loss_weights'):
        tiny_cotap(loss_weights=dict(ranking=1.0))
    head = dict(type='DINOHead', in_channels=48, out_channels=16)
    with pytest.raises(ValueError, match='^CoTAP: patch_head in_channels=48 does not match the '
                                         'backbone out_channels=96$'):  # 2·D
        tiny_cotap(patch_head=head)


def test_losses_are_stateless_modules_with_the_paper_defaults():
    model = tiny_cotap()
    assert isinstance(model.loss_distill, SinkhornCrossEntropyLoss)
    assert isinstance(model.loss_rank, ContinuousAPLoss)
    distill, rank = model.loss_distill, model.loss_rank
    assert (distill.student_temp, distill.sinkhorn_epsilon, distill.sinkhorn_iters) == (0.1, 0.05,
                                                                                       3)
    assert (rank.margin, rank.threshold, rank.chunk_size, rank.eps) == (0.1, 0.0, None, 1e-5)
    # no parameters or buffers: checkpoints keep the keys they had before the loss modules
    assert not any(key.startswith('loss_') for key in model.state_dict())
    # the hyper-parameters that moved into the modules are no longer CoTAP's
    for moved in ('student_temp', 'sinkhorn_epsilon', 'ranking_margin'):
        with pytest.raises(TypeError, match=moved):
            tiny_cotap(**{moved: 0.1})


def test_loss_module_configs_reach_only_their_terms():
    inputs, samples = pair_batch()

    def losses(**kwargs):
        return {k: v.item() for k, v in tiny_cotap(**kwargs).loss(inputs, samples).items()}

    default = losses()
    chunked = losses(loss_rank=dict(type='ContinuousAPLoss', chunk_size=3))
    assert chunked == pytest.approx(default, rel=1e-6)
    wider_margin = losses(loss_rank=dict(type='ContinuousAPLoss', margin=0.5))
    sharper_codes = losses(loss_distill=dict(type='SinkhornCrossEntropyLoss',
                                             sinkhorn_epsilon=0.01))
    for term in ('loss_patch', 'loss_cls', 'loss_cross_patch', 'loss_cross_cls'):
        ranking = term == 'loss_cross_patch'
        assert (wider_margin[term] == default[term]) != ranking, term
        assert (sharper_codes[term] == default[term]) == ranking, term


def test_negatives_are_never_the_image_or_its_neighbour():
    model = tiny_cotap(num_negatives=20)
    batch = 6
    partner = torch.arange(batch).roll(batch // 2)
    for negative in model.negative_partners(batch, torch.device('cpu')):
        index = torch.arange(batch)
        assert not (negative == index).any() and not (negative == partner).any()
        # A negative is on the same side of the batch as the neighbour.
        assert torch.equal(negative // (batch // 2), partner // (batch // 2))


def test_patch_loss_is_aligned_cross_entropy_against_sinkhorn_codes():
    model = tiny_cotap()
    boxes = torch.tensor([[[0, 0, 64, 64], [0, 0, 64, 64]]], dtype=torch.float32)
    flips = torch.tensor([[False, False]])
    logits = torch.randn(1, 16, 4, 4)
    teacher = [dict(patch=logits)]
    student = [dict(patch=logits * 2), dict(patch=logits * 2)]
    loss = model.patch_loss(student, teacher, boxes, flips, boxes[:, :1], flips[:, :1])
    # identical full-view boxes: plain per-pixel cross-entropy, averaged over both pairs
    codes = model.loss_distill.codes(logits, dim=1)
    student_temp = model.loss_distill.student_temp
    expected = -(codes * F.log_softmax(logits * 2 / student_temp, 1)).sum(1).mean()
    torch.testing.assert_close(loss, expected)


def save_tiny_dino_checkpoint(path):
    """A tiny DINO model saved like a runner checkpoint, config text in its meta."""
    cfg = tiny_config('DINO', 'unused', 1)
    register_all_modules(init_default_scope=False)
    init_default_scope('mmdense')
    torch.manual_seed(3)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.teacher.module.load_state_dict(torch.nn.ModuleDict(model.student_modules()).state_dict())
    torch.save(dict(state_dict=model.state_dict(), meta=dict(cfg=cfg.pretty_text)), path)
    return model


def test_backbone_initialises_from_a_dino_checkpoint(tmp_path):
    dino = save_tiny_dino_checkpoint(tmp_path / 'dino.pth')
    model = tiny_cotap(backbone_checkpoint=dict(path=str(tmp_path / 'dino.pth')))
    dino_backbone = dino.teacher['backbone'].state_dict()
    for key, value in model.backbone.state_dict().items():
        if key in dino_backbone:
            torch.testing.assert_close(value, dino_backbone[key], msg=key)
    with pytest.raises(KeyError, match='wrong prefix'):
        tiny_cotap(backbone_checkpoint=dict(path=str(tmp_path / 'dino.pth'),
                                            prefix='module.backbone.'))


def test_prototype_init_hook_runs_kmeans_on_last_block_windows():
    model = tiny_cotap()
    inputs, samples = pair_batch(batch=4)
    batches = [dict(inputs=[(v * 50 + 128).clamp(0, 255) for v in inputs],
                    data_samples=samples)] * 3
    runner = SimpleNamespace(model=model, train_dataloader=batches,
                             logger=SimpleNamespace(info=lambda msg: None))
    hook = PrototypeInitHook(num_images=8, windows_per_image=4, num_iters=5)
    hook.before_train(runner)
    layer = model.backbone.object_filter
    prototypes = layer.prototypes.detach().flatten(1)
    torch.testing.assert_close(prototypes.norm(dim=1), torch.ones(4))
    assert bool(layer.prototypes_initialised)
    # Every prototype is the normalised mean of some bank windows: it is close to one of them.
    bank = F.normalize(hook.window_bank(runner, model), dim=1)
    assert (prototypes @ bank.T).max(dim=1).values.min() > 0.5
    # A second call (e.g. after resuming) leaves them alone.
    before = layer.prototypes.detach().clone()
    hook.before_train(runner)
    torch.testing.assert_close(layer.prototypes.detach(), before)


def test_nn_tool_on_toy_set_excludes_self_and_is_deterministic(toy_root, tmp_path):
    save_tiny_dino_checkpoint(tmp_path / 'dino.pth')
    outputs = []
    for name in ('a.json', 'b.json'):
        cmd = [sys.executable, 'tools/misc/build_nn_pairs.py', 'configs/dino/vit-s_toy.py',
               str(tmp_path / 'dino.pth'), '--out', str(tmp_path / name), '--topk', '3',
               '--img-size', '64', '--num-workers', '0', '--data-root', toy_root,
               '--batch-size', '7', '--chunk-size', '5']
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        with open(tmp_path / name) as f:
            outputs.append(json.load(f))
    first, second = outputs
    assert first['neighbours'] == second['neighbours']
    assert len(first['images']) == 24 and first['images'][0] == 'images/train/000000.jpg'
    for i, neighbours in enumerate(first['neighbours']):
        assert len(neighbours) == 3 and i not in neighbours and len(set(neighbours)) == 3

    dataset = DATASETS.build(dict(
        type='NeighbourPairDataset', neighbours_file=str(tmp_path / 'a.json'),
        dataset=dict(type='UnlabeledImageDataset', data_root=toy_root,
                     ann_file='meta/train.txt', pipeline=Config.fromfile(
                         osp.join(ROOT, 'configs/cotap/vit-s_toy.py')).train_pipeline)))
    sample = dataset[5]
    assert len(sample['inputs']) == 2 * 8
    assert sample['data_samples'].crop_boxes.shape == (16, 4)
    assert sample['data_samples'].neighbour_idx in first['neighbours'][5]


def test_neighbour_file_errors_name_the_file(toy_root, tmp_path):
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps(dict(images=['images/train/000000.jpg', 'images/train/000001.jpg'],
                                   neighbours=[[1], [0]])))
    inner = dict(type='UnlabeledImageDataset', data_root=toy_root, ann_file='meta/train.txt')
    with pytest.raises(KeyError, match='bad.json.*no neighbours for 22'):
        DATASETS.build(dict(type='NeighbourPairDataset', neighbours_file=str(bad),
                            dataset=inner))
    with pytest.raises(FileNotFoundError, match='build_nn_pairs'):
        DATASETS.build(dict(type='NeighbourPairDataset',
                            neighbours_file=str(tmp_path / 'missing.json'), dataset=inner))


def test_toy_training_from_a_dino_checkpoint_logs_every_term(toy_root, tmp_path):
    dino_cfg = tmp_path / 'dino.py'
    tiny_config('DINO', toy_root, max_iters=2).dump(str(dino_cfg))
    run_train(str(dino_cfg), str(tmp_path / 'dino'))
    cfg = tiny_config('CoTAP', toy_root, max_iters=3)
    cfg.model.backbone_checkpoint = dict(path=str(tmp_path / 'dino/iter_2.pth'),
                                         prefix='teacher.module.backbone.')
    cfg.custom_hooks = [dict(type='PrototypeInitHook', num_images=8, windows_per_image=4)]
    cotap_cfg = tmp_path / 'cotap.py'
    cfg.dump(str(cotap_cfg))
    log = run_train(str(cotap_cfg), str(tmp_path / 'cotap'))
    assert 'CoTAP: loaded' in log and 'PrototypeInitHook: 4 prototypes' in log
    (run, ) = [p for p in (tmp_path / 'cotap').iterdir() if (p / 'vis_data').exists()]
    with open(run / 'vis_data/scalars.json') as f:
        records = [json.loads(line) for line in f if 'loss' in line]
    assert [r['step'] for r in records] == [1, 2, 3]
    for record in records:
        terms = [record[f'loss_{t}'] for t in ('patch', 'cls', 'cross_patch', 'cross_cls')]
        assert all(torch.isfinite(torch.tensor(terms)))


def test_per_source_loss_terms():
    model = tiny_cotap()
    inputs, samples = pair_batch()
    for sample in samples:
        sample.set_metainfo(dict(loss_terms=('cls', 'cross_cls')))
    assert set(model.loss(inputs, samples)) == {'loss_cls', 'loss_cross_cls'}
    samples[0].set_metainfo(dict(loss_terms=('patch', 'cross_patch')))
    with pytest.raises(ValueError, match='SourceGroupedBatchSampler'):
        model.loss(inputs, samples)


@pytest.mark.parametrize('n', [2, 3, 5, 17])
def test_random_derangements_have_no_fixed_point(n):
    from mmdense.models.algorithms.cotap import random_derangement
    torch.manual_seed(n)
    for _ in range(200):
        sigma = random_derangement(n, torch.device('cpu'))
        assert sorted(sigma.tolist()) == list(range(n))
        assert (sigma != torch.arange(n)).all()


def test_random_derangements_are_uniform_and_read_nothing_back():
    from mmdense.models.algorithms.cotap import random_derangement
    from mmdense.utils import count_host_readbacks
    torch.manual_seed(0)
    with count_host_readbacks() as readbacks:
        draws = [random_derangement(4, torch.device('cpu')) for _ in range(4500)]
    assert sum(readbacks.values()) == 0, readbacks
    counts = {}
    for sigma in draws:
        counts[tuple(sigma.tolist())] = counts.get(tuple(sigma.tolist()), 0) + 1
    assert len(counts) == 9  # the 9 derangements of 4 elements, each about 500 times
    assert all(400 < c < 600 for c in counts.values()), counts


def test_random_derangement_falls_back_to_a_cycle():
    from mmdense.models.algorithms.cotap import random_derangement
    fallbacks = 0
    for seed in range(100):
        torch.manual_seed(seed)
        candidate = torch.rand(1, 6).argsort(dim=1)[0]  # the draw of a single attempt
        torch.manual_seed(seed)
        sigma = random_derangement(6, torch.device('cpu'), attempts=1)
        assert (sigma != torch.arange(6)).all()
        if (candidate == torch.arange(6)).any():  # a fixed point: the fallback cycle is used
            fallbacks += 1
            position, length = 0, 0
            while True:
                position, length = int(sigma[position]), length + 1
                if position == 0:
                    break
            assert length == 6
        else:
            assert torch.equal(sigma, candidate)
    assert fallbacks > 30  # about 1 − 1/e of the draws
