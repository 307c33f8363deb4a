"""Histology stain kernels: agreement with MONAI / scikit-image, robustness, slide-level fits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import color, data

from monai_ext.transforms.functional import stain as F

TARGET = torch.tensor(F.DEFAULT_TARGET_HE)
TARGET_UNIT = TARGET / TARGET.norm(dim=0, keepdim=True)
MAX_C = torch.tensor(F.DEFAULT_MAX_CONC)


@pytest.fixture(scope="module")
def ihc() -> torch.Tensor:
    """scikit-image's immunohistochemistry image (real tissue, DAB + haematoxylin), (3, 512, 512) uint8."""
    return torch.from_numpy(data.immunohistochemistry()).permute(2, 0, 1).contiguous()


def _synthetic_he(seed: int, size: int = 128) -> torch.Tensor | None:
    """An H&E tile from the project's synthetic renderer (None when it is not available)."""
    try:
        from monai_ext.data.synthetic import _he
    except ImportError:
        return None
    rng = np.random.default_rng(seed)
    stain = _he.random_stain(rng)
    w = rng.uniform(0, 1, (5, 6, 6)).astype(np.float32)
    w[0] *= 0.05
    w[4] += 0.5  # enough tumour for a fit
    w /= w.sum(0, keepdims=True)
    tmap = _he.TissueMap(w, cell=size / 5)
    bank = _he.SpriteBank(rng, mpp=0.5)
    objs = _he.sample_objects(rng, tmap, bank, 0, 0, size, size, mpp=0.5)
    img = _he.render_region(tmap, objs, bank, stain, 0, 0, size, size, mpp=0.5, seed=seed, rng=rng)
    return torch.from_numpy(img).permute(2, 0, 1).contiguous()


def _angles(stains: torch.Tensor, target: torch.Tensor = TARGET_UNIT) -> torch.Tensor:
    """Angle in degrees between each stain column and the target's: (B, 2)."""
    s = stains / stains.norm(dim=-2, keepdim=True)
    return torch.rad2deg(torch.acos((s * target).sum(-2).clamp(-1, 1)))


