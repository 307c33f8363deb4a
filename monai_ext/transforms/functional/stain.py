"""Pure torch kernels for histology colour: optical density, tissue masks, Macenko and Reinhard
normalisation, HED / HSV / brightness-contrast jitter, dihedral flips and RGB Gaussian blur.

Conventions shared by every kernel here:

- images are RGB, channel first: ``(3, H, W)`` or a batch ``(B, 3, H, W)``; any device;
- ``uint8`` input means intensities ``0..255``; floating input (float16 / bfloat16 / float32 /
  float64) means intensities in ``[0, 1]``. Floating RGB in ``[0, 255]`` is the wrong one: the
  kernels do not read values (that would copy to the host), :func:`check_rgb` does, once per batch,
  and raises. Outputs keep the input dtype and range (uint8 is rounded);
- computation runs in float32 (float64 for the 3x3 eigendecompositions); there is no Python loop
  over the batch and no host<->device copy;
- kernels that estimate stains (Macenko, Reinhard) never raise on content: a sample with fewer
  tissue pixels than ``max(min_tissue_pixels, min_tissue_fraction * H * W)``, a degenerate (flat)
  stain estimate, or a non-finite value passes through **unchanged** and is reported in the
  returned ``(B,)`` boolean ``passthrough`` mask. Outputs never contain NaN.

Tissue pixels (``method="od"``) have a mean optical density above ``beta`` (default 0.2), every
channel above ``od_floor`` (default 0.08: no channel near white, where the ``tli`` clip would bend
the OD direction), and are not pen ink (green / cyan / blue ink: ``G - R > 0.06`` or ``B - R > 0.4``
in [0, 1] units, hues that H&E and DAB do not produce). MONAI's / Macenko's rule, OD above ``beta``
in all three channels, is ``od_floor = beta``; it drops pale eosin (small red OD) and so biases the
eosin vector by up to ~10 degrees on pale tissue, hence the different default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from monai_ext.transforms.functional.cpu_parallel import map_chunks

__all__ = [
    "macenko_target",
    "DEFAULT_TARGET_HE",
    "DEFAULT_MAX_CONC",
    "RGB_FROM_HED",
    "MacenkoFit",
    "ReinhardFit",
    "check_rgb",
    "rgb_to_od",
    "od_to_rgb",
    "tissue_mask",
    "tissue_fraction",
    "macenko_fit",
    "stain_concentrations",
    "macenko_normalize",
    "rgb_to_lab",
    "lab_to_rgb",
    "reinhard_fit",
    "reinhard_normalize",
    "rgb_to_hsv",
    "hsv_to_rgb",
    "rgb_to_hed",
    "hed_to_rgb",
    "hed_jitter",
    "hsv_jitter",
    "rgb_brightness_contrast",
    "dihedral_2d",
    "rgb_gaussian_blur",
]

#: MONAI's default reference H&E stain matrix (rows R, G, B; columns H, E), in OD units.
DEFAULT_TARGET_HE = ((0.5626, 0.2159), (0.7201, 0.8012), (0.4062, 0.5581))
#: MONAI's default reference maximum concentrations of H and E.
DEFAULT_MAX_CONC = (1.9705, 1.0308)
#: Ruifrok-Johnston H, E, DAB optical densities (rows H, E, D; columns R, G, B), as in scikit-image.
RGB_FROM_HED = ((0.65, 0.70, 0.29), (0.07, 0.99, 0.11), (0.27, 0.57, 0.78))
_LOG_ADJUST = math.log(1e-6)  # scikit-image's scaling of HED concentrations
_INK_GR, _INK_BR = 0.06, 0.4


class MacenkoFit(NamedTuple):
    """Macenko stain estimate per sample (or one per slide when pooled).

    ``stains``: (B, 3, 2) unit OD vectors, columns H then E; ``max_conc``: (B, 2) percentile
    concentrations; ``passthrough``: (B,) bool, True where the estimate was not usable (its rows then
    hold the default reference values, never NaN).
    """

    stains: Tensor
    max_conc: Tensor
    passthrough: Tensor


class ReinhardFit(NamedTuple):
    """LAB statistics per sample: ``mean`` (B, 3), ``std`` (B, 3), ``passthrough`` (B,) bool."""

    mean: Tensor
    std: Tensor
    passthrough: Tensor


# --------------------------------------------------------------------------- helpers
def _batched(img: Tensor, name: str, channels: int | None = 3) -> tuple[Tensor, bool]:
    """Return a 4D view and whether the input was a single (C, H, W) image; check shape/dtype only."""
    if not isinstance(img, Tensor):
        raise TypeError(f"{name}: `img` must be a torch.Tensor, got {type(img).__name__}.")
    if img.ndim not in (3, 4):
        raise ValueError(f"{name}: `img` must be (C, H, W) or (B, C, H, W), got shape {tuple(img.shape)}.")
    if channels is not None and img.shape[-3] != channels:
        raise ValueError(
            f"{name}: `img` must have {channels} channels (RGB, channel first), got shape {tuple(img.shape)}."
        )
    if img.dtype != torch.uint8 and not img.is_floating_point():
        raise TypeError(f"{name}: `img` must be uint8 (0..255) or floating point in [0, 1], got {img.dtype}.")
    if img.ndim == 4 and img.shape[0] == 0:
        raise ValueError(f"{name}: `img` is an empty batch (B = 0).")
    return (img.unsqueeze(0), True) if img.ndim == 3 else (img, False)


def _unit(img: Tensor) -> Tensor:
    """Float32 intensities in [0, 1]."""
    return img.float() / 255.0 if img.dtype == torch.uint8 else img.float()


def _restore(y: Tensor, like: Tensor, single: bool) -> Tensor:
    """Float [0, 1] back to the dtype / range / rank of ``like``."""
    y = y.clamp(0.0, 1.0)
    y = (y * 255.0).round().to(torch.uint8) if like.dtype == torch.uint8 else y.to(like.dtype)
    return y[0] if single else y


def _per_sample(v: Tensor | float, b: int, ref: Tensor, name: str, width: int | None = None) -> Tensor:
    """Broadcast a scalar / (B,) / (B, width) parameter to a float32 tensor on ``ref``'s device."""
    t = torch.as_tensor(v, dtype=torch.float32, device=ref.device)
    if width is None:
        if t.ndim == 0:
            t = t.expand(b)
        if t.shape != (b,):
            raise ValueError(f"{name}: expected a scalar or a ({b},) tensor, got shape {tuple(t.shape)}.")
    else:
        if t.ndim == 0:
            t = t.expand(b, width)
        elif t.ndim == 1 and t.shape[0] == width:
            t = t.expand(b, width)
        if t.shape != (b, width):
            raise ValueError(
                f"{name}: expected a scalar, ({width},) or ({b}, {width}) tensor, got shape {tuple(t.shape)}."
            )
    return t


