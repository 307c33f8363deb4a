"""Radiology intensity transforms: agreement with MONAI / numpy / scipy, batching, seeding, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import Compose, NormalizeIntensity, ScaleIntensityRange, ScaleIntensityRangePercentiles

from monai_ext.transforms import functional as fn
from monai_ext.transforms.array import (
    HUWindow,
    MultiWindowHU,
    NonzeroZScore,
    PercentileScale,
    RandDeviceGaussianNoise,
    RandGamma,
    RandLegendreBiasField,
)
from monai_ext.transforms.batch import (
    BatchAugmentation,
    BatchHUWindow,
    BatchRandBiasField,
    BatchRandGamma,
    BatchRandGaussianBlur,
    BatchRandGaussianNoise,
    BatchRandLowResolution,
    BatchRandShiftIntensity,
)
from monai_ext.transforms.dictionary import RandDeviceGaussianNoised, RandGammad


@pytest.fixture(scope="module")
def ct_hu() -> torch.Tensor:
    """pydicom's CT_small.dcm in Hounsfield units, (1, 128, 128) float32."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return torch.from_numpy(hu)[None]


def test_hu_window_matches_monai_scale_intensity_range(ct_hu, device):
    ref = ScaleIntensityRange(a_min=-160.0, a_max=240.0, b_min=0.0, b_max=1.0, clip=True)(ct_hu)
    ours = fn.scale_intensity_range(ct_hu.to(device), -160.0, 240.0, 0.0, 1.0, clip=True)
    torch.testing.assert_close(ours.cpu(), torch.as_tensor(ref), atol=1e-6, rtol=0)
    # array layer keeps MetaTensor metadata; integer CT becomes float32
    img = MetaTensor(ct_hu.to(torch.int16).to(device), affine=torch.diag(torch.tensor([0.7, 0.7, 1.0, 1.0])))
    out = HUWindow.from_window(40, 400)(img)
    assert isinstance(out, MetaTensor) and out.dtype == torch.float32
    torch.testing.assert_close(out.affine, img.affine)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_multi_window_hu_channels_and_dtype(ct_hu, device, dtype):
    x = ct_hu.to(device, dtype)
    out = MultiWindowHU(("soft_tissue", "lung", "bone"))(x)
    assert out.shape == (3, 128, 128) and out.dtype == dtype and out.device.type == device.type
    for i, name in enumerate(("soft_tissue", "lung", "bone")):
        lo, hi = fn.window_to_range(*fn.HU_WINDOWS[name])
        torch.testing.assert_close(out[i], fn.scale_intensity_range(x, lo, hi)[0])
    batched = fn.multi_window_hu(x[None].expand(2, -1, -1, -1), ["lung", (0.0, 100.0)], spatial_dims=2)
    assert batched.shape == (2, 2, 128, 128)


def test_nonzero_zscore_matches_monai(ct_hu, device):
    # channel 0: CT shifted so air is 0 (background mask); channel 1: a second "sequence"
    x = torch.cat([(ct_hu + 1024).clamp(min=0), (ct_hu * 0.5 + 300).clamp(min=0)]).float()
    x[1, :10] = 0
    ref = NormalizeIntensity(nonzero=True, channel_wise=True)(x.clone())
    out = NonzeroZScore()(x.to(device))
    torch.testing.assert_close(out.cpu(), torch.as_tensor(ref), atol=1e-5, rtol=1e-5)
    assert torch.all(out.cpu()[x == 0] == 0)
    # batched == per-sample, and an all-zero channel passes through
    xb = torch.stack([x, x * 2, torch.zeros_like(x)]).to(device)
    ob = fn.nonzero_zscore(xb, spatial_dims=2)
    for i in range(3):
        torch.testing.assert_close(ob[i], fn.nonzero_zscore(xb[i]))
    assert torch.all(ob[2] == 0)


