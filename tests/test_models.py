"""Every registered model: forward + backward, shapes, finite gradients; registry errors."""
from __future__ import annotations

import pytest
import torch

from ibnb.core.models import count_parameters, create_model, list_models


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("shape", [(3, 32), (1, 28)])
def test_forward_backward_every_model(name, shape):
    channels, size = shape
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_channels=channels, image_size=size)
    x = torch.randn(3, channels, size, size)
    out = model(x)
    assert out.shape == (3, 7)
    out.logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_registry_errors_are_clear():
    with pytest.raises(KeyError, match="available: .*resnet18"):
        create_model("resnet19")
    with pytest.raises(TypeError, match="create_model\\('cnn'\\)"):
        create_model("cnn", depht=3)


def test_resnet18_is_the_standard_cifar_resnet18():
    # 11,173,962 parameters: the usual CIFAR ResNet-18 (3x3 stem, no max-pool, widths 64-512, 10 classes)
    assert count_parameters(create_model("resnet18")) == 11_173_962


def test_spatial_attention_is_a_multiplicative_map():
    model = create_model("cnn_sa", width=4)
    model.eval()
    model(torch.randn(2, 3, 32, 32))
    maps = [m.last_map for m in model.modules() if type(m).__name__ == "SpatialAttention"]
    assert len(maps) == 3 and maps[0].shape == (2, 1, 32, 32)
    assert all(((m > 0) & (m < 1)).all() for m in maps)


def test_vit_pooling_options():
    for pool in ("cls", "mean"):
        assert create_model("vit", dim=16, depth=1, heads=2, pool=pool)(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="pool"):
        create_model("vit", pool="max")