def check_rgb(img: Tensor, name: str = "img") -> None:
    """Check an RGB image's shape, dtype and value range (one host sync for the whole batch).

    Raises ``ValueError`` for NaN / inf, negative values, or floating input above 1 (the usual
    mistake: float RGB in [0, 255]; pass uint8 or divide by 255).

    Example:
        >>> check_rgb(torch.rand(2, 3, 8, 8))
    """
    x, _ = _batched(img, name)
    if x.dtype == torch.uint8:
        return
    lo, hi = torch.aminmax(x.float())
    lo_v, hi_v = float(lo), float(hi)
    if not (math.isfinite(lo_v) and math.isfinite(hi_v)):
        raise ValueError(f"{name}: floating RGB input contains NaN or inf.")
    if lo_v < 0.0 or hi_v > 1.0 + 1e-3:
        raise ValueError(
            f"{name}: floating RGB input must be in [0, 1] (got min {lo_v:.4g}, max {hi_v:.4g}); "
            "pass uint8 for 0..255 data or divide by 255."
        )


# --------------------------------------------------------------------------- optical density and masks
def rgb_to_od(img: Tensor, tli: float = 240.0) -> Tensor:
    """RGB to optical density, Macenko / MONAI convention ``OD = -ln(min(I + 1, tli) / tli)``, I in 0..255.

    Returns float32 of the same shape (``(3, H, W)`` or ``(B, 3, H, W)``); values >= 0.

    Example:
        >>> rgb_to_od(torch.full((3, 2, 2), 255, dtype=torch.uint8)).max()
        tensor(0.)
    """
    x, single = _batched(img, "rgb_to_od")
    od = _od_cn(x, tli)[0].view(x.shape)
    return od[0] if single else od


def od_to_rgb(od: Tensor, tli: float = 240.0, dtype: torch.dtype = torch.uint8) -> Tensor:
    """Optical density back to RGB: ``I = tli * exp(-OD)``, as ``dtype`` (uint8 0..255 or float [0, 1]).

    Example:
        >>> od_to_rgb(torch.zeros(3, 2, 2))[0, 0, 0]
        tensor(240, dtype=torch.uint8)
    """
    x = (tli * torch.exp(-od.float())).clamp(0.0, 255.0)
    return x.round().to(torch.uint8) if dtype == torch.uint8 else (x / 255.0).to(dtype)


def tissue_mask(
    img: Tensor,
    beta: float = 0.2,
    od_floor: float = 0.08,
    tli: float = 240.0,
    method: str = "od",
    saturation: float = 0.1,
    exclude_ink: bool = True,
) -> Tensor:
    """Boolean tissue mask (B, H, W) or (H, W).

    ``method="od"``: mean OD above ``beta``, each channel above ``od_floor`` (module doc; Macenko's
    rule is ``od_floor=beta``); ``method="saturation"``: HSV
    saturation above ``saturation`` and not near-white. ``exclude_ink`` drops green / blue pen ink.
    Non-finite pixels are never tissue.

    Example:
        >>> tissue_mask(torch.full((3, 4, 4), 255, dtype=torch.uint8)).any()
        tensor(False)
    """
    x, single = _batched(img, "tissue_mask")
    u = _unit(x)
    if method == "od":
        od = -torch.log((u * 255.0 + 1.0).clamp(max=tli) / tli)
        m = (od.amin(1) > od_floor) & (od.mean(1) > beta)
    elif method == "saturation":
        mx, mn = u.amax(1), u.amin(1)
        m = ((mx - mn) / mx.clamp(min=1e-6) > saturation) & (mn < 0.92)
    else:
        raise ValueError(f"tissue_mask: `method` must be 'od' or 'saturation', got {method!r}.")
    if exclude_ink:
        r, g, b = u[:, 0], u[:, 1], u[:, 2]
        m = m & ~((g - r > _INK_GR) | (b - r > _INK_BR))
    m = m & torch.isfinite(u).all(1)
    return m[0] if single else m


def tissue_fraction(img: Tensor, **kwargs) -> Tensor:
    """Fraction of tissue pixels per patch: (B,) float32 (a 0-d tensor for one image).

    ``kwargs`` go to :func:`tissue_mask`.

    Example:
        >>> tissue_fraction(torch.zeros(2, 3, 4, 4))
        tensor([1., 1.])
    """
    m = tissue_mask(img, **kwargs)
    return m.float().mean((-2, -1))


def _od_lut(tli: float, device: torch.device) -> Tensor:
    """(256,) float32 optical density of each uint8 intensity (the same ops as the float path)."""
    i = torch.arange(256, dtype=torch.float32, device=device)
    return i.add_(1.0).clamp_(max=tli).log_().neg_().add_(math.log(tli))


def _od_cn(x: Tensor, tli: float, with_ink: bool = False) -> tuple[Tensor, Tensor | None]:
    """(B, 3, H, W) -> (B, 3, N) float32 optical density and, if asked, the (B, N) pen-ink mask:
    green / cyan / blue ink, hues H&E and DAB do not produce.

    uint8 input takes a 256-entry table (one gather instead of six elementwise passes; the ink test in
    exact integer arithmetic); floating input runs fused in-place passes."""
    b = x.shape[0]
    if x.dtype == torch.uint8:
        xf = x.reshape(b, 3, -1)
        od = _od_lut(tli, x.device).index_select(0, xf.reshape(-1).int()).view(b, 3, -1)
        ink = None
        if with_ink:  # integer (g, b) - r > (15.3, 102.0) <=> (g, b) - r > (15, 102)
            xs = xf.short()
            thr = torch.tensor([math.floor(_INK_GR * 255.0), math.floor(_INK_BR * 255.0)], device=x.device)
            ink = ((xs[:, 1:] - xs[:, :1]) > thr.view(1, 2, 1).short()).any(1)
        return od, ink
    u = x.reshape(b, 3, -1).float()
    u = u * 255.0
    ink = None
    if with_ink:
        r, g, bl = u[:, 0], u[:, 1], u[:, 2]
        ink = ((g - r) > _INK_GR * 255.0) | ((bl - r) > _INK_BR * 255.0)
    u = u.add_(1.0).clamp_(max=tli).log_()
    return u.neg_().add_(math.log(tli)), ink


def _finite(x: Tensor) -> Tensor:
    """(B,) bool: sample has only finite values (always True for integer input, no pass)."""
    if x.is_floating_point():
        return torch.isfinite(x.reshape(x.shape[0], -1)).all(1)
    return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)


