"""UNet factory and the multi-encoder fusion UNet (missing modalities, gradients, TorchScript, bad input)."""

from __future__ import annotations

import itertools

import pytest
import torch
from monai.networks.nets import UNet

from monai_ext.networks import MultiEncoderFusionUNet, build_unet, count_parameters


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_build_unet(spatial_dims, jit_script):
    net = build_unet(spatial_dims, 2, 3, channels=(4, 8, 16), strides=(2, 2), num_res_units=1).eval()
    assert isinstance(net, UNet)
    x = torch.randn(1, 2, *([16] * spatial_dims))
    y = net(x)
    assert y.shape == (1, 3, *([16] * spatial_dims))
    torch.testing.assert_close(jit_script(net)(x), y)
    print(f"build_unet {spatial_dims}D parameters: {count_parameters(net)}")
    with pytest.raises(ValueError, match="build_unet: `strides`"):
        build_unet(spatial_dims, 1, 1, channels=(4, 8), strides=(2, 2))


CASES = [(2, "hemis", 0), (2, "gated", 2), (3, "hemis", 2), (3, "gated", 0)]


@pytest.mark.parametrize("spatial_dims,fusion,heads", CASES)
def test_multi_encoder_unet(spatial_dims, fusion, heads, jit_script):
    torch.manual_seed(0)
    m = 3 if spatial_dims == 2 else 2
    net = MultiEncoderFusionUNet(
        spatial_dims, m, 1, 2, channels=(4, 8), strides=(2,), fusion=fusion, attention_heads=heads
    )
    size = [16] * spatial_dims
    x = torch.randn(2, m, *size)
    y = net(x)
    assert y.shape == (2, 2, *size)
    y.square().mean().backward()
    for i, level in enumerate(net.encoder_levels):
        for j, encoder in enumerate(level):
            grads = [p.grad for p in encoder.parameters()]
            assert all(g is not None and torch.isfinite(g).all() for g in grads)
            assert sum(float(g.abs().sum()) for g in grads) > 0, f"no gradient to encoder {j} level {i}"
    net.eval()
    scripted = jit_script(net)
    with torch.no_grad():
        for pattern in itertools.product([False, True], repeat=m):
            if not any(pattern):
                continue
            presence = torch.tensor([pattern, pattern])
            zeroed = x * presence.float().reshape(2, m, *([1] * spatial_dims))
            out = net(zeroed)  # presence inferred from the all-zero channels
            assert torch.isfinite(out).all()
            torch.testing.assert_close(net(x, presence), out)  # missing content is ignored
            if sum(pattern) == 1:
                torch.testing.assert_close(scripted(zeroed), out)
    print(f"MultiEncoderFusionUNet {spatial_dims}D {fusion}: {count_parameters(net)} parameters")


def test_multi_encoder_unet_modality_dropout_trains():
    torch.manual_seed(0)
    net = MultiEncoderFusionUNet(2, 2, 1, 1, channels=(4, 8), strides=(2,), modality_dropout=0.5)
    x = torch.randn(4, 2, 16, 16)
    target = (x[:, :1] + x[:, 1:] > 0).float()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_multi_encoder_unet_bad_input():
    net = MultiEncoderFusionUNet(2, 4, 1, 2, channels=(4, 8), strides=(2,))
    with pytest.raises(ValueError, match=r"MultiEncoderFusionUNet: `image` must have shape \(B, M\*C=4\*1=4"):
        net(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="MultiEncoderFusionUNet: `image` must have shape"):
        net(torch.randn(1, 4, 16, 16, 16))
    with pytest.raises(
        ValueError, match=r"MultiEncoderFusionUNet: `presence` has no modality present .*\[1\]"
    ):
        net(torch.randn(2, 4, 16, 16), presence=torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]]))
    with pytest.raises(
        ValueError, match=r"MultiEncoderFusionUNet: `presence` must have shape \(B, M\) = \(1, 4\)"
    ):
        net(torch.randn(1, 4, 16, 16), presence=torch.ones(1, 3))
    # an all-zero window (background of a sliding-window pass) is not an error when presence is
    # inferred: every modality counts as present, exactly as an explicit all-True mask
    net.eval()
    empty = net(torch.zeros(2, 4, 16, 16))
    assert torch.isfinite(empty).all()
    torch.testing.assert_close(empty, net(torch.zeros(2, 4, 16, 16), presence=torch.ones(2, 4)))
    with pytest.raises(ValueError, match="`fusion`"):
        MultiEncoderFusionUNet(2, 4, 1, 2, channels=(4, 8), strides=(2,), fusion="sum")
