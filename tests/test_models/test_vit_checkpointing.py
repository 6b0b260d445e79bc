"""``with_cp`` on mmdense's ViTs: same outputs and gradients, layers actually checkpointed."""
import copy

import pytest
import torch
from mmpretrain.models import VisionTransformer

from mmdense.models.backbones import (ObjectAwareViT, QueryVisionTransformer,
                                      VisionTransformerCP, vit_cp)

ARCH = dict(embed_dims=48, num_layers=3, num_heads=3, feedforward_channels=96)
# drop-path and dropout on, so the recomputation must replay the forward pass's random masks
COMMON = dict(arch=ARCH, img_size=64, patch_size=16, drop_path_rate=0.3, drop_rate=0.1)


@pytest.fixture
def checkpoint_calls(monkeypatch):
    calls = []
    original = vit_cp.checkpoint

    def counting(fn, *args, **kwargs):
        calls.append(fn)
        return original(fn, *args, **kwargs)

    monkeypatch.setattr(vit_cp, 'checkpoint', counting)
    return calls


def pair(cls, **kwargs):
    """(plain, checkpointed) models with the same weights, in training mode."""
    torch.manual_seed(0)
    plain = cls(**COMMON, **kwargs)
    plain.init_weights()
    checkpointed = copy.deepcopy(plain) if cls is not VisionTransformer else \
        VisionTransformerCP(**COMMON, **kwargs)
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.with_cp = True
    plain.train()
    checkpointed.train()
    return plain, checkpointed


def outputs_and_grads(model, run, seed=1):
    torch.manual_seed(seed)
    images = torch.randn(2, 3, 64, 64, requires_grad=True)
    outs = run(model, images)
    torch.manual_seed(seed + 1)
    loss = sum((out * torch.randn_like(out)).sum() for out in outs)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    grads['images'] = images.grad
    return [out.detach() for out in outs], grads


def assert_identical(plain, checkpointed, run):
    plain_outs, plain_grads = outputs_and_grads(plain, run)
    cp_outs, cp_grads = outputs_and_grads(checkpointed, run)
    assert len(plain_outs) == len(cp_outs)
    for a, b in zip(plain_outs, cp_outs):
        assert torch.equal(a, b)
    assert plain_grads.keys() == cp_grads.keys() and len(plain_grads) > 1
    for name in plain_grads:
        assert torch.equal(plain_grads[name], cp_grads[name]), name


def plain_forward(model, images):
    return list(model(images))


def test_plain_vit_matches_mmpretrain(checkpoint_calls):
    plain, checkpointed = pair(VisionTransformer, out_type='raw', out_indices=(1, 2))
    assert type(plain) is VisionTransformer
    assert_identical(plain, checkpointed, plain_forward)
    assert len(checkpoint_calls) == ARCH['num_layers']


def test_query_vit_both_paths(checkpoint_calls):
    plain, checkpointed = pair(QueryVisionTransformer, out_type='cls_token')

    def with_queries(model, images):
        torch.manual_seed(5)
        queries = torch.randn(2, 3, 3, 16, 32)
        outs, query_feats = model.forward_with_queries(images, queries)
        return list(outs) + [query_feats]

    assert_identical(plain, checkpointed, with_queries)
    assert_identical(plain, checkpointed, plain_forward)
    assert len(checkpoint_calls) == 2 * ARCH['num_layers']


def test_object_aware_vit_both_paths(checkpoint_calls):
    plain, checkpointed = pair(ObjectAwareViT, num_prototypes=4, out_type='featmap')

    def dense(model, images):
        out = model.forward_dense(images, with_cls_attention=True)
        assert not out['cls_attention'].requires_grad
        return [out['cls'], out['patches']]

    assert_identical(plain, checkpointed, dense)
    assert_identical(plain, checkpointed, plain_forward)
    # every layer, the object-aware filter included
    assert len(checkpoint_calls) == 2 * ARCH['num_layers']


def test_not_checkpointed_without_a_graph_or_in_eval(checkpoint_calls):
    model = VisionTransformerCP(**COMMON, with_cp=True)
    model.train()
    with torch.no_grad():  # an EMA teacher
        model(torch.randn(1, 3, 64, 64))
    model.eval()
    model(torch.randn(1, 3, 64, 64))
    assert checkpoint_calls == []
    assert not VisionTransformerCP(**COMMON).with_cp  # off by default


def test_config_flag_and_checkpoint_compatibility():
    from mmdense.registry import MODELS
    model = MODELS.build(dict(type='VisionTransformerCP', with_cp=True, **COMMON))
    assert model.with_cp
    plain = VisionTransformer(**COMMON)
    assert model.load_state_dict(plain.state_dict()).missing_keys == []
    for cls in (QueryVisionTransformer, ObjectAwareViT):
        assert cls(**COMMON, with_cp=True).with_cp