def _default_fit(b: int, device: torch.device) -> tuple[Tensor, Tensor]:
    he = torch.tensor(DEFAULT_TARGET_HE, dtype=torch.float32, device=device)
    he = he / he.norm(dim=0, keepdim=True)
    mc = torch.tensor(DEFAULT_MAX_CONC, dtype=torch.float32, device=device)
    return he.expand(b, 3, 2), mc.expand(b, 2)


def _pinv_cols(he: Tensor) -> tuple[Tensor, Tensor]:
    """Closed-form pseudo-inverse of (B, 3, 2) matrices: (B, 2, 3), and sin^2 of the column angle."""
    g = he.transpose(1, 2) @ he  # (B, 2, 2)
    a, b, d = g[:, 0, 0], g[:, 0, 1], g[:, 1, 1]
    det = a * d - b * b
    sin2 = det / (a * d).clamp(min=1e-12)
    safe = torch.where(sin2 > 1e-4, det, torch.ones_like(det))
    inv = torch.stack([torch.stack([d, -b], -1), torch.stack([-b, a], -1)], -2) / safe[:, None, None]
    return inv @ he.transpose(1, 2), sin2


def _order_stats(v: Tensor, mask: Tensor | None, n: Tensor, ranks: Tensor, k: int, largest: bool) -> Tensor:
    """Exact order statistics of the rows of ``v`` (R, N) restricted to ``mask`` (R, N) (``n`` (R,)
    entries each): values at 0-based ``ranks`` (R, m), ascending (descending if ``largest``); every
    rank is below ``k`` (a static bound) and below the row's count (rows with n = 0: any value).

    On accelerators: one masked ``topk`` of size ``k``. On the CPU (where ``topk`` costs ~10x a pass):
    a threshold from a strided 1-in-16 subsample keeps ~1.5 k candidates per row, verified to hold
    every rank asked for (else the ``topk`` path runs), then one small sort of the candidates.
    """
    r, size = v.shape
    fill = -math.inf if largest else math.inf
    if v.device.type == "cpu" and size >= 64 * _SUB:
        sub = v[:, ::_SUB] if mask is None else v[:, ::_SUB].masked_fill(~mask[:, ::_SUB], fill)
        kk = min(sub.shape[1], math.ceil(1.5 * k / _SUB) + 8)
        t = sub.topk(kk, dim=1, largest=largest).values[:, -1:]
        cond = v >= t if largest else v <= t
        if mask is not None:
            cond &= mask
        cnt = cond.sum(1)
        need = torch.where(n > 0, ranks.amax(1) + 1, 0)
        width = int(cnt.max())
        if width > 0 and bool((cnt >= need).all()):
            vals = torch.masked_select(v, cond)  # row-major: row i's candidates are contiguous
            row = torch.repeat_interleave(torch.arange(r, device=v.device), cnt)
            col = torch.arange(vals.shape[0], device=v.device) - (cnt.cumsum(0) - cnt)[row]
            dense = torch.full((r, width), fill, dtype=v.dtype, device=v.device)
            dense[row, col] = vals
            return dense.sort(dim=1, descending=largest).values.gather(1, ranks)
    w = v if mask is None else v.masked_fill(~mask, fill)
    return w.topk(k, dim=-1, largest=largest).values.gather(-1, ranks)


def _tail_percentiles(
    v: Tensor, n: Tensor, a: float, mask: Tensor | None = None, low_too: bool = True
) -> tuple[Tensor | None, Tensor]:
    """numpy-'linear' ``a`` and ``100 - a`` percentiles over the last dim of ``v`` (..., N), restricted
    to ``mask`` (count ``n`` per row), exact and batched (:func:`_order_stats`: no full sort, no per-row
    Python loop, no 2^24 limit). Rows with n = 0 give 0."""
    lead, size = v.shape[:-1], v.shape[-1]
    v, n = v.reshape(-1, size), n.reshape(-1)
    mask = None if mask is None else mask.reshape(-1, size)
    k = min(size, math.floor((size - 1) * a / 100.0) + 2)
    pos = (n - 1).clamp(min=0).double() * (a / 100.0)
    lo = pos.floor().long().clamp(max=k - 1)
    hi = pos.ceil().long().clamp(max=k - 1)
    frac = (pos - lo.double()).to(v.dtype)
    ranks = torch.stack([lo, hi], -1)
    out = []
    for largest in (False, True) if low_too else (True,):
        st = _order_stats(v, mask, n, ranks, k, largest)
        val = st[:, 0] + (st[:, 1] - st[:, 0]) * frac
        out.append(torch.where(n > 0, val, torch.zeros_like(val)).view(lead))
    return (out[0] if low_too else None), out[-1]


_GRAM_BLOCK = 1 << 14
_SUB = 16  # subsampling stride of the CPU order-statistics threshold


def _gram(a: Tensor, c: Tensor) -> Tensor:
    """``a @ c^T`` for (B, k, N) float32 tensors as float64: float32 products summed in blocks of
    ``_GRAM_BLOCK`` pixels, blocks summed in float64 (a plain float32 sum over millions of pixels,
    as in a slide-level fit, drifts by ~1e-4 relative)."""
    out = None
    for i in range(0, a.shape[-1], _GRAM_BLOCK):
        g = (a[..., i : i + _GRAM_BLOCK] @ c[..., i : i + _GRAM_BLOCK].transpose(1, 2)).double()
        out = g if out is None else out + g
    return out