def _special_patches(size: int = 128) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    white = torch.full((3, size, size), 255, dtype=torch.uint8)
    glass = (
        torch.tensor([236.0, 232.0, 240.0])[:, None, None] + torch.randn(3, size, size, generator=g) * 3
    ).clamp(0, 255)
    nine = white.clone()
    c = size // 2
    nine[:, c : c + 3, c : c + 3] = torch.tensor([90, 50, 140], dtype=torch.uint8)[:, None, None]
    pen = white.clone()
    pen[:, size // 8 : size // 2] = torch.tensor([40, 160, 80], dtype=torch.uint8)[:, None, None]  # green ink
    pen[:, size // 2 + 4 : size - 8] = torch.tensor([30, 60, 180], dtype=torch.uint8)[
        :, None, None
    ]  # blue ink
    flat = torch.empty(3, size, size, dtype=torch.uint8)
    flat[:] = torch.tensor([170, 90, 160], dtype=torch.uint8)[:, None, None]  # one tissue colour, no texture
    return {"white": white, "glass": glass.round().to(torch.uint8), "nine": nine, "pen": pen, "flat": flat}


# ----------------------------------------------------------------------------- colour spaces
def test_lab_matches_skimage_and_round_trips():
    rgb = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    lab = F.rgb_to_lab(rgb)
    ref = color.rgb2lab(rgb.permute(1, 2, 0).double().numpy())
    np.testing.assert_allclose(lab.permute(1, 2, 0).numpy(), ref, atol=2e-3)
    torch.testing.assert_close(F.lab_to_rgb(lab), rgb, atol=1e-4, rtol=0)
    u8 = (rgb * 255).round().to(torch.uint8)
    assert torch.equal(F.lab_to_rgb(F.rgb_to_lab(u8), dtype=torch.uint8), u8)


def test_hsv_and_hed_match_skimage(ihc):
    rgb = ihc[:, :64, :64]
    hsv = F.rgb_to_hsv(rgb).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(hsv, color.rgb2hsv(rgb.permute(1, 2, 0).numpy()), atol=1e-5)
    torch.testing.assert_close(F.hsv_to_rgb(F.rgb_to_hsv(rgb)), rgb.float() / 255, atol=1e-5, rtol=0)
    hed = F.rgb_to_hed(rgb).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(np.maximum(hed, 0), color.rgb2hed(rgb.permute(1, 2, 0).numpy()), atol=1e-5)


def test_od_round_trip_and_tissue_mask():
    x = torch.arange(256, dtype=torch.uint8).view(1, 16, 16).expand(3, 16, 16).contiguous()
    od = F.rgb_to_od(x)
    assert od.min() >= 0 and od.shape == x.shape
    back = F.od_to_rgb(od)
    assert torch.equal(back[x < 239], (x[x < 239] + 1))  # I + 1 convention below tli
    s = _special_patches(32)
    assert not F.tissue_mask(s["white"]).any()
    assert not F.tissue_mask(s["pen"]).any()  # ink excluded
    assert F.tissue_mask(s["pen"], exclude_ink=False).any()
    assert F.tissue_mask(s["nine"]).sum() == 9
    assert F.tissue_fraction(torch.stack([s["white"], s["flat"]])).tolist() == [0.0, 1.0]
    assert F.tissue_mask(s["flat"], method="saturation").all()
    assert F.tissue_fraction(s["glass"], method="saturation") < 0.01


# ----------------------------------------------------------------------------- Macenko vs MONAI
@pytest.mark.parametrize(
    "params", [{"beta": 0.15, "od_floor": 0.15}, {"tli": 250.0, "alpha": 2.0, "beta": 0.2, "od_floor": 0.2}]
)
def test_macenko_agrees_with_monai(ihc, params):
    """Same maths as MONAI's ExtractHEStains / NormalizeHEStains on the real IHC image.

    MONAI 1.6's estimate comes out with H and E the other way round (so it swaps them against its own
    default target); ours takes H = the larger red OD component (HEnorm's rule). With the target's
    columns swapped for MONAI the outputs agree to 1 grey level (MONAI truncates to uint8, we round).
    """
    pathology = pytest.importorskip("monai.apps.pathology.transforms")
    img = ihc.permute(1, 2, 0).numpy()
    tgt = np.array([[0.60, 0.25], [0.70, 0.80], [0.39, 0.55]])
    mc = np.array([1.8, 1.1])
    mparams = {k: v for k, v in params.items() if k != "od_floor"}  # MONAI's rule is od_floor = beta
    he_monai = pathology.ExtractHEStains(**mparams)(img)
    fit = F.macenko_fit(ihc, exclude_ink=False, **params)
    assert not fit.passthrough.any()
    np.testing.assert_allclose(fit.stains[0].numpy()[:, ::-1], he_monai, atol=2e-4)
    ref = pathology.NormalizeHEStains(target_he=tgt[:, ::-1], max_cref=mc[::-1], **mparams)(img)
    out, pt = F.macenko_normalize(ihc, torch.tensor(tgt), torch.tensor(mc), exclude_ink=False, **params)
    diff = (out.permute(1, 2, 0).numpy().astype(int) - ref.astype(int)).__abs__()
    assert not pt and diff.max() <= 1 and diff.mean() < 0.75


def test_macenko_batched_equals_per_sample_and_float_input(ihc):
    tiles = torch.stack([ihc[:, i : i + 96, j : j + 96] for i in (0, 200, 400) for j in (0, 300)])
    out, pt = F.macenko_normalize(tiles)
    for i in range(tiles.shape[0]):
        o, p = F.macenko_normalize(tiles[i])
        assert torch.equal(o, out[i]) and bool(p) == bool(pt[i])
    fo, fpt = F.macenko_normalize(tiles.float() / 255)
    assert fo.dtype == torch.float32 and torch.equal(fpt, pt)
    assert ((fo * 255).round() - out.float()).abs().max() <= 1


def test_macenko_fit_target_image(ihc):
    target = _synthetic_he(7, 128)
    if target is None:
        target = ihc[:, 256:, 256:]
    tfit = F.macenko_fit(target)
    out, _ = F.macenko_normalize(ihc[:, :256, :256], tfit.stains[0], tfit.max_conc[0])
    assert (_angles(F.macenko_fit(out).stains, tfit.stains[0]) < 5).all()


def test_mixed_batch_passthrough_and_target_angles(ihc):
    """Real tissue tiles + white, glass, 9-pixel, pen-mark and flat patches in one batch."""
    tissue = [ihc[:, i : i + 128, j : j + 128] for i in (0, 192, 384) for j in (64, 320)]
    tissue += [t for t in (_synthetic_he(s) for s in (1, 2, 3, 5)) if t is not None]
    special = _special_patches(128)
    batch = torch.stack(tissue + list(special.values()))
    out, pt = F.macenko_normalize(batch)
    expected = torch.tensor([False] * len(tissue) + [True] * len(special))
    assert torch.equal(pt, expected)
    assert torch.equal(out[len(tissue) :], batch[len(tissue) :])  # passed through unchanged
    refit = F.macenko_fit(out[: len(tissue)])
    assert not refit.passthrough.any()
    assert (_angles(refit.stains) < 5).all(), _angles(refit.stains)
    fit = F.macenko_fit(batch)
    assert torch.isfinite(fit.stains).all() and torch.isfinite(fit.max_conc).all()
    # float input with a NaN sample: passed through, reported, no NaN elsewhere
    fb = batch.float() / 255
    fb[0, 0, 5, 5] = math.nan
    fout, fpt = F.macenko_normalize(fb)
    assert fpt[0] and torch.isfinite(fout[1:]).all() and torch.equal(fpt[1:], pt[1:])


def test_near_empty_threshold():
    nine = _special_patches(16)["nine"]  # 9 / 256 = 3.5 % tissue, but < 64 pixels
    assert F.macenko_normalize(nine[None])[1].item()
    fit = F.macenko_fit(nine[None], min_tissue_pixels=4, min_tissue_fraction=0.0)
    assert torch.isfinite(fit.stains).all()  # flat 9-pixel blob: degenerate -> passthrough, no NaN
    assert fit.passthrough.item()


# ----------------------------------------------------------------------------- slide-level fits
def test_slide_fit_tiles_without_seams(ihc):
    """Tiles normalised with one slide-level fit join without seams (step <= variation inside tiles)."""
    t = 128
    tiles = ihc.unfold(1, t, t).unfold(2, t, t).permute(1, 2, 0, 3, 4).reshape(-1, 3, t, t)
    slide = F.macenko_fit(tiles, pool=True)
    assert slide.stains.shape == (1, 3, 2) and not slide.passthrough.any()
    out, pt = F.macenko_normalize(tiles, fit=slide)
    assert not pt.any()
    mosaic = out.view(4, 4, 3, t, t).permute(2, 0, 3, 1, 4).reshape(3, 512, 512).float()
    whole, _ = F.macenko_normalize(ihc, fit=slide)
    assert torch.equal(mosaic, whole.float())
    steps = (mosaic[:, :, 1:] - mosaic[:, :, :-1]).abs().mean((0, 1))  # mean step between columns
    edges = steps[t - 1 :: t][:3]
    inside = torch.cat([steps[k * t : (k + 1) * t - 1] for k in range(4)])
    assert edges.max() <= inside.max()
    # per-tile fits, by contrast, change colour from tile to tile
    per_tile, _ = F.macenko_normalize(tiles)
    assert not torch.equal(per_tile, out)


@pytest.mark.slow
def test_slide_fit_above_quantile_limit(ihc):
    """A pooled fit over more than 2^24 pixels (torch.quantile's limit) works and matches one tile."""
    reps = 2**24 // (512 * 512) + 1
    big = ihc[None].expand(reps, 3, 512, 512)
    fit = F.macenko_fit(big, pool=True)
    one = F.macenko_fit(ihc)
    assert not fit.passthrough.any()
    torch.testing.assert_close(fit.stains, one.stains, atol=2e-3, rtol=0)
    torch.testing.assert_close(fit.max_conc, one.max_conc, atol=1e-2, rtol=0)


# ----------------------------------------------------------------------------- Reinhard
def test_reinhard_matches_target_statistics(ihc):
    src = ihc[:, :256, :256]
    tgt = _synthetic_he(4, 128)
    tgt = ihc[:, 256:, 256:] if tgt is None else tgt
    tfit = F.reinhard_fit(tgt)
    special = _special_patches(256)
    batch = torch.stack([src, special["white"], special["flat"]])
    out, pt = F.reinhard_normalize(batch, tfit.mean[0], tfit.std[0])
    assert pt.tolist() == [False, True, True] and torch.equal(out[1:], batch[1:])
    ofit = F.reinhard_fit(out[:1], beta=0.0, min_tissue_pixels=0)
    mfit = F.reinhard_fit(src[None], beta=0.0, min_tissue_pixels=0)
    assert (ofit.mean - tfit.mean).abs().max() < (mfit.mean - tfit.mean).abs().max()
    single, p1 = F.reinhard_normalize(src, tfit.mean[0], tfit.std[0])
    assert torch.equal(single, out[0]) and not p1


# ----------------------------------------------------------------------------- augmentations
def test_hed_jitter_identity_and_skimage_reference(ihc):
    rgb = ihc[:, :64, :64]
    assert (F.hed_jitter(rgb, 1.0, 0.0).int() - rgb.int()).abs().max() <= 1
    alpha, beta = torch.tensor([1.04, 0.97, 1.0]), torch.tensor([0.02, -0.01, 0.0])
    fx = rgb.float() / 255
    keep = fx.clone()
    out = F.hed_jitter(fx, alpha, beta).permute(1, 2, 0).numpy()
    assert torch.equal(fx, keep)  # input untouched
    u = np.maximum(rgb.permute(1, 2, 0).numpy() / 255.0, 1e-6)
    hed = (np.log(u) / np.log(1e-6)) @ color.hed_from_rgb
    ref = color.combine_stains(hed * alpha.numpy() + beta.numpy(), color.rgb_from_hed)
    np.testing.assert_allclose(out, ref, atol=1e-4)
    b = torch.stack([rgb, rgb])
    y = F.hed_jitter(b, torch.stack([alpha, torch.ones(3)]), torch.stack([beta, torch.zeros(3)]))
    assert torch.equal(y[0], F.hed_jitter(rgb, alpha, beta)) and not torch.equal(y[0], y[1])


def test_hsv_brightness_contrast():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 0.9 + 0.05
    torch.testing.assert_close(F.hsv_jitter(x, 1.0, 1.0, 1.0), x, atol=1e-5, rtol=0)
    y = F.hsv_jitter(x, torch.tensor([0.0, 0.5]), 1.0, 1.0)
    torch.testing.assert_close(y[0], x[0], atol=1e-5, rtol=0)
    assert (y[1] - x[1]).abs().max() > 0.1
    grey = F.hsv_jitter(x, 0.0, 0.0, 1.0)
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])
    bc = F.rgb_brightness_contrast(x, torch.tensor([0.0, 0.05]), torch.tensor([1.0, 0.5]))
    torch.testing.assert_close(bc[0], x[0])
    assert bc[1].std() < x[1].std() and abs(bc[1].mean() - x[1].mean() - 0.05) < 1e-2


