"""The network of DESIGN §5: circular padding, no pooling, logits out."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from glasscam.analysis.cnn.network import (
    GRADCAM_LAYER,
    CircularConv2d,
    CNNConfig,
    GlassCNN,
    circular_pad2d,
    probabilities,
    resolve_device,
)
from torch import nn


@pytest.mark.parametrize("p", [1, 2])
def test_circular_pad_matches_torch_and_gradcheck(p):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.equal(circular_pad2d(x, p), F.pad(x, (p, p, p, p), mode="circular"))
    assert torch.autograd.gradcheck(lambda t: circular_pad2d(t, p), (x,))


@pytest.mark.parametrize("k", [3, 5])
def test_circular_conv_equals_conv2d_circular_mode(k):
    torch.manual_seed(1)
    ours = CircularConv2d(2, 4, k)
    ref = nn.Conv2d(2, 4, k, padding=k // 2, padding_mode="circular")
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 2, 12, 12, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y2 = ours(x), ref(x2)
    torch.testing.assert_close(y, y2, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(y)
    y.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-5)


def test_architecture_three_circular_convs_no_pooling_logits():
    cfg = CNNConfig(channels=2, grid=16)
    model = GlassCNN(cfg)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3 and all(isinstance(m, CircularConv2d) for m in convs)
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.Softmax)) for m in model.modules())
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [cfg.fc_width, 2]
    assert linears[0].in_features == cfg.conv_channels[-1] * 16 * 16  # no pooling
    assert isinstance(model.dropout, nn.Dropout)
    model.eval()
    x = torch.rand(4, 2, 16, 16)
    logits = model(x)
    assert logits.shape == (4, 2)
    assert not torch.allclose(logits.sum(1), torch.ones(4))  # not softmaxed
    torch.testing.assert_close(probabilities(logits).sum(1), torch.ones(4))
    assert model.feature_maps(x).shape == (4, cfg.conv_channels[-1], 16, 16)
    assert isinstance(model.get_submodule(GRADCAM_LAYER), nn.ReLU)


def test_rolling_the_input_rolls_the_feature_maps():
    torch.manual_seed(2)
    model = GlassCNN(CNNConfig(grid=16)).eval()
    x = torch.rand(2, 2, 16, 16)
    with torch.no_grad():
        a = model.feature_maps(x)
        for k in (1, 5):
            for dims in ((2,), (3,), (2, 3)):
                shifts = (k,) * len(dims)
                rolled = model.feature_maps(torch.roll(x, shifts, dims))
                torch.testing.assert_close(rolled, torch.roll(a, shifts, dims), atol=1e-5, rtol=0)


def test_wrong_input_size_is_named_and_config_roundtrip():
    model = GlassCNN(CNNConfig(grid=16))
    with pytest.raises(ValueError, match=r"\[B, 2, 16, 16\]"):
        model(torch.rand(1, 2, 32, 32))
    cfg = CNNConfig(grid=8, conv_channels=(4, 8, 8), fc_width=16)
    assert CNNConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="kernel_size"):
        CNNConfig(kernel_size=4)


def test_input_standardisation_is_part_of_the_model_and_gradcam_sees_it():
    """x -> (x - mean_c) / std_c inside forward: a standardised model on raw images equals the
    same weights on standardised images; the stats round-trip through the config (checkpoint),
    are not in the state dict, and Grad-CAM still equals captum's LayerGradCam."""
    from captum.attr import LayerGradCam
    from glasscam.analysis.cnn.gradcam import grad_cam

    mean, std = (0.4, 0.2), (0.5, 0.25)
    cfg = CNNConfig(grid=16, input_mean=mean, input_std=std)
    assert CNNConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["input_mean"] == [0.4, 0.2]
    torch.manual_seed(3)
    model = GlassCNN(cfg).eval()
    plain = GlassCNN(CNNConfig(grid=16)).eval()
    assert model.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(model.state_dict())
    x = torch.rand(3, 2, 16, 16)
    z = (x - torch.tensor(mean).view(1, 2, 1, 1)) / torch.tensor(std).view(1, 2, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(z), atol=1e-5, rtol=1e-5)
    cam, _ = grad_cam(model, x)
    ref = LayerGradCam(model, model.get_submodule(GRADCAM_LAYER)).attribute(
        x, target=1, relu_attributions=True
    )
    torch.testing.assert_close(cam, ref[:, 0].detach(), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="together"):
        CNNConfig(input_mean=(0.0, 0.0))
    with pytest.raises(ValueError, match="one value per channel"):
        CNNConfig(input_mean=(0.0,), input_std=(1.0,))
    with pytest.raises(ValueError, match="positive"):
        CNNConfig(input_mean=(0.0, 0.0), input_std=(1.0, 0.0))


def test_resolve_device_contract(monkeypatch):
    """Device names against fixed truths, CUDA presence planted both ways."""
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cpu:0") == torch.device("cpu", 0)
    with pytest.raises((ValueError, RuntimeError), match="bogus"):
        resolve_device("bogus")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match=rf"'{name}'.*CUDA is not available"):
            resolve_device(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")