def _fit_od(
    od: Tensor,
    mask: Tensor,
    finite: Tensor,
    npix: int,
    alpha: float,
    conc_percentile: float,
    min_tissue_fraction: float,
    min_tissue_pixels: int,
) -> MacenkoFit:
    """Macenko fit on (B, 3, N) optical densities with a (B, N) tissue mask and (B,) finiteness."""
    n = mask.sum(1)
    need = max(int(min_tissue_pixels), math.ceil(min_tissue_fraction * npix))
    enough = (n >= need) & finite
    # masked first and second moments in one pass each (float32 sums, combined in float64: OD of
    # tissue has mean ~ std, so the raw-moment form loses about one digit of ~7, far below tolerance)
    odw = od * mask.to(od.dtype)[:, None]
    s1 = odw.sum(-1).double()  # (B, 3)
    s2 = _gram(odw, od)  # (B, 3, 3)
    nd = n.double()
    cov = s2 - s1[:, :, None] * s1[:, None, :] / nd.clamp(min=1)[:, None, None]
    cov = cov / (nd - 1).clamp(min=1)[:, None, None]
    eye = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, device=od.device)).expand_as(cov)
    cov = torch.where(enough[:, None, None] & torch.isfinite(cov), cov, eye)
    _, vecs = torch.linalg.eigh(cov)
    sign = torch.where(vecs.sum(1, keepdim=True) < 0, -1.0, 1.0)
    plane = (vecs * sign)[:, :, 1:3].to(od.dtype)  # (B, 3, 2): second, first principal direction

    t = plane.transpose(1, 2) @ od  # (B, 2, N)
    phi = torch.atan2(t[:, 1], t[:, 0])
    p_min, p_max = _tail_percentiles(phi, n, alpha, mask)
    pct = torch.stack([p_min, p_max], 1)  # (B, 2)
    v = plane @ torch.stack([pct.cos(), pct.sin()], 1)  # (B, 3, 2): v_min, v_max
    eps = torch.finfo(torch.float32).eps
    # H absorbs red: of the two unit stain vectors, H has the larger red OD component (HEnorm's order).
    # A red/blue ratio is not robust: an eosin with almost no blue absorption (E = [0.28, 0.96, 0.08])
    # has a larger R/B ratio than haematoxylin ([0.6, 0.7, 0.27]) and the stains would swap.
    red = v[:, 0] / v.norm(dim=1).clamp(min=eps)  # (B, 2)
    swap = (red[:, 0] < red[:, 1])[:, None, None]
    he = torch.where(swap, v.flip(-1), v)
    he = he / he.norm(dim=1, keepdim=True).clamp(min=1e-12)

    pinv, sin2 = _pinv_cols(he)
    conc = pinv @ od  # (B, 2, N)
    full = torch.full_like(n, od.shape[-1])
    _, max_conc = _tail_percentiles(conc, full[:, None].expand(-1, 2), 100.0 - conc_percentile, low_too=False)
    ok = enough & (sin2 > 1e-4) & torch.isfinite(he).flatten(1).all(1)
    ok = ok & (max_conc > 1e-6).all(1) & torch.isfinite(max_conc).all(1)
    d_he, d_mc = _default_fit(he.shape[0], od.device)
    he = torch.where(ok[:, None, None], he, d_he)
    max_conc = torch.where(ok[:, None], max_conc, d_mc)
    return MacenkoFit(he, max_conc, ~ok)


def _tissue_od(od: Tensor, ink: Tensor | None, beta: float, od_floor: float, finite: Tensor) -> Tensor:
    """(B, N) tissue mask from (B, 3, N) OD (mean above ``beta``, every channel above ``od_floor``),
    minus ink, finite only."""
    m = (od.amin(1) > od_floor) & (od.mean(1) > beta)
    if ink is not None:
        m &= ~ink
    return m & finite[:, None]


# --------------------------------------------------------------------------- Macenko
#: On the CPU, batches run in chunks of about this many pixels, so the ~15 passes over each chunk's
#: optical densities stay in cache (several times faster than whole-batch passes through memory).
_CPU_CHUNK_PIXELS = 1 << 18