def test_dihedral_group():
    x = torch.arange(2 * 16, dtype=torch.float32).view(2, 1, 4, 4).expand(2, 3, 4, 4).contiguous()
    outs = [F.dihedral_2d(x[0], k) for k in range(8)]
    assert len({tuple(o.flatten().tolist()) for o in outs}) == 8
    torch.testing.assert_close(outs[1], torch.rot90(x[0], 1, (-2, -1)))
    torch.testing.assert_close(outs[5], torch.rot90(x[0], 1, (-2, -1)).flip(-1))
    k = torch.tensor([3, 6])
    y = F.dihedral_2d(x, k)
    assert torch.equal(y[0], F.dihedral_2d(x[0], 3)) and torch.equal(y[1], F.dihedral_2d(x[1], 6))
    with pytest.raises(ValueError, match="square"):
        F.dihedral_2d(torch.zeros(2, 3, 4, 6), k)
    assert F.dihedral_2d(torch.zeros(3, 4, 6), 1).shape == (3, 6, 4)


def test_gaussian_blur_matches_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    y = F.rgb_gaussian_blur(x, torch.tensor([0.0, 1.2]), max_sigma=1.5)
    torch.testing.assert_close(y[0], x[0], atol=1e-6, rtol=0)
    ref = ndimage.gaussian_filter(x[1].numpy(), sigma=(0, 1.2, 1.2), mode="mirror", truncate=5 / 1.2)
    np.testing.assert_allclose(y[1].numpy(), ref, atol=1e-5)
    const = torch.full((3, 8, 8), 0.3)
    torch.testing.assert_close(F.rgb_gaussian_blur(const, 2.0), const)


