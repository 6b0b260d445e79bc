import pytest
import torch
from mmpretrain.models import VisionTransformer

from mmdense.models.backbones import ObjectAwareFilterLayer, ObjectAwareViT

ARCH = dict(embed_dims=48, num_layers=2, num_heads=3, feedforward_channels=96)


def build(**kwargs):
    torch.manual_seed(0)
    model = ObjectAwareViT(arch=ARCH, img_size=64, patch_size=16, num_prototypes=5, **kwargs)
    model.init_weights()
    model.eval()  # mmpretrain's ViT.train() does not return the module
    return model


@pytest.mark.parametrize('out_type, shape', [('cls_token', (2, 96)), ('featmap', (2, 96, 4, 4)),
                                             ('raw', (2, 17, 96))])
def test_output_has_twice_the_embedding_dims(out_type, shape):
    model = build(out_type=out_type)
    (out, ) = model(torch.randn(2, 3, 64, 64))
    assert out.shape == shape and model.out_channels == 96
    dense = model.forward_dense(torch.randn(2, 3, 64, 80), with_cls_attention=True)
    assert dense['cls'].shape == (2, 96)
    assert dense['patches'].shape == (2, 96, 4, 5)
    assert dense['cls_attention'].shape == (2, 4, 5)


def test_plain_vit_weights_load_and_give_the_original_half():
    torch.manual_seed(1)
    plain = VisionTransformer(arch=ARCH, img_size=64, patch_size=16, out_type='raw')
    plain.init_weights()
    plain.eval()
    model = build(out_type='raw')
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected
    assert sorted(missing) == ['layers.1.out_norm.bias', 'layers.1.out_norm.weight',
                               'layers.1.prototypes', 'layers.1.prototypes_initialised']
    model.object_filter.out_norm = torch.nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model(x)[0][..., :48], plain(x)[0])


def test_one_prototype_gives_uniform_attention():
    layer = ObjectAwareFilterLayer(48, 3, 96, num_prototypes=1).eval()
    filtered = layer.filter_tokens(torch.randn(2, 1 + 9, 48), (3, 3))
    # softmax over a single prototype is 1 for every token: all tokens get its value.
    torch.testing.assert_close(filtered, filtered[:, :1].expand_as(filtered))


def test_filter_attends_over_prototypes_with_kernel_windows():
    torch.manual_seed(2)
    layer = ObjectAwareFilterLayer(48, 3, 96, num_prototypes=4).eval()
    x = torch.randn(1, 1 + 16, 48)
    base = layer.filter_tokens(x, (4, 4))
    # Changing one patch changes the filtered tokens of its 3x3 neighbourhood only
    # (and the CLS token's, which depends on the CLS query only: unchanged).
    changed = x.clone()
    changed[0, 1 + 0] += 5.0  # patch (0, 0)
    diff = (layer.filter_tokens(changed, (4, 4)) - base).abs().sum(-1)[0]
    moved = (diff > 1e-6).nonzero().flatten().tolist()
    assert moved == [1, 2, 5, 6]  # tokens of patches (0,0), (0,1), (1,0), (1,1)


def test_gradients_reach_prototypes_unless_frozen():
    model = build(out_type='featmap')
    model.train()
    model(torch.randn(2, 3, 32, 32))[0].sum().backward()
    assert model.object_filter.prototypes.grad.abs().sum() > 0
    frozen = build(out_type='featmap', freeze_prototypes=True)
    assert not frozen.object_filter.prototypes.requires_grad


def test_cls_attention_is_a_distribution_over_tokens():
    model = build()
    dense = model.forward_dense(torch.randn(3, 3, 64, 64), with_cls_attention=True)
    total = dense['cls_attention'].sum(dim=(1, 2))
    assert torch.all(total > 0) and torch.all(total < 1)


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match='out_type'):
        ObjectAwareViT(arch=ARCH, out_type='avg_featmap')
    with pytest.raises(ValueError, match='out_indices'):
        ObjectAwareViT(arch=ARCH, out_indices=(0, 1))
    with pytest.raises(ValueError, match='odd'):
        ObjectAwareFilterLayer(48, 3, 96, kernel_size=2)