def test_percentile_scale_matches_monai(ct_hu, device):
    ref = ScaleIntensityRangePercentiles(lower=1, upper=99, b_min=0, b_max=1, clip=True)(ct_hu)
    out = PercentileScale(1, 99, clip=True)(ct_hu.to(device))
    torch.testing.assert_close(out.cpu(), torch.as_tensor(ref), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_exact_quantile_above_torch_limit():
    """512x512x80 = 20,971,520 voxels > 2**24 (torch.quantile's documented limit); result equals numpy."""
    g = torch.Generator().manual_seed(0)
    vol = torch.randn(1, 80, 512, 512, generator=g) * 300 - 200
    assert vol.numel() > 2**24
    flat = vol.reshape(1, -1)
    v = vol.numpy().ravel()
    for q in (0.005, 0.5, 0.995):
        ours = fn.exact_quantile(flat, q)
        assert float(ours) == pytest.approx(float(np.percentile(v, q * 100)), abs=1e-3)
    out = fn.percentile_scale(vol, 0.5, 99.5, clip=True, spatial_dims=3)
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0


def test_gaussian_blur_matches_scipy(ct_hu):
    ndimage = pytest.importorskip("scipy.ndimage")
    x = ct_hu[0].numpy().astype(np.float64)
    ref = ndimage.gaussian_filter(x, sigma=1.5, mode="nearest", truncate=4.0)
    out = fn.gaussian_blur(ct_hu.double(), 1.5)
    np.testing.assert_allclose(out[0].numpy(), ref, atol=1e-3)  # HU range ~3000: float32 kernel weights
    vol = torch.rand(2, 1, 10, 11, 12)
    ref3 = ndimage.gaussian_filter(vol[1, 0].double().numpy(), sigma=0.8, mode="nearest", truncate=4.0)
    out3 = fn.gaussian_blur(vol, torch.tensor([1.3, 0.8]), radius=6)
    np.testing.assert_allclose(out3[1, 0].numpy(), ref3, atol=1e-5)


def test_low_resolution_matches_interpolate():
    x = torch.rand(2, 1, 16, 12)
    ref = F.interpolate(F.interpolate(x, scale_factor=0.5, mode="nearest"), size=(16, 12), mode="bilinear")
    torch.testing.assert_close(fn.simulate_low_resolution(x, 0.5, spatial_dims=2), ref, atol=1e-5, rtol=0)
    x3 = torch.rand(1, 1, 8, 8, 8)
    ref3 = F.interpolate(
        F.interpolate(x3, scale_factor=0.5, mode="nearest"), size=(8, 8, 8), mode="trilinear"
    )
    torch.testing.assert_close(fn.simulate_low_resolution(x3, 0.5), ref3, atol=1e-5, rtol=0)


def test_gamma_and_bias_field_kernels():
    x = torch.rand(1, 1, 6, 6) * 100 - 50
    y = fn.adjust_gamma(x, 2.0, spatial_dims=2)
    mn, mx = x.min(), x.max()
    torch.testing.assert_close(y, ((x - mn) / (mx - mn + 1e-7)) ** 2 * (mx - mn) + mn)
    coeffs = torch.zeros(1, fn.num_bias_coeffs(3, 2))
    coeffs[0, 0] = 0.5  # constant term P0 = 1 -> field exp(0.5) everywhere
    out = fn.apply_bias_field(torch.ones(1, 1, 4, 5, 6), coeffs, degree=2)
    torch.testing.assert_close(out, torch.full_like(out, float(np.exp(0.5))))


BATCH_AUGS = [
    lambda: BatchRandGamma(prob=0.7, gamma=(0.5, 2.0), seed=3),
    lambda: BatchRandBiasField(prob=0.7, degree=3, coeff_range=(-0.2, 0.2), seed=3),
    lambda: BatchRandGaussianBlur(prob=0.7, sigma=(0.5, 1.5), seed=3),
    lambda: BatchRandLowResolution(prob=0.7, zoom=(0.4, 0.9), seed=3),
    lambda: BatchRandGaussianNoise(prob=0.7, std=0.2, seed=3),
    lambda: BatchRandShiftIntensity(prob=0.7, offset=0.3, seed=3),
]


@pytest.mark.parametrize("make", BATCH_AUGS)
@pytest.mark.parametrize("shape", [(5, 2, 12, 10), (3, 1, 8, 9, 10)])
def test_batch_intensity_seeded_replay_and_per_sample(make, shape, device):
    x = torch.rand(shape, device=device)
    label = torch.randint(0, 3, (shape[0], 1, *shape[2:]), device=device)
    aug = make()
    out = aug(x, label)
    assert out.image.shape == x.shape and out.image.dtype == x.dtype
    assert out.label is label  # intensity transforms leave labels alone
    # seeded runs repeat exactly; the next call differs
    again = make()(x, label)
    assert torch.equal(again.image, out.image)
    assert not torch.equal(aug(x).image, out.image)
    # replay
    assert torch.equal(aug(x, params=out.params).image, out.image)
    # unselected samples pass through bit-exactly
    keep = ~out.params["apply"]
    assert torch.equal(out.image[keep], x[keep])
    # batched == per-sample with the same parameters (noise: same state draws the same noise batch)
    if isinstance(aug, BatchRandGaussianNoise):
        return
    for i in range(shape[0]):
        p = {k: v[i : i + 1] for k, v in out.params.items()}
        torch.testing.assert_close(
            aug(x[i : i + 1], params=p).image, out.image[i : i + 1], atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_noise_drawn_in_input_dtype(dtype, device):
    x = torch.zeros(4, 1, 16, 16, 16, dtype=dtype, device=device)
    out = BatchRandGaussianNoise(prob=1.0, std=0.5, sample_std=False, seed=0)(x)
    assert out.image.dtype == dtype and out.image.device.type == device.type
    assert 0.4 < float(out.image.float().std()) < 0.6


def test_array_and_dictionary_random_transforms_repeat_with_seed():
    x = torch.rand(1, 8, 8, 8)

    def pipe():
        return Compose(
            [RandGamma(prob=1.0), RandLegendreBiasField(prob=1.0), RandDeviceGaussianNoise(prob=1.0)]
        )

    a = pipe().set_random_state(5)(x)
    b = pipe().set_random_state(5)(x)
    assert torch.equal(a, b) and not torch.equal(a, x)
    d = Compose(
        [RandGammad(["a", "b"], prob=1.0), RandDeviceGaussianNoised(["a", "b"], prob=1.0)]
    ).set_random_state(1)
    out = d({"a": x, "b": x.clone()})
    assert torch.equal(out["a"], out["b"])  # one draw shared by all keys


def test_bad_input_errors():
    with pytest.raises(ValueError, match="BatchRandGamma: `image` batch is empty"):
        BatchRandGamma()(torch.rand(0, 1, 4, 4))
    nan = torch.rand(2, 1, 4, 4)
    nan[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="BatchRandGaussianNoise: `image` contains NaN"):
        BatchRandGaussianNoise()(nan)
    with pytest.raises(ValueError, match="BatchRandGamma: `image` has 2 channels, expected 1"):
        BatchRandGamma(num_channels=1)(torch.rand(2, 2, 4, 4))
    with pytest.raises(ValueError, match="BatchRandBiasField: `label` shape"):
        BatchRandBiasField()(torch.rand(2, 1, 4, 4), torch.zeros(2, 1, 4, 5))
    with pytest.raises(TypeError, match="BatchRandGamma: `image` must be a floating tensor"):
        BatchRandGamma()(torch.zeros(2, 1, 4, 4, dtype=torch.int16))
    with pytest.raises(ValueError, match="MultiWindowHU: `img` must have 1 channel"):
        MultiWindowHU()(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="unknown window 'lungs'"):
        MultiWindowHU(["lungs"])
    with pytest.raises(ValueError, match="HUWindow: `a_max` must exceed `a_min`"):
        HUWindow(100, -100)
    with pytest.raises(ValueError, match="pass spatial_dims"):
        fn.nonzero_zscore(torch.rand(2, 1, 4, 4))
    assert isinstance(BatchHUWindow(-1000, 1000), BatchAugmentation)
    # integer CT is accepted by the window
    out = BatchHUWindow(-1000, 1000)(torch.zeros(1, 1, 2, 2, dtype=torch.int16))
    assert out.image.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_cpu_noise_statistics_and_in_place(dtype):
    # 3 x 48^3 voxels: above the CPU chunk size, so noise is drawn chunk by chunk into a scratch buffer
    x = torch.linspace(-1, 1, 3 * 48**3).reshape(3, 1, 48, 48, 48).to(dtype)
    std, mean = torch.tensor([0.5, 0.0, 2.0]), torch.tensor([0.0, 0.0, 1.0])
    g = torch.Generator().manual_seed(0)
    out = fn.add_gaussian_noise(x, std, mean, generator=g)
    noise = (out.float() - x.float()).reshape(3, -1)
    assert torch.equal(out[1], x[1])  # std 0: untouched
    for i in (0, 2):
        assert abs(float(noise[i].mean()) - float(mean[i])) < 0.01
        assert abs(float(noise[i].std()) - float(std[i])) < 0.02 * float(std[i])
    # in place, reproducible from the same generator state, and on a non-contiguous input
    again = x.clone()
    res = fn.add_gaussian_noise(again, std, mean, generator=torch.Generator().manual_seed(0), out=again)
    assert res is again and torch.equal(again, out)
    xt = x.transpose(-1, -2)  # non-contiguous: same per-sample noise statistics, layout kept
    tr = fn.add_gaussian_noise(xt, std, mean, generator=torch.Generator().manual_seed(0))
    assert tr.shape == xt.shape and torch.equal(tr[1], xt[1])
    assert abs(float((tr[2].float() - xt[2].float()).std()) - 2.0) < 0.04
    with pytest.raises(ValueError, match="`out` must match x"):
        fn.add_gaussian_noise(x, 0.1, out=torch.empty(2, 1, 48, 48, 48, dtype=dtype))


def test_fused_window_matches_subtract_divide():
    x = torch.randn(2, 1, 32, 32, 32) * 800
    lo, hi = torch.tensor([-1000.0, -160.0]), torch.tensor([1000.0, 240.0])
    out = fn.scale_intensity_range(x, lo, hi, -1.0, 2.0, clip=False)
    ref = (x - lo.reshape(-1, 1, 1, 1, 1)) / (hi - lo).reshape(-1, 1, 1, 1, 1) * 3.0 - 1.0
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    clipped = fn.scale_intensity_range(x, -1000.0, 1000.0)
    assert float(clipped.min()) >= 0.0 and float(clipped.max()) <= 1.0


def test_batch_shift_matches_monai_shift_intensity():
    from monai.transforms import ShiftIntensity

    x = torch.rand(4, 1, 6, 6)
    out = BatchRandShiftIntensity(prob=1.0, offset=(0.2, 0.6), seed=0)(x)
    off = out.params["offset"]
    assert bool(((off >= 0.2) & (off <= 0.6)).all())
    for i in range(4):
        torch.testing.assert_close(out.image[i], torch.as_tensor(ShiftIntensity(float(off[i]))(x[i])))


def test_fast_paths_keep_autograd_half_noise_and_precision():
    # autograd: the CPU shortcuts (chunked noise, in-place gamma) step aside for inputs that need grad
    x = torch.rand(2, 1, 48, 48, 48, requires_grad=True)
    fn.add_gaussian_noise(x, 0.1, generator=torch.Generator().manual_seed(0)).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))
    g = torch.tensor([0.7, 1.3], requires_grad=True)
    fn.adjust_gamma(x, g, spatial_dims=3).sum().backward()
    assert g.grad is not None and torch.isfinite(g.grad).all()
    # half precision: a small std with a large mean stays finite (drawn in float32, rounded once)
    h = torch.zeros(2, 1, 48, 48, 48, dtype=torch.float16)
    out = fn.add_gaussian_noise(h, 1e-5, 1.0, generator=torch.Generator().manual_seed(0))
    assert (
        out.dtype == torch.float16
        and bool(torch.isfinite(out).all())
        and abs(float(out.float().mean()) - 1) < 1e-3
    )
    # gamma on values far from zero: as accurate as the float64 formula (no cancellation)
    v = 3e4 + torch.rand(1, 1, 16, 16, 16)
    ref = fn.adjust_gamma(v.double(), 1.5, spatial_dims=3).float()
    assert float((fn.adjust_gamma(v, 1.5, spatial_dims=3) - ref).abs().max()) < 5e-3


def test_chains_on_integer_images_and_signed_zeros():
    from monai_ext.transforms.batch import BatchAugChain, BatchLabelBalancedCrop

    img = torch.randint(-1000, 1000, (4, 1, 16, 16, 16))
    lab = (torch.rand(4, 1, 16, 16, 16) > 0.7).long()
    for second in (BatchRandGamma(prob=0.5, seed=1), BatchRandGaussianNoise(prob=1.0, std=0.1, seed=1)):
        chain = BatchAugChain([BatchLabelBalancedCrop((8, 8, 8), ratios=(1.0, 1.0), seed=0), second])
        out = chain(img, lab)
        assert out.image.dtype == torch.float32 and out.image.shape == (4, 1, 8, 8, 8)
    z = torch.full((3, 1, 4, 4), -0.0)
    shift = BatchRandShiftIntensity(prob=1.0, offset=0.5, seed=0)
    res = shift(z, params={**shift(z).params, "apply": torch.tensor([True, False, True])})
    assert torch.equal(res.image[1].signbit(), z[1].signbit())  # not drawn: bit-identical, -0.0 kept