def _chunks(x: Tensor) -> list[slice]:
    """Sample ranges to process in turn: the whole batch on accelerators, cache-sized on the CPU."""
    b = x.shape[0]
    if x.device.type != "cpu":
        return [slice(0, b)]
    step = max(1, _CPU_CHUNK_PIXELS // (x.shape[-2] * x.shape[-1]))
    return [slice(i, min(i + step, b)) for i in range(0, b, step)]


def _od_mask(
    x: Tensor, tli: float, beta: float, od_floor: float, exclude_ink: bool, finite: Tensor
) -> tuple[Tensor, Tensor]:
    """(B, 3, N) optical density (zeroed in non-finite samples) and (B, N) tissue mask."""
    od, ink = _od_cn(x, tli, exclude_ink)
    mask = _tissue_od(od, ink, beta, od_floor, finite)
    od = torch.where(finite[:, None, None], od, 0.0) if x.is_floating_point() else od
    return od, mask


def _fit_chunk(
    x: Tensor, tli: float, beta: float, od_floor: float, exclude_ink: bool, **kw
) -> tuple[MacenkoFit, Tensor]:
    """Per-sample Macenko fit of (B, 3, H, W) and its (B, 3, N) optical densities (reused to apply)."""
    finite = _finite(x)
    od, mask = _od_mask(x, tli, beta, od_floor, exclude_ink, finite)
    return _fit_od(od, mask, finite, od.shape[-1], **kw), od


def macenko_target(
    target_stains: Sequence | Tensor, target_max_conc: Sequence | Tensor, owner: str
) -> tuple[Tensor, Tensor]:
    """Validated float32 target stain matrix (3, 2) and maximum concentrations (2,) for ``owner``.

    Example:
        >>> ts, tm = macenko_target(DEFAULT_TARGET_HE, DEFAULT_MAX_CONC, "demo")
        >>> tuple(ts.shape), tuple(tm.shape)
        ((3, 2), (2,))
    """
    ts = torch.as_tensor(target_stains, dtype=torch.float32)
    tm = torch.as_tensor(target_max_conc, dtype=torch.float32)
    if ts.shape != (3, 2) or tm.shape != (2,):
        raise ValueError(
            f"{owner}: `target_stains` must be (3, 2) and `target_max_conc` (2,), got "
            f"{tuple(ts.shape)} and {tuple(tm.shape)}."
        )
    return ts, tm


def macenko_fit(
    img: Tensor,
    tli: float = 240.0,
    alpha: float = 1.0,
    beta: float = 0.2,
    od_floor: float = 0.08,
    conc_percentile: float = 99.0,
    min_tissue_fraction: float = 0.01,
    min_tissue_pixels: int = 64,
    exclude_ink: bool = True,
    pool: bool = False,
) -> MacenkoFit:
    """Estimate Macenko H&E stain matrices and maximum concentrations, batched.

    Per sample: OD of tissue pixels (see module doc; ``od_floor=beta`` gives MONAI's), eigendecomposition of
    their 3x3 covariance (``torch.linalg.eigh``), angles in the plane of the two main eigenvectors,
    the ``alpha`` and ``100 - alpha`` angle percentiles (masked ``topk``, exact numpy 'linear') give
    the two stain vectors (H = the larger red OD component, HEnorm's rule; MONAI 1.6's
    estimate comes out in the other order), and the ``conc_percentile`` of each
    stain's concentration over all pixels gives ``max_conc``. ``pool=True`` fits one matrix over all
    samples (a slide-level fit from several tiles or one large region); apply it per patch with
    :func:`macenko_normalize` (``fit=``) so tiles share one colour map and show no seams.

    Samples with too little tissue (see module doc), a degenerate estimate or non-finite values are
    flagged in ``passthrough`` and carry the default reference values.

    Example:
        >>> fit = macenko_fit(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
        >>> fit.stains.shape, fit.max_conc.shape, fit.passthrough.shape
        (torch.Size([2, 3, 2]), torch.Size([2, 2]), torch.Size([2]))
    """
    x, _ = _batched(img, "macenko_fit")
    if not 0.0 <= alpha < 50.0:
        raise ValueError(f"macenko_fit: `alpha` must be in [0, 50), got {alpha}.")
    if not 50.0 < conc_percentile <= 100.0:
        raise ValueError(f"macenko_fit: `conc_percentile` must be in (50, 100], got {conc_percentile}.")
    kw = {"alpha": alpha, "conc_percentile": conc_percentile, "min_tissue_fraction": min_tissue_fraction}
    kw["min_tissue_pixels"] = min_tissue_pixels
    if not pool:
        fits = map_chunks(
            lambda c: _fit_chunk(x[c], tli, beta, od_floor, exclude_ink, **kw)[0], _chunks(x), x.device
        )
        return fits[0] if len(fits) == 1 else MacenkoFit(*(torch.cat(f) for f in zip(*fits)))
    finite = _finite(x)
    od, mask = _od_mask(x, tli, beta, od_floor, exclude_ink, finite)
    od = od.transpose(0, 1).reshape(1, 3, -1)
    return _fit_od(od, mask.reshape(1, -1), finite.all(0, keepdim=True), od.shape[-1], **kw)


def _stains(stains: Tensor | tuple, b: int, device: torch.device, name: str) -> Tensor:
    s = torch.as_tensor(stains, dtype=torch.float32, device=device)
    if s.ndim == 2:
        s = s[None]
    if s.ndim != 3 or s.shape[-2:] != (3, 2) or s.shape[0] not in (1, b):
        raise ValueError(
            f"{name} must be (3, 2) or ({b}, 3, 2) (rows RGB, columns H, E), got {tuple(s.shape)}."
        )
    return s.expand(b, 3, 2)


def stain_concentrations(img: Tensor, stains: Tensor | tuple, tli: float = 240.0) -> Tensor:
    """Least-squares stain concentrations (pseudo-inverse of ``stains``): (B, 2, H, W) or (2, H, W).

    ``stains``: (3, 2) or (B, 3, 2) OD stain vectors (columns H, E).

    Example:
        >>> he = torch.tensor(DEFAULT_TARGET_HE)
        >>> stain_concentrations(torch.zeros(3, 4, 4, dtype=torch.uint8), he).shape
        torch.Size([2, 4, 4])
    """
    x, single = _batched(img, "stain_concentrations")
    s = _stains(stains, x.shape[0], x.device, "stain_concentrations: `stains`")
    pinv, _ = _pinv_cols(s)
    conc = (pinv @ _od_cn(x, tli)[0]).reshape(x.shape[0], 2, *x.shape[-2:])
    return conc[0] if single else conc


def macenko_normalize(
    img: Tensor,
    target_stains: Tensor | tuple = DEFAULT_TARGET_HE,
    target_max_conc: Tensor | tuple = DEFAULT_MAX_CONC,
    fit: MacenkoFit | None = None,
    tli: float = 240.0,
    alpha: float = 1.0,
    beta: float = 0.2,
    od_floor: float = 0.08,
    conc_percentile: float = 99.0,
    min_tissue_fraction: float = 0.01,
    min_tissue_pixels: int = 64,
    exclude_ink: bool = True,
) -> tuple[Tensor, Tensor]:
    """Macenko stain normalisation to target stain vectors and maximum concentrations, batched.

    Without ``fit`` each patch is fitted on its own (see :func:`macenko_fit` for the parameters);
    patches flagged ``passthrough`` (background-only, near-empty, flat, non-finite) come back
    unchanged. With a ``fit`` (for example a slide-level ``macenko_fit(region, pool=True)``, or a (B,)
    fit) the colour map is applied pixel by pixel, so tiles of one slide join without seams; then
    only samples with non-finite values pass through. A target image's fit gives
    ``target_stains=fit.stains[0]`` and ``target_max_conc=fit.max_conc[0]``. Returns
    ``(normalised image, passthrough (B,) bool)``; the image keeps the input's dtype and range
    (white maps to ``tli``, as in MONAI's NormalizeHEStains).

    Example:
        >>> img = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
        >>> out, passthrough = macenko_normalize(img)
        >>> out.shape, out.dtype, passthrough.shape
        (torch.Size([4, 3, 32, 32]), torch.uint8, torch.Size([4]))
    """
    x, single = _batched(img, "macenko_normalize")
    b = x.shape[0]
    tgt = _stains(target_stains, b, x.device, "macenko_normalize: `target_stains`")
    tmc = torch.as_tensor(target_max_conc, dtype=torch.float32, device=x.device)
    if tmc.ndim == 0 or tmc.ndim > 2 or tmc.shape[-1] != 2:
        raise ValueError(
            f"macenko_normalize: `target_max_conc` must be (2,) or (B, 2), got {tuple(tmc.shape)}."
        )
    tmc = tmc.expand(b, 2)
    if fit is None:
        if not 0.0 <= alpha < 50.0:
            raise ValueError(f"macenko_normalize: `alpha` must be in [0, 50), got {alpha}.")
        src = smc = None
    else:
        if not isinstance(fit, MacenkoFit):
            raise TypeError(f"macenko_normalize: `fit` must be a MacenkoFit, got {type(fit).__name__}.")
        if fit.stains.shape[0] not in (1, b):
            raise ValueError(
                f"macenko_normalize: `fit` holds {fit.stains.shape[0]} samples, expected 1 or {b}."
            )
        src = fit.stains.to(x.device, torch.float32).expand(b, 3, 2)
        smc = fit.max_conc.to(x.device, torch.float32).expand(b, 2)
    kw = {"alpha": alpha, "conc_percentile": conc_percentile, "min_tissue_fraction": min_tissue_fraction}
    kw["min_tissue_pixels"] = min_tissue_pixels

    def run(c: slice) -> tuple[Tensor, Tensor]:
        xc = x[c]
        if src is None:
            cfit, od = _fit_chunk(xc, tli, beta, od_floor, exclude_ink, **kw)
            pt = cfit.passthrough
            sc, mc = cfit.stains, cfit.max_conc
        else:
            finite = _finite(xc)
            od = _od_cn(xc, tli)[0]
            od = torch.where(finite[:, None, None], od, 0.0) if xc.is_floating_point() else od
            pt, sc, mc = ~finite, src[c], smc[c]
        y = _apply_stain_map(xc, od, sc, mc, tgt[c], tmc[c], tli)
        if xc.device.type != "cpu" or bool(pt.any()):  # (a host read only where it is free)
            y = torch.where(pt[:, None, None, None], xc, y)
        return y, pt

    parts = map_chunks(run, _chunks(x), x.device)
    if len(parts) == 1:
        out, passthrough = parts[0]
    else:
        out, passthrough = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    return (out[0], passthrough[0]) if single else (out, passthrough)


def _apply_stain_map(
    x: Tensor, od: Tensor, src: Tensor, smc: Tensor, tgt: Tensor, tmc: Tensor, tli: float
) -> Tensor:
    """One 3x3 OD map per sample, ``OD_out = tgt @ diag(tmc / smc) @ pinv(src) @ OD_in``, then back to
    ``x``'s dtype (``I = tli * exp(-OD_out)`` as one fused ``exp(log(tli) - M @ OD)``)."""
    pinv, _ = _pinv_cols(src)
    m = tgt @ ((tmc / smc.clamp(min=1e-6))[..., None] * pinv)
    scale = tli if x.dtype == torch.uint8 else tli / 255.0
    bias = torch.full((1, 1, 1), math.log(scale), dtype=torch.float32, device=x.device)
    y = torch.baddbmm(bias, m, od, alpha=-1.0).exp_()
    if x.dtype == torch.uint8:
        y = y.clamp_(max=255.0).round_().to(torch.uint8)
    else:
        y = y.clamp_(max=1.0).to(x.dtype)
    return y.view(x.shape)


# --------------------------------------------------------------------------- LAB and Reinhard
_RGB2XYZ = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
_WHITE = (0.95047, 1.0, 1.08883)


def rgb_to_lab(img: Tensor) -> Tensor:
    """sRGB (uint8 or float [0, 1]) to CIE L*a*b* (D65), float32, same layout; matches skimage.color.rgb2lab.

    Example:
        >>> lab = rgb_to_lab(torch.ones(3, 1, 1)).flatten()
        >>> [round(abs(v), 2) for v in lab.tolist()]
        [100.0, 0.0, 0.0]
    """
    x, single = _batched(img, "rgb_to_lab")
    u = _unit(x)
    lin = torch.where(u > 0.04045, ((u + 0.055) / 1.055).clamp(min=0).pow(2.4), u / 12.92)
    m = torch.tensor(_RGB2XYZ, device=u.device) / torch.tensor(_WHITE, device=u.device)[:, None]
    xyz = torch.nn.functional.conv2d(lin, m[:, :, None, None])
    f = torch.where(xyz > (6 / 29) ** 3, xyz.clamp(min=1e-12).pow(1 / 3), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lab = torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)
    return lab[0] if single else lab


def lab_to_rgb(lab: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """CIE L*a*b* (D65) to sRGB, clipped to the gamut; ``dtype`` uint8 (0..255) or float ([0, 1]).

    Example:
        >>> lab_to_rgb(torch.tensor([100.0, 0.0, 0.0]).view(3, 1, 1)).squeeze()
        tensor([1.0000, 1.0000, 1.0000])
    """
    single = lab.ndim == 3
    lab = (lab[None] if single else lab).float()
    fy = (lab[:, 0] + 16) / 116
    f = torch.stack([fy + lab[:, 1] / 500, fy, fy - lab[:, 2] / 200], 1)
    xyz = torch.where(f > 6 / 29, f.pow(3), 3 * (6 / 29) ** 2 * (f - 4 / 29))
    m = torch.tensor(_RGB2XYZ, device=lab.device) / torch.tensor(_WHITE, device=lab.device)[:, None]
    lin = torch.nn.functional.conv2d(xyz, torch.linalg.inv(m)[:, :, None, None]).clamp(0, 1)
    u = torch.where(lin > 0.0031308, 1.055 * lin.clamp(min=1e-12).pow(1 / 2.4) - 0.055, 12.92 * lin).clamp(
        0, 1
    )
    u = (u * 255).round().to(torch.uint8) if dtype == torch.uint8 else u.to(dtype)
    return u[0] if single else u


def reinhard_fit(
    img: Tensor,
    beta: float = 0.2,
    od_floor: float = 0.08,
    min_tissue_fraction: float = 0.01,
    min_tissue_pixels: int = 64,
    exclude_ink: bool = True,
    pool: bool = False,
) -> ReinhardFit:
    """LAB mean / std over tissue pixels per sample (``pool=True``: one over all samples).

    Samples with too little tissue, a flat lightness (L std < 0.01) or non-finite values are
    flagged ``passthrough`` (their statistics are zeros / ones).

    Example:
        >>> fit = reinhard_fit(torch.rand(2, 3, 16, 16) * 0.8)
        >>> fit.mean.shape, fit.passthrough.shape
        (torch.Size([2, 3]), torch.Size([2]))
    """
    x, _ = _batched(img, "reinhard_fit")
    finite = (
        torch.isfinite(x.flatten(1)).all(1)
        if x.is_floating_point()
        else torch.ones_like(x[:, 0, 0, 0], dtype=torch.bool)
    )
    xs = torch.where(finite[:, None, None, None], x, torch.zeros_like(x))
    lab = rgb_to_lab(xs).flatten(2)  # (B, 3, N)
    mask = tissue_mask(xs, beta=beta, od_floor=od_floor, exclude_ink=exclude_ink).flatten(1) & finite[:, None]
    npix = lab.shape[-1]
    if pool:
        lab, mask = lab.transpose(0, 1).reshape(1, 3, -1), mask.reshape(1, -1)
        finite, npix = finite.all(0, keepdim=True), npix * x.shape[0]
    n = mask.sum(1)
    w = mask.to(lab.dtype)[:, None]
    mean = (lab * w).sum(-1) / n.clamp(min=1)[:, None]
    var = (((lab - mean[..., None]) * w) ** 2).sum(-1) / (n - 1).clamp(min=1)[:, None]
    std = var.sqrt()
    need = max(int(min_tissue_pixels), math.ceil(min_tissue_fraction * npix))
    ok = (n >= need) & finite & (std[:, 0] > 0.01)
    mean = torch.where(ok[:, None], mean, torch.zeros_like(mean))
    std = torch.where(ok[:, None], std, torch.ones_like(std))
    return ReinhardFit(mean, std, ~ok)


def reinhard_normalize(
    img: Tensor,
    target_mean: Tensor | tuple,
    target_std: Tensor | tuple,
    fit: ReinhardFit | None = None,
    **fit_kwargs,
) -> tuple[Tensor, Tensor]:
    """Reinhard colour transfer in LAB: ``(lab - mean_src) / std_src * std_tgt + mean_tgt``.

    Source statistics come from ``fit`` (e.g. slide-level, applied per patch) or are fitted per
    sample on tissue pixels (``fit_kwargs`` go to :func:`reinhard_fit`). Passthrough samples come
    back unchanged. Target statistics: ``reinhard_fit(target_image)``'s ``mean[0]`` / ``std[0]``.
    Returns ``(image, passthrough (B,) bool)``.

    Example:
        >>> img = torch.rand(2, 3, 16, 16) * 0.8
        >>> out, pt = reinhard_normalize(img, (70.0, 20.0, -10.0), (10.0, 5.0, 5.0))
        >>> out.shape
        torch.Size([2, 3, 16, 16])
    """
    x, single = _batched(img, "reinhard_normalize")
    b = x.shape[0]
    tm = _per_sample(target_mean, b, x, "reinhard_normalize: `target_mean`", 3)
    ts = _per_sample(target_std, b, x, "reinhard_normalize: `target_std`", 3)
    if fit is None:
        fit = reinhard_fit(x, **fit_kwargs)
        passthrough = fit.passthrough
    else:
        passthrough = torch.zeros(b, dtype=torch.bool, device=x.device)
    if x.is_floating_point():
        passthrough = passthrough | ~torch.isfinite(x.flatten(1)).all(1)
    keep = passthrough[:, None, None, None]
    xs = torch.where(keep, torch.zeros_like(x), x)
    lab = rgb_to_lab(xs)
    sm, ss = fit.mean.to(x.device).expand(b, 3), fit.std.to(x.device).expand(b, 3)
    lab = (lab - sm[..., None, None]) / ss.clamp(min=1e-2)[..., None, None] * ts[..., None, None] + tm[
        ..., None, None
    ]
    y = lab_to_rgb(lab)
    out = torch.where(keep, x, _restore(y, x, False))
    return (out[0], passthrough[0]) if single else (out, passthrough)


# --------------------------------------------------------------------------- HSV, HED and simple jitter
def rgb_to_hsv(img: Tensor) -> Tensor:
    """RGB (uint8 or float [0, 1]) to HSV in [0, 1]^3, float32, same layout.

    Example:
        >>> rgb_to_hsv(torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)).flatten()
        tensor([0., 1., 1.])
    """
    x, single = _batched(img, "rgb_to_hsv")
    u = _unit(x)
    mx, argmx = u.max(1)
    mn = u.amin(1)
    d = mx - mn
    r, g, b = u[:, 0], u[:, 1], u[:, 2]
    dd = d.clamp(min=1e-12)
    h = torch.where(
        argmx == 0, ((g - b) / dd) % 6, torch.where(argmx == 1, (b - r) / dd + 2, (r - g) / dd + 4)
    )
    h = torch.where(d > 0, h / 6.0, torch.zeros_like(h)) % 1.0
    s = torch.where(mx > 0, d / mx.clamp(min=1e-12), torch.zeros_like(mx))
    hsv = torch.stack([h, s, mx], 1)
    return hsv[0] if single else hsv


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """HSV in [0, 1]^3 to float RGB in [0, 1].

    Example:
        >>> hsv_to_rgb(torch.tensor([0.0, 1.0, 1.0]).view(3, 1, 1)).flatten()
        tensor([1., 0., 0.])
    """
    single = hsv.ndim == 3
    t = (hsv[None] if single else hsv).float()
    h, s, v = t[:, 0], t[:, 1], t[:, 2]
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], 1)
    rgb = v[:, None] - v[:, None] * s[:, None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    return rgb[0] if single else rgb


def rgb_to_hed(img: Tensor) -> Tensor:
    """Ruifrok-Johnston H, E, DAB concentrations, scikit-image units (``rgb2hed`` before its clip at 0).

    Example:
        >>> rgb_to_hed(torch.ones(3, 2, 2)).abs().max() < 1e-6
        tensor(True)
    """
    x, single = _batched(img, "rgb_to_hed")
    m = torch.linalg.inv(torch.tensor(RGB_FROM_HED, dtype=torch.float32, device=x.device))
    od = torch.log(_unit(x).clamp(min=1e-6)) / _LOG_ADJUST
    hed = torch.nn.functional.conv2d(od, m.T[:, :, None, None])
    return hed[0] if single else hed


def hed_to_rgb(hed: Tensor) -> Tensor:
    """HED concentrations (scikit-image units) back to float RGB in [0, 1].

    Example:
        >>> hed_to_rgb(torch.zeros(3, 2, 2)).min()
        tensor(1.)
    """
    single = hed.ndim == 3
    c = (hed[None] if single else hed).float()
    m = torch.tensor(RGB_FROM_HED, dtype=torch.float32, device=c.device)
    od = torch.nn.functional.conv2d(c, m.T[:, :, None, None])
    rgb = torch.exp(od * _LOG_ADJUST).clamp(0, 1)
    return rgb[0] if single else rgb


def hed_jitter(img: Tensor, alpha: Tensor | float, beta: Tensor | float) -> Tensor:
    """HED stain augmentation (Tellez et al. 2018): ``c' = alpha * c + beta`` per stain, per sample.

    ``alpha`` / ``beta``: scalars, (3,) or (B, 3) for the H, E, D channels (scikit-image units;
    Tellez 'HED-light' draws alpha ~ U(0.95, 1.05), beta ~ U(-0.05, 0.05)). Identity at alpha=1, beta=0.

    Example:
        >>> img = torch.rand(2, 3, 8, 8)
        >>> torch.allclose(hed_jitter(img, 1.0, 0.0), img, atol=1e-4)
        True
    """
    x, single = _batched(img, "hed_jitter")
    b = x.shape[0]
    a = _per_sample(alpha, b, x, "hed_jitter: `alpha`", 3)
    be = _per_sample(beta, b, x, "hed_jitter: `beta`", 3)
    # fused: OD' = OD @ inv(M) diag(alpha) M + beta @ M, one 3x3 map and offset per sample
    m = torch.tensor(RGB_FROM_HED, dtype=torch.float32, device=x.device)
    mi = torch.linalg.inv(m)
    amat = (mi[None] * a[:, None, :]) @ m  # (B, 3, 3), row-vector convention
    off = be @ m  # (B, 3)
    bias = (off * _LOG_ADJUST)[..., None]
    parts = map_chunks(lambda c: _hed_map(x[c], amat[c].transpose(1, 2), bias[c]), _chunks(x), x.device)
    y = parts[0] if len(parts) == 1 else torch.cat(parts)
    return y[0] if single else y


def _hed_map(x: Tensor, amat: Tensor, bias: Tensor) -> Tensor:
    """``exp(amat @ log(rgb) + bias)`` per sample, back in ``x``'s dtype; uint8 takes a 256-entry log
    table (the same values as the float path, one gather instead of three passes)."""
    b = x.shape[0]
    if x.dtype == torch.uint8:
        lut = torch.arange(256, dtype=torch.float32, device=x.device).div_(255.0).clamp_(min=1e-6).log_()
        od = lut.index_select(0, x.reshape(-1).int()).view(b, 3, -1)
    else:
        od = _unit(x).reshape(b, 3, -1).clamp(min=1e-6).log_()  # = OD * LOG_ADJUST (new tensor)
    y = torch.baddbmm(bias, amat, od).exp_().clamp_(max=1.0).view(x.shape)
    return _restore(y, x, False)


def hsv_jitter(
    img: Tensor, hue: Tensor | float = 0.0, saturation: Tensor | float = 1.0, value: Tensor | float = 1.0
) -> Tensor:
    """HSV jitter: hue shift (fraction of a turn), saturation and value factors; scalars or (B,).

    Example:
        >>> img = torch.rand(3, 8, 8)
        >>> torch.allclose(hsv_jitter(img), img, atol=1e-5)
        True
    """
    x, single = _batched(img, "hsv_jitter")
    b = x.shape[0]
    dh = _per_sample(hue, b, x, "hsv_jitter: `hue`")[:, None, None]
    ds = _per_sample(saturation, b, x, "hsv_jitter: `saturation`")[:, None, None]
    dv = _per_sample(value, b, x, "hsv_jitter: `value`")[:, None, None]
    hsv = rgb_to_hsv(x)
    hsv = torch.stack([(hsv[:, 0] + dh) % 1.0, (hsv[:, 1] * ds).clamp(0, 1), (hsv[:, 2] * dv).clamp(0, 1)], 1)
    return _restore(hsv_to_rgb(hsv), x, single)


def rgb_brightness_contrast(
    img: Tensor, brightness: Tensor | float = 0.0, contrast: Tensor | float = 1.0
) -> Tensor:
    """``(x - mean) * contrast + mean + brightness`` per sample (mean over the sample, [0, 1] units).

    Works for any number of channels; scalars or (B,) parameters.

    Example:
        >>> rgb_brightness_contrast(torch.full((3, 2, 2), 0.5), brightness=0.1).mean()
        tensor(0.6000)
    """
    x, single = _batched(img, "rgb_brightness_contrast", channels=None)
    b = x.shape[0]
    br = _per_sample(brightness, b, x, "rgb_brightness_contrast: `brightness`")[:, None, None, None]
    co = _per_sample(contrast, b, x, "rgb_brightness_contrast: `contrast`")[:, None, None, None]
    u = _unit(x)
    m = u.mean((1, 2, 3), keepdim=True)
    return _restore((u - m) * co + m + br, x, single)


# --------------------------------------------------------------------------- geometry and blur
def _dihedral_index(h: int, w: int, device: torch.device) -> Tensor:
    """(8, H*W) flat source indices of the 8 dihedral elements (k % 4 quarter turns, then flip if k >= 4)."""
    idx = torch.arange(h * w, device=device).view(h, w)
    out = []
    for k in range(8):
        t = torch.rot90(idx, k % 4, (0, 1))
        if k >= 4:
            t = t.flip(1)
        out.append(t.reshape(-1))
    return torch.stack(out)


def dihedral_2d(img: Tensor, k: Tensor | int) -> Tensor:
    """Apply dihedral element ``k`` in 0..7 (``k % 4`` counter-clockwise quarter turns, then a
    left-right flip if ``k >= 4``) to the last two dims; any dtype and channel count (labels too).

    ``k`` as an int applies one element to all samples (any shape); as a (B,) tensor one element
    per sample, in one gather, which needs square images.

    Example:
        >>> x = torch.arange(4.0).view(1, 2, 2)
        >>> dihedral_2d(x, 1).flatten().tolist()
        [1.0, 3.0, 0.0, 2.0]
    """
    if not isinstance(img, Tensor) or img.ndim not in (3, 4):
        raise ValueError("dihedral_2d: `img` must be a (C, H, W) or (B, C, H, W) tensor.")
    if isinstance(k, int):
        if not 0 <= k < 8:
            raise ValueError(f"dihedral_2d: `k` must be in 0..7, got {k}.")
        y = torch.rot90(img, k % 4, (-2, -1))
        return y.flip(-1) if k >= 4 else y
    single = img.ndim == 3
    x = img[None] if single else img
    b, c, h, w = x.shape
    if h != w:
        raise ValueError(f"dihedral_2d: per-sample `k` needs square images, got {h}x{w}; pass an int `k`.")
    kk = torch.as_tensor(k, device=x.device).long().reshape(-1)
    if kk.shape[0] != b:
        raise ValueError(f"dihedral_2d: `k` must have shape ({b},), got {tuple(kk.shape)}.")
    index = _dihedral_index(h, w, x.device)[kk.remainder(8)]  # (B, H*W)
    y = x.reshape(b, c, h * w).gather(2, index[:, None].expand(b, c, h * w)).view(b, c, h, w)
    return y[0] if single else y


def rgb_gaussian_blur(img: Tensor, sigma: Tensor | float, max_sigma: float | None = None) -> Tensor:
    """Separable Gaussian blur per sample (reflect padding), any channel count.

    ``sigma``: float, or (B,) tensor with ``max_sigma`` (a Python float bounding it, which sets
    the kernel radius ``ceil(3 * max_sigma)`` without reading the tensor). ``sigma = 0`` is identity.

    Example:
        >>> img = torch.rand(2, 3, 16, 16)
        >>> torch.allclose(rgb_gaussian_blur(img, 0.0), img)
        True
    """
    x, single = _batched(img, "rgb_gaussian_blur", channels=None)
    b, c, h, w = x.shape
    if isinstance(sigma, Tensor):
        if max_sigma is None:
            raise ValueError("rgb_gaussian_blur: a tensor `sigma` needs `max_sigma` (a Python float).")
        smax = float(max_sigma)
    else:
        smax = float(sigma)
    if smax < 0:
        raise ValueError(f"rgb_gaussian_blur: `sigma` must be >= 0, got {smax}.")
    r = min(math.ceil(3 * smax), h - 1, w - 1)
    if r <= 0:
        return img.clone()
    s = _per_sample(sigma, b, x, "rgb_gaussian_blur: `sigma`").clamp(min=1e-6)
    t = torch.arange(-r, r + 1, device=x.device, dtype=torch.float32)
    k = torch.exp(-0.5 * (t[None] / s[:, None]) ** 2)
    k = k / k.sum(1, keepdim=True)  # (B, K)
    k = k.repeat_interleave(c, 0)  # (B*C, K)
    u = _unit(x).reshape(1, b * c, h, w)
    u = torch.nn.functional.pad(u, (r, r, r, r), mode="reflect")
    u = torch.nn.functional.conv2d(u, k[:, None, :, None], groups=b * c)
    u = torch.nn.functional.conv2d(u, k[:, None, None, :], groups=b * c)
    return _restore(u.view(b, c, h, w), x, single)
