"""DenseNet factory and the image + tabular network (FiLM / DAFT / concat; class and survival heads)."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import DenseNet121, DenseNet169

from monai_ext.losses import CoxPHLoss
from monai_ext.networks import ImageTabularNet, build_densenet, count_parameters

NAN = float("nan")


@pytest.mark.parametrize("depth,spatial_dims", [(121, 2), (169, 3)])
def test_build_densenet(depth, spatial_dims, jit_script):
    net = build_densenet(depth, spatial_dims, 2, 3, init_features=4, growth_rate=2, bn_size=2).eval()
    assert isinstance(net, DenseNet121 if depth == 121 else DenseNet169)
    x = torch.randn(2, 2, *([32] * spatial_dims))
    y = net(x)
    assert y.shape == (2, 3)
    if depth == 121:  # scripting DenseNet169 works the same (same MONAI class) but compiles for ~10 s
        torch.testing.assert_close(jit_script(net)(x), y)
    print(f"DenseNet{depth} {spatial_dims}D (tiny) parameters: {count_parameters(net)}")
    with pytest.raises(ValueError, match="build_densenet: `depth` must be 121 or 169"):
        build_densenet(201, 2, 1, 1)


CASES = [(2, "film", "cox"), (3, "daft", "discrete"), (2, "concat", None), (3, "film", None)]


@pytest.mark.parametrize("spatial_dims,conditioning,survival", CASES)
def test_image_tabular_net(spatial_dims, conditioning, survival, jit_script):
    torch.manual_seed(0)
    net = ImageTabularNet(
        spatial_dims,
        2,
        1,
        tabular_features=3,
        num_classes=2,
        survival=survival,
        num_time_bins=4,
        channels=(4, 8),
        strides=(2,),
        conditioning=conditioning,
        tabular_hidden=8,
        daft_reduction=2,
    )
    x = torch.randn(3, 2, *([8] * spatial_dims))
    tab = torch.tensor([[0.5, NAN, 1.0], [NAN, NAN, NAN], [1.0, 2.0, -1.0]])
    y = net(x, tabular=tab)
    width = 2 + {None: 0, "cox": 1, "discrete": 4}[survival]
    assert y.shape == (3, width) and torch.isfinite(y).all()
    parts = net.split_outputs(y)
    assert parts["logits"].shape == (3, 2)
    assert ("survival" in parts) == (survival is not None)
    y.square().sum().backward()
    for m, encoder in enumerate(net.encoders):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters()), m
    assert net.tabular_encoder[1].weight.grad.abs().sum() > 0
    net.eval()
    scripted = jit_script(net)
    with torch.no_grad():
        for presence in ([True, False], [False, True]):
            x_missing = x * torch.tensor(presence).float().reshape(1, 2, *([1] * spatial_dims))
            out = net(x_missing, tabular=tab)
            assert torch.isfinite(out).all()
            torch.testing.assert_close(scripted(x_missing, None, tab), out)
        # tabular values matter
        assert not torch.allclose(net(x, tabular=tab), net(x, tabular=torch.zeros_like(tab)))
    print(f"ImageTabularNet {spatial_dims}D {conditioning}: {count_parameters(net)} parameters")


def test_image_tabular_net_bad_input():
    net = ImageTabularNet(2, 2, 1, 3, channels=(4, 8), strides=(2,), missing_indicator=False)
    x = torch.randn(2, 2, 8, 8)
    with pytest.raises(ValueError, match=r"ImageTabularNet: `tabular` must have shape \(B, T=3\)"):
        net(x, tabular=torch.zeros(2, 4))
    with pytest.raises(
        ValueError, match=r"ImageTabularNet: `tabular` contains NaN .*missing_indicator=False"
    ):
        net(x, tabular=torch.tensor([[1.0, NAN, 0.0]] * 2))
    with pytest.raises(ValueError, match=r"ImageTabularNet: `tabular` of shape \(B, 3\) is required"):
        net(x)
    with pytest.raises(ValueError, match=r"ImageTabularNet: `image` must have shape \(B, M\*C=2\*1=2"):
        net(torch.randn(2, 3, 8, 8), tabular=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="ImageTabularNet: `presence` has no modality present"):
        net(x, presence=torch.zeros(2, 2), tabular=torch.zeros(2, 3))
    image_only = ImageTabularNet(2, 1, 1, 0, channels=(4, 8), strides=(2,))
    with pytest.raises(ValueError, match="ImageTabularNet: `tabular` was given"):
        image_only(torch.randn(1, 1, 8, 8), tabular=torch.zeros(1, 3))
    with pytest.raises(ValueError, match="`survival`"):
        ImageTabularNet(2, 1, 1, 0, survival="weibull")


def test_image_tabular_net_learns_cox_risk_from_tabular():
    """A plain training loop: the risk is a function of a tabular variable that is sometimes missing."""
    torch.manual_seed(0)
    n = 32
    tab = torch.randn(n, 2)
    time = torch.exp(-1.5 * tab[:, 0]) + 0.01 * torch.rand(n)
    target = torch.stack([time, (torch.rand(n) < 0.8).float()], dim=1)
    tab[::5, 1] = NAN
    net = ImageTabularNet(
        2, 1, 1, 2, num_classes=0, survival="cox", channels=(2, 4), strides=(2,), tabular_hidden=8
    )
    image = torch.randn(n, 1, 8, 8)
    opt = torch.optim.Adam(net.parameters(), lr=2e-2)
    loss_fn = CoxPHLoss()
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = loss_fn(net(image, tabular=tab), target)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < first - 0.3
