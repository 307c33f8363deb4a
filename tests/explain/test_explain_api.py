"""Target-layer choice, per-feature tabular attributions, writers and the bundle handler."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image
from torch import nn

from monai_ext.explain import (
    AttributionSaver,
    find_target_layer,
    grad_cam,
    occlusion_map,
    overlay_rgb,
    save_attribution_nifti,
    save_attribution_png,
    tabular_integrated_gradients,
    tabular_occlusion,
)
from monai_ext.networks import ImageTabularNet, build_densenet


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_densenet_target_layer_keeps_spatial_map(spatial_dims):
    net = build_densenet(121, spatial_dims, 1, 3, init_features=4, growth_rate=4)
    small = torch.rand((1, 1) + (32,) * spatial_dims)
    # the last block is 1x1 at 32 px: the chosen layer is an earlier, 2-px map
    assert find_target_layer(net, small) == "features.transition3.conv"
    if spatial_dims == 2:
        assert find_target_layer(net, torch.rand(1, 1, 64, 64)) == "class_layers.relu"
    maps = grad_cam(net, small.expand(2, -1, *small.shape[2:]).clone(), class_idx=torch.tensor([0, 2]))
    assert maps.shape == (2, 1) + (32,) * spatial_dims
    assert float(maps.amin()) >= 0 and float(maps.amax()) <= 1
    # hooks and inplace flags of the user's model are restored
    assert all(not m._forward_hooks and not m._backward_hooks for m in net.modules())
    assert net.class_layers.relu.inplace


@pytest.mark.parametrize("conditioning", ["film", "daft", "concat"])
def test_image_tabular_target_layer_and_maps(conditioning):
    torch.manual_seed(0)
    net = ImageTabularNet(3, 2, 1, 3, channels=(4, 8), strides=(2,), conditioning=conditioning)
    image, tab = torch.rand(2, 2, 8, 8, 8), torch.tensor([[1.0, float("nan"), 0.0], [0.0, 1.0, 2.0]])
    # the tabular-conditioned fused map (identity after fusion for concat conditioning)
    assert find_target_layer(net, image, tabular=tab) == "condition"
    cam = grad_cam(net, image, forward_kwargs={"tabular": tab})
    occ = occlusion_map(net, image, mask_size=4, forward_kwargs={"tabular": tab})
    assert cam.shape == occ.shape == (2, 1, 8, 8, 8)
    assert torch.isfinite(cam).all() and torch.isfinite(occ).all()


def test_bad_inputs_are_named():
    net = build_densenet(121, 2, 1, 2, init_features=4, growth_rate=4)
    with pytest.raises(ValueError, match="min_spatial"):
        find_target_layer(net, torch.rand(1, 1, 32, 32), min_spatial=64)
    with pytest.raises(ValueError, match="target_layer"):
        grad_cam(net, torch.rand(1, 1, 32, 32), target_layer="nope")
    with pytest.raises(ValueError, match="method"):
        grad_cam(net, torch.rand(1, 1, 32, 32), method="lime")
    with pytest.raises(ValueError, match="class_idx"):
        grad_cam(net, torch.rand(2, 1, 32, 32), class_idx=torch.tensor([0, 1, 1]))


def _trained_tabular_net() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Label = sign of tabular feature 1; features 0 and 2 are noise; the image carries no signal."""
    torch.manual_seed(0)
    net = ImageTabularNet(2, 1, 1, 3, channels=(4, 8), strides=(2,), conditioning="concat")
    tab = torch.randn(256, 3)
    y = (tab[:, 1] > 0).long()
    image = torch.randn(256, 1, 8, 8)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(150):
        idx = torch.arange(step * 32, step * 32 + 32) % 256
        loss = nn.functional.cross_entropy(net(image[idx], tabular=tab[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval(), image[:32], tab[:32]


def test_tabular_attributions_find_the_deciding_feature():
    net, image, tab = _trained_tabular_net()
    y = (tab[:, 1] > 0).long()
    ig = tabular_integrated_gradients(net, image, tab, class_idx=y, steps=16)
    occ = tabular_occlusion(net, image, tab, class_idx=y, reference=0.0)
    assert (ig.abs().mean(0).argmax(), occ.abs().mean(0).argmax()) == (1, 1)
    # completeness: attributions sum to f(x) - f(baseline) (observed zeros)
    with torch.no_grad():
        rows = torch.arange(32)
        delta = net(image, tabular=tab)[rows, y] - net(image, tabular=torch.zeros_like(tab))[rows, y]
    torch.testing.assert_close(ig.sum(1), delta, atol=2e-2, rtol=2e-2)


def test_tabular_missing_feature_gets_the_effect_of_missingness():
    net, image, tab = _trained_tabular_net()
    tab = tab[:4].clone()
    tab[:, 1] = float("nan")
    ig = tabular_integrated_gradients(net, image[:4], tab, class_idx=1)
    occ = tabular_occlusion(net, image[:4], tab, class_idx=1)  # reference: missing
    assert torch.isfinite(ig).all()
    assert torch.equal(occ[:, 1], torch.zeros(4))  # already missing -> no change
    with pytest.raises(ValueError, match="tabular"):
        tabular_integrated_gradients(net, image[:4], tab[:3])

    class Plain(nn.Module):
        def forward(self, image, presence=None, tabular=None):
            return tabular.sum(1, keepdim=True)

    with pytest.raises(ValueError, match="NaN"):
        tabular_integrated_gradients(Plain(), image[:4], tab)


def test_nifti_writer_keeps_affine_and_checks_shape(tmp_path):
    affine = torch.tensor([[0.0, -2.0, 0.0, 10.0], [1.5, 0.0, 0.0, -4.0], [0.0, 0.0, 3.0, 7.0], [0, 0, 0, 1]])
    ref = MetaTensor(torch.zeros(1, 6, 5, 4), affine=affine)
    amap = torch.rand(1, 6, 5, 4)
    out = save_attribution_nifti(amap, tmp_path / "a.nii.gz", reference=ref)
    img = nib.load(out)
    np.testing.assert_allclose(img.affine, affine.numpy())
    np.testing.assert_allclose(img.get_fdata(), amap[0].numpy(), rtol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz"]  # no temp file left
    with pytest.raises(ValueError, match="reference"):
        save_attribution_nifti(torch.rand(1, 6, 5, 3), tmp_path / "b.nii.gz", reference=ref)
    with pytest.raises(ValueError, match=".nii"):
        save_attribution_nifti(amap, tmp_path / "b.png")


def test_png_overlay_colours_the_important_region(tmp_path):
    image = torch.full((3, 16, 16), 0.5)
    amap = torch.zeros(1, 16, 16)
    amap[0, 4:8, 4:8] = 1.0
    rgb = overlay_rgb(image, amap, alpha=0.5)
    assert np.array_equal(rgb[0, 0], rgb[15, 15])  # zero importance: the image shows through
    assert not np.array_equal(rgb[5, 5], rgb[0, 0])
    out = save_attribution_png(image, amap, tmp_path / "o.png", alpha=0.5)
    assert np.array_equal(np.asarray(Image.open(out)), rgb)
    with pytest.raises(ValueError, match="attribution"):
        overlay_rgb(image, torch.zeros(8, 8))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_attribution_saver_writes_one_file_per_image(tmp_path, spatial_dims):
    from monai.engines import SupervisedEvaluator

    net = build_densenet(121, spatial_dims, 1, 2, init_features=4, growth_rate=4)
    shape = (1,) + (32,) * spatial_dims
    data = [
        {"image": MetaTensor(torch.rand(shape), meta={"filename_or_obj": f"/d/case{i}.nii.gz"})}
        for i in range(3)
    ]
    from monai.data import DataLoader

    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=DataLoader(data, batch_size=2), network=net
    )
    saver = AttributionSaver(tmp_path)
    saver.attach(evaluator)
    AttributionSaver(tmp_path / "off", enabled=False).attach(evaluator)
    evaluator.run()
    ext = ".png" if spatial_dims == 2 else ".nii.gz"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"case{i}_attribution{ext}" for i in range(3)]


def test_attribution_saver_passes_tabular_and_keeps_affine(tmp_path):
    from types import SimpleNamespace

    torch.manual_seed(0)
    net = ImageTabularNet(3, 1, 1, 3, num_classes=0, survival="cox", channels=(4, 8), strides=(2,))
    affine = torch.diag(torch.tensor([0.8, 0.8, 2.5, 1.0]))
    batch = [
        {
            "image": MetaTensor(
                torch.rand(1, 8, 8, 8), affine=affine, meta={"filename_or_obj": f"ct_{i}.nii.gz"}
            ),
            "tabular": torch.tensor([0.5, float("nan"), -1.0]),
        }
        for i in range(2)
    ]
    engine = SimpleNamespace(state=SimpleNamespace(batch=batch, iteration=1), network=net)
    saver = AttributionSaver(tmp_path, extra_keys={"tabular": "tabular"})
    saver(engine)
    assert [p.name for p in saver.written] == ["ct_0_attribution.nii.gz", "ct_1_attribution.nii.gz"]
    np.testing.assert_allclose(nib.load(saver.written[0]).affine, affine.numpy())
    with pytest.raises(KeyError, match="clinical"):
        AttributionSaver(tmp_path, extra_keys={"tabular": "clinical"})(engine)
