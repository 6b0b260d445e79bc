import torch

from mmdense.models.heads import DINOHead


def test_shapes_and_cosine_outputs_with_fixed_norm():
    head = DINOHead(in_channels=16, out_channels=10, hidden_channels=32,
                    bottleneck_channels=8, norm_last_layer=True)
    head.init_weights()
    out = head(torch.randn(4, 16))
    assert out.shape == (4, 10)
    assert out.abs().max() <= 1 + 1e-5  # normalised bottleneck x unit prototypes
    assert head(torch.randn(2, 5, 16)).shape == (2, 5, 10)
    assert not head.last_layer.weight_g.requires_grad


def test_trainable_norm_and_gradients():
    head = DINOHead(in_channels=8, out_channels=6, hidden_channels=16, bottleneck_channels=4,
                    num_layers=2, norm_last_layer=False)
    assert head.last_layer.weight_g.requires_grad
    head(torch.randn(3, 8)).sum().backward()
    assert all(p.grad is not None for p in head.parameters())