# ----------------------------------------------------------------------------- bad input
def test_bad_input_messages():
    with pytest.raises(ValueError, match="macenko_normalize.*3 channels"):
        F.macenko_normalize(torch.zeros(2, 4, 8, 8, dtype=torch.uint8))
    with pytest.raises(TypeError, match="uint8.*floating"):
        F.macenko_fit(torch.zeros(3, 8, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match="empty batch"):
        F.hed_jitter(torch.zeros(0, 3, 8, 8), 1.0, 0.0)
    with pytest.raises(ValueError, match=r"\[0, 1\].*divide by 255"):
        F.check_rgb(torch.full((3, 4, 4), 200.0))
    with pytest.raises(ValueError, match="NaN"):
        F.check_rgb(torch.full((3, 4, 4), math.nan))
    with pytest.raises(ValueError, match="target_stains"):
        F.macenko_normalize(torch.zeros(3, 8, 8), target_stains=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="hed_jitter: `alpha`"):
        F.hed_jitter(torch.zeros(2, 3, 8, 8), torch.ones(5), 0.0)


# ----------------------------------------------------------------------------- exact percentiles, CPU chunks
def test_tail_percentiles_exact_on_both_cpu_paths():
    """The CPU candidate path and its topk fallback both give numpy's 'linear' percentiles exactly."""
    g = torch.Generator().manual_seed(0)
    v = torch.rand(4, 5000, generator=g)
    mask = torch.rand(4, 5000, generator=g) > 0.3
    mask[3] = False  # an empty row gives 0
    v[2, ::16] = -1e3 - torch.arange(313.0)  # the 1-in-16 subsample holds the smallest: fallback path
    v[1, ::7] = 0.25  # ties
    n = mask.sum(1)
    lo, hi = F._tail_percentiles(v, n, 1.0, mask)
    for i in range(3):
        ref = np.percentile(v[i][mask[i]].double().numpy(), [1.0, 99.0])
        np.testing.assert_allclose([lo[i].item(), hi[i].item()], ref, rtol=1e-6, atol=1e-6)
    assert lo[3] == 0 and hi[3] == 0
    _, top = F._tail_percentiles(v[:3], torch.full((3,), 5000), 0.5, low_too=False)
    np.testing.assert_allclose(top.numpy(), np.percentile(v[:3].numpy(), 99.5, axis=1), rtol=1e-6)


def test_macenko_cpu_chunks_equal_one_pass(ihc, monkeypatch):
    """CPU batches run in cache-sized chunks; the result does not depend on the chunk size."""
    tiles = torch.stack([ihc[:, i : i + 64, j : j + 64] for i in (0, 200, 400) for j in (0, 150, 300)])
    tiles[4] = 255  # a white tile passes through inside a chunk
    one_out, one_pt = F.macenko_normalize(tiles)
    one_fit = F.macenko_fit(tiles)
    monkeypatch.setattr(F, "_CPU_CHUNK_PIXELS", 2 * 64 * 64)  # chunks of 2 tiles
    out, pt = F.macenko_normalize(tiles)
    fit = F.macenko_fit(tiles)
    assert torch.equal(out, one_out) and torch.equal(pt, one_pt) and pt[4] and not pt[:4].any()
    assert torch.equal(fit.stains, one_fit.stains) and torch.equal(fit.max_conc, one_fit.max_conc)
    assert torch.equal(out[4], tiles[4])


def test_macenko_orders_stains_by_red_absorption_not_red_blue_ratio():
    """An eosin that absorbs almost no blue has a larger R/B ratio than haematoxylin: H must stay H."""
    h = torch.tensor([0.60, 0.70, 0.27])
    e = torch.tensor([0.28, 0.96, 0.08])
    h, e = h / h.norm(), e / e.norm()
    g = torch.Generator().manual_seed(0)
    ch = torch.rand(1, 96, 96, generator=g) * 1.2
    ce = torch.rand(1, 96, 96, generator=g) * 1.0
    od = h[:, None, None] * ch + e[:, None, None] * ce
    img = (255 * torch.exp(-od)).round().to(torch.uint8)
    fit = F.macenko_fit(img)
    assert not fit.passthrough.any()
    est_h, est_e = fit.stains[0, :, 0], fit.stains[0, :, 1]
    assert torch.dot(est_h, h) > torch.dot(est_h, e) and torch.dot(est_e, e) > torch.dot(est_e, h)
