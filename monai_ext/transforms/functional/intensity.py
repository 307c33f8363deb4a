"""Pure torch intensity kernels for radiology (CT / MRI).

Every kernel takes ``(C, *spatial)`` or ``(B, C, *spatial)`` tensors on any device, keeps the input's
floating dtype (integer inputs become float32), and makes no host<->device copy. Per-sample parameters
may be given as ``(B,)`` tensors on the input's device for batched inputs; python floats apply to all.
The only randomness is an explicit ``generator`` (noise), so a call is a pure function of its inputs.

Example:
    >>> import torch
    >>> from monai_ext.transforms.functional import scale_intensity_range
    >>> ct = torch.tensor([[[-1000.0, 0.0, 1000.0]]])
    >>> scale_intensity_range(ct, -1000, 1000).tolist()
    [[[0.0, 0.5, 1.0]]]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "HU_WINDOWS",
    "scale_intensity_range",
    "window_to_range",
    "multi_window_hu",
    "exact_quantile",
    "percentile_scale",
    "nonzero_zscore",
    "adjust_gamma",
    "legendre_bias_field",
    "num_bias_coeffs",
    "apply_bias_field",
    "add_gaussian_noise",
    "gaussian_blur",
    "simulate_low_resolution",
    "shift_intensity",
]

#: CT display windows as (level, width) in Hounsfield units.
HU_WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "liver": (60.0, 150.0),
}

Param = float | torch.Tensor


def as_float(x: torch.Tensor) -> torch.Tensor:
    """Return ``x`` as a floating tensor (integers become float32)."""
    return x if x.is_floating_point() else x.to(torch.float32)


def as_batched(x: torch.Tensor, spatial_dims: int | None, name: str) -> tuple[torch.Tensor, bool]:
    """Return ``(x as (B, C, *sp), was_batched)``; ``spatial_dims`` resolves 4-D ambiguity."""
    if spatial_dims is None:
        if x.ndim == 3:
            spatial_dims = 2
        elif x.ndim == 5:
            spatial_dims = 3
        else:
            raise ValueError(
                f"{name}: cannot tell (C,*spatial) from (B,C,*spatial) for a {x.ndim}-D tensor; "
                "pass spatial_dims."
            )
    if spatial_dims not in (2, 3):
        raise ValueError(f"{name}: spatial_dims must be 2 or 3, got {spatial_dims}.")
    if x.ndim == spatial_dims + 1:
        return x.unsqueeze(0), False
    if x.ndim == spatial_dims + 2:
        return x, True
    raise ValueError(
        f"{name}: expected (C,*spatial) or (B,C,*spatial) with {spatial_dims} spatial dims, got shape "
        f"{tuple(x.shape)}."
    )


def _needs_grad(x: torch.Tensor) -> bool:
    """True when autograd records ops on ``x`` (then in-place shortcuts are not taken)."""
    return x.requires_grad and torch.is_grad_enabled()


def per_sample(v: Param, x: torch.Tensor, lead: int = 1) -> Param:
    """Reshape a ``(B,)`` (or ``(B, k)``) tensor to broadcast over ``x``'s trailing dims."""
    if not isinstance(v, torch.Tensor) or v.ndim == 0:
        return v
    return v.reshape(*v.shape[:lead], *([1] * (x.ndim - lead))).to(device=x.device)


def window_to_range(level: Param, width: Param) -> tuple[Param, Param]:
    """Convert a display window (level, width) to ``(a_min, a_max)``."""
    return level - width / 2, level + width / 2


def scale_intensity_range(
    x: torch.Tensor,
    a_min: Param,
    a_max: Param,
    b_min: float = 0.0,
    b_max: float = 1.0,
    clip: bool = True,
) -> torch.Tensor:
    """Map ``[a_min, a_max]`` linearly to ``[b_min, b_max]`` (MONAI ``ScaleIntensityRange``), optional clip.

    ``a_min`` / ``a_max`` may be ``(B,)`` tensors for a batched ``x``.

    Example:
        >>> scale_intensity_range(torch.tensor([[[-200.0, 40.0, 240.0]]]), -160, 240).tolist()
        [[[0.0, 0.5, 1.0]]]
    """
    if not isinstance(a_min, torch.Tensor) and not isinstance(a_max, torch.Tensor) and a_max <= a_min:
        raise ValueError(f"scale_intensity_range: a_max must exceed a_min, got a_min={a_min}, a_max={a_max}.")
    x = as_float(x)
    a_min, a_max = per_sample(a_min, x), per_sample(a_max, x)
    # MONAI's formula, one new tensor and in-place passes after it (fresh full-size tensors cost more
    # in page faults than the arithmetic)
    out = torch.sub(x, a_min)
    out = out.div_(a_max - a_min) if not _needs_grad(out) else out / (a_max - a_min)
    if b_min != 0.0 or b_max != 1.0:
        out = out.mul_(b_max - b_min).add_(b_min) if not _needs_grad(out) else out * (b_max - b_min) + b_min
    if clip:
        out = out.clamp_(min(b_min, b_max), max(b_min, b_max))
    return out


def shift_intensity(x: torch.Tensor, offset: Param) -> torch.Tensor:
    """``x + offset`` (MONAI ``ShiftIntensity``); ``offset`` may be a ``(B,)`` tensor for a batched ``x``.

    Example:
        >>> shift_intensity(torch.zeros(2, 1, 2), torch.tensor([1.0, -1.0])).tolist()
        [[[1.0, 1.0]], [[-1.0, -1.0]]]
    """
    x = as_float(x)
    off = per_sample(offset, x)
    return x + (off.to(x.dtype) if isinstance(off, torch.Tensor) else off)


def multi_window_hu(
    x: torch.Tensor,
    windows: Sequence[str | tuple[float, float]] = ("soft_tissue", "lung", "bone"),
    b_min: float = 0.0,
    b_max: float = 1.0,
    clip: bool = True,
    spatial_dims: int | None = None,
) -> torch.Tensor:
    """One-channel HU volume -> one channel per display window, each scaled to ``[b_min, b_max]``.

    ``windows`` holds names from :data:`HU_WINDOWS` or ``(level, width)`` pairs; ``(1, *sp)`` gives
    ``(K, *sp)`` and ``(B, 1, *sp)`` gives ``(B, K, *sp)``.

    Example:
        >>> multi_window_hu(torch.zeros(1, 4, 4), ["soft_tissue", (0.0, 100.0)]).shape
        torch.Size([2, 4, 4])
    """
    bounds = []
    for w in windows:
        if isinstance(w, str):
            if w not in HU_WINDOWS:
                raise ValueError(
                    f"multi_window_hu: unknown window {w!r}; expected one of {sorted(HU_WINDOWS)}."
                )
            w = HU_WINDOWS[w]
        level, width = float(w[0]), float(w[1])
        if width <= 0:
            raise ValueError(f"multi_window_hu: window width must be > 0, got {width}.")
        bounds.append(window_to_range(level, width))
    if not bounds:
        raise ValueError("multi_window_hu: windows must not be empty.")
    xb, batched = as_batched(as_float(x), spatial_dims, "multi_window_hu")
    if xb.shape[1] != 1:
        raise ValueError(f"multi_window_hu: x must have 1 channel (HU), got shape {tuple(x.shape)}.")
    shape = [1, len(bounds)] + [1] * (xb.ndim - 2)
    lo = torch.tensor([b[0] for b in bounds], dtype=xb.dtype).to(xb.device, non_blocking=True).reshape(shape)
    hi = torch.tensor([b[1] for b in bounds], dtype=xb.dtype).to(xb.device, non_blocking=True).reshape(shape)
    out = (xb - lo) / (hi - lo)
    if b_min != 0.0 or b_max != 1.0:
        out = out * (b_max - b_min) + b_min
    if clip:
        out = out.clamp_(min(b_min, b_max), max(b_min, b_max))
    return out if batched else out[0]


def exact_quantile(v: torch.Tensor, q: float) -> torch.Tensor:
    """Exact linear-interpolated quantile along the last dim, like ``torch.quantile`` with no size limit.

    ``torch.quantile`` refuses inputs above 2**24 elements; this uses two ``kthvalue`` selections, so it is
    exact (same definition as ``numpy.percentile``'s default "linear") for any size.

    Example:
        >>> exact_quantile(torch.arange(5.0), 0.25)
        tensor(1.)
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"exact_quantile: q must be in [0, 1], got {q}.")
    n = v.shape[-1]
    if n == 0:
        raise ValueError("exact_quantile: cannot take a quantile of an empty tensor.")
    pos = q * (n - 1)
    lo = int(pos)
    frac = pos - lo
    v_lo = torch.kthvalue(v, lo + 1, dim=-1).values
    if frac == 0.0:
        return v_lo
    v_hi = torch.kthvalue(v, min(lo + 2, n), dim=-1).values
    return v_lo + (v_hi - v_lo) * frac


def percentile_scale(
    x: torch.Tensor,
    lower: float,
    upper: float,
    b_min: float = 0.0,
    b_max: float = 1.0,
    clip: bool = False,
    channel_wise: bool = False,
    spatial_dims: int | None = None,
) -> torch.Tensor:
    """Scale so the ``lower`` / ``upper`` percentiles (0-100) map to ``b_min`` / ``b_max``.

    Percentiles are exact (:func:`exact_quantile`), per sample (and per channel if ``channel_wise``),
    computed on the device, with no size limit (unlike ``torch.quantile``). Matches MONAI's
    ``ScaleIntensityRangePercentiles`` (``relative=False``). A constant input maps to ``b_min``.

    Example:
        >>> percentile_scale(torch.arange(101.0).reshape(1, 1, 101), 10, 90, clip=True)[0, 0, 50]
        tensor(0.5000)
    """
    if not 0.0 <= lower <= upper <= 100.0:
        raise ValueError(
            f"percentile_scale: need 0 <= lower <= upper <= 100, got lower={lower}, upper={upper}."
        )
    xb, batched = as_batched(as_float(x), spatial_dims, "percentile_scale")
    flat = xb.reshape(xb.shape[0], xb.shape[1], -1) if channel_wise else xb.reshape(xb.shape[0], 1, -1)
    a_min = exact_quantile(flat, lower / 100.0)[..., None]
    a_max = exact_quantile(flat, upper / 100.0)[..., None]
    rng = a_max - a_min
    scale = torch.where(rng > 0, (b_max - b_min) / torch.where(rng > 0, rng, 1.0), 0.0)
    out = ((flat - a_min) * scale + b_min).reshape(xb.shape)
    if clip:
        out = out.clamp_(min(b_min, b_max), max(b_min, b_max))
    return out if batched else out[0]


def nonzero_zscore(
    x: torch.Tensor, nonzero: bool = True, channel_wise: bool = True, spatial_dims: int | None = None
) -> torch.Tensor:
    """Z-score per sample (and channel), statistics over the non-zero voxels only (MRI).

    Zero voxels stay zero; a channel with no non-zero voxel is returned unchanged; a zero standard
    deviation divides by 1 (as MONAI ``NormalizeIntensity(nonzero=True, channel_wise=True)``).
    Statistics accumulate in float32 for half inputs.

    Example:
        >>> nonzero_zscore(torch.tensor([[[0.0, 1.0, 3.0]]])).tolist()
        [[[0.0, -1.0, 1.0]]]
    """
    xb, batched = as_batched(as_float(x), spatial_dims, "nonzero_zscore")
    b, c = xb.shape[:2]
    flat = xb.reshape(b, c, -1) if channel_wise else xb.reshape(b, 1, -1)
    f32 = flat.float()
    if nonzero:
        mask = flat != 0
        n = mask.sum(-1, keepdim=True).clamp_min(1).float()
        mean = (f32 * mask).sum(-1, keepdim=True) / n
        var = (((f32 - mean) * mask) ** 2).sum(-1, keepdim=True) / n
    else:
        mask = None
        mean = f32.mean(-1, keepdim=True)
        var = f32.var(-1, keepdim=True, unbiased=False)
    std = var.sqrt()
    std = torch.where(std == 0, 1.0, std)
    out = (f32 - mean) / std
    if mask is not None:
        out = torch.where(mask, out, f32)
    out = out.to(xb.dtype).reshape(xb.shape)
    return out if batched else out[0]


def adjust_gamma(
    x: torch.Tensor, gamma: Param, eps: float = 1e-7, spatial_dims: int | None = None
) -> torch.Tensor:
    """Gamma on the per-sample min-max range (MONAI ``AdjustContrast``): ``((x-m)/(r+eps))**g * r + m``.

    ``gamma`` may be a ``(B,)`` tensor.

    Example:
        >>> adjust_gamma(torch.tensor([[[0.0, 0.25, 1.0]]]), 0.5).round(decimals=4).tolist()
        [[[0.0, 0.5, 1.0]]]
    """
    xb, batched = as_batched(as_float(x), spatial_dims, "adjust_gamma")
    mn, mx = torch.aminmax(xb.reshape(xb.shape[0], -1), dim=1)  # one pass for both
    shape = (-1, *([1] * (xb.ndim - 1)))
    mn, rng = mn.reshape(shape), (mx - mn).reshape(shape)
    inv = 1.0 / (rng + eps)
    g = per_sample(gamma, xb)
    if _needs_grad(xb) or (isinstance(g, torch.Tensor) and _needs_grad(g)):
        out = ((xb - mn) * inv).clamp_min(0).pow(g) * rng + mn
    else:  # in place after one new tensor
        out = torch.sub(xb, mn).mul_(inv).clamp_min_(0).pow_(g).mul_(rng).add_(mn)
    return out if batched else out[0]


def _legendre(n: int, degree: int, device: torch.device) -> torch.Tensor:
    """Legendre polynomials P_0..P_degree sampled on ``linspace(-1, 1, n)``: (degree+1, n)."""
    t = torch.linspace(-1.0, 1.0, n, device=device)
    polys = [torch.ones_like(t), t]
    for k in range(1, degree):
        polys.append(((2 * k + 1) * t * polys[k] - k * polys[k - 1]) / (k + 1))
    return torch.stack(polys[: degree + 1])


def legendre_bias_field(
    spatial_shape: Sequence[int], coeffs: torch.Tensor, degree: int, device: torch.device | None = None
) -> torch.Tensor:
    """Smooth log-bias field ``sum c_ijk P_i(x) P_j(y) P_k(z)`` over all ``i+j+k <= degree``.

    ``coeffs`` is ``(B, K)`` with ``K`` the number of such index tuples (:func:`num_bias_coeffs`
    order: lexicographic). Returns ``(B, 1, *spatial_shape)`` float32.

    Example:
        >>> legendre_bias_field((4, 4), torch.zeros(1, 6), 2).abs().max()
        tensor(0.)
    """
    d = len(spatial_shape)
    idx = [t for t in _index_tuples(d, degree)]
    if coeffs.ndim != 2 or coeffs.shape[1] != len(idx):
        raise ValueError(
            f"legendre_bias_field: coeffs must be (B, {len(idx)}) for degree {degree} in {d}D, "
            f"got {tuple(coeffs.shape)}."
        )
    device = coeffs.device if device is None else device
    full = torch.zeros(coeffs.shape[0], *([degree + 1] * d), device=device, dtype=torch.float32)
    flat_idx = torch.tensor([sum(i * (degree + 1) ** (d - 1 - a) for a, i in enumerate(t)) for t in idx])
    full.view(coeffs.shape[0], -1)[:, flat_idx.to(device)] = coeffs.to(device=device, dtype=torch.float32)
    bases = [_legendre(n, degree, device) for n in spatial_shape]
    if d == 2:
        field = torch.einsum("bij,ix,jy->bxy", full, *bases)
    else:
        field = torch.einsum("bijk,ix,jy,kz->bxyz", full, *bases)
    return field.unsqueeze(1)


def _index_tuples(d: int, degree: int) -> list[tuple[int, ...]]:
    if d == 2:
        return [(i, j) for i in range(degree + 1) for j in range(degree + 1) if i + j <= degree]
    return [
        (i, j, k)
        for i in range(degree + 1)
        for j in range(degree + 1)
        for k in range(degree + 1)
        if i + j + k <= degree
    ]


def num_bias_coeffs(spatial_dims: int, degree: int) -> int:
    """Number of coefficients of a degree-``degree`` bias field in ``spatial_dims`` dimensions."""
    return len(_index_tuples(spatial_dims, degree))


def apply_bias_field(
    x: torch.Tensor, coeffs: torch.Tensor, degree: int = 3, spatial_dims: int | None = None
) -> torch.Tensor:
    """Multiply by ``exp(field)``, a smooth Legendre-polynomial bias field (MRI inhomogeneity).

    Example:
        >>> apply_bias_field(torch.ones(1, 4, 4), torch.zeros(1, 6), degree=2).unique().tolist()
        [1.0]
    """
    xb, batched = as_batched(as_float(x), spatial_dims, "apply_bias_field")
    if coeffs.ndim == 1:
        coeffs = coeffs.unsqueeze(0)
    field = legendre_bias_field(xb.shape[2:], coeffs, degree, device=xb.device)
    out = xb * field.exp_().to(xb.dtype)
    return out if batched else out[0]


def add_gaussian_noise(
    x: torch.Tensor,
    std: Param,
    mean: Param = 0.0,
    generator: torch.Generator | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x + N(mean, std)``, noise drawn on ``x``'s device in ``x``'s dtype (no float64 host draw).

    ``std`` / ``mean`` may be ``(B,)`` tensors for a batched ``x``; ``generator`` must live on
    ``x.device``. ``out`` (``x`` itself allowed) receives the result. On the CPU the noise is drawn
    chunk by chunk into a small scratch buffer and added in the same pass (no second full tensor);
    samples with ``std == 0`` draw nothing.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> add_gaussian_noise(torch.zeros(1, 8, 8), 0.0, generator=g).abs().max()
        tensor(0.)
    """
    x = as_float(x)
    if out is not None and (out.shape != x.shape or out.dtype != x.dtype or out.device != x.device):
        raise ValueError(
            f"add_gaussian_noise: `out` must match x ({tuple(x.shape)}, {x.dtype}, {x.device}), got "
            f"{tuple(out.shape)}, {out.dtype}, {out.device}."
        )
    if x.device.type == "cpu" and x.numel() > _NOISE_CHUNK and not _needs_grad(x):
        return _add_noise_chunked(x, std, mean, generator, out)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    noise.mul_(per_sample(std, x))
    if not (isinstance(mean, float | int) and mean == 0):
        noise.add_(per_sample(mean, x))
    return noise.add_(x) if out is None else torch.add(x, noise, out=out)


_NOISE_CHUNK = 1 << 16  # CPU: draw noise into a cache-sized scratch buffer, not a second full tensor


def _add_noise_chunked(
    x: torch.Tensor, std: Param, mean: Param, generator: torch.Generator | None, out: torch.Tensor | None
) -> torch.Tensor:
    """CPU path of :func:`add_gaussian_noise`: one pass over ``x``, noise drawn chunk by chunk."""
    per = isinstance(std, torch.Tensor) and std.ndim > 0 or isinstance(mean, torch.Tensor) and mean.ndim > 0
    rows = x.shape[0] if per else 1
    stds = torch.as_tensor(std, dtype=torch.float64).expand(rows).tolist()
    means = torch.as_tensor(mean, dtype=torch.float64).expand(rows).tolist()
    src = x.reshape(rows, -1)
    if out is None:
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
    dst = out.view(rows, -1) if out.is_contiguous() else None
    res = dst if dst is not None else torch.empty_like(src)
    n = src.shape[1]
    full = x.dtype in (torch.float32, torch.float64)  # half: draw in float32, round once at the end
    scratch = torch.empty(min(n, _NOISE_CHUNK), dtype=x.dtype if full else torch.float32)
    for r in range(rows):
        for c0 in range(0, n, _NOISE_CHUNK):
            c1 = min(n, c0 + _NOISE_CHUNK)
            if not stds[r]:
                res[r, c0:c1] = src[r, c0:c1] + means[r] if means[r] else src[r, c0:c1]
            elif full:  # x + std * N(mean / std, 1) = x + N(mean, std), one fused pass
                z = scratch[: c1 - c0].normal_(means[r] / stds[r], 1.0, generator=generator)
                torch.add(src[r, c0:c1], z, alpha=stds[r], out=res[r, c0:c1])
            else:
                z = scratch[: c1 - c0].normal_(means[r], stds[r], generator=generator)
                res[r, c0:c1] = (z + src[r, c0:c1]).to(x.dtype)
    if dst is None:
        out.copy_(res.view(x.shape))
    return out


def _gauss_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """(N,) sigmas -> (N, 2*radius+1) normalised Gaussian kernels."""
    t = torch.arange(-radius, radius + 1, device=sigma.device, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma.float().clamp_min(1e-6)[:, None]) ** 2)
    return k / k.sum(-1, keepdim=True)


def gaussian_blur(
    x: torch.Tensor,
    sigma: Param,
    radius: int | None = None,
    truncate: float = 4.0,
    spatial_dims: int | None = None,
) -> torch.Tensor:
    """Separable Gaussian blur (sigma in voxels, same on every axis), replicate padding.

    ``sigma`` may be a ``(B,)`` tensor (one grouped convolution per axis for the whole batch). The
    kernel radius is ``radius`` or ``ceil(truncate * max sigma)``; pass ``radius`` with tensor sigmas to
    avoid reading the maximum back to the host.

    Example:
        >>> gaussian_blur(torch.ones(1, 9, 9), 1.5).allclose(torch.ones(1, 9, 9))
        True
    """
    xb, batched = as_batched(as_float(x), spatial_dims, "gaussian_blur")
    b, c, *sp = xb.shape
    d = len(sp)
    if radius is None:
        smax = float(sigma.max()) if isinstance(sigma, torch.Tensor) else float(sigma)
        radius = max(1, int(truncate * smax + 0.999))
    sig = sigma if isinstance(sigma, torch.Tensor) else torch.tensor([float(sigma)])
    sig = sig.to(xb.device).reshape(-1)
    if sig.numel() not in (1, b):
        raise ValueError(f"gaussian_blur: sigma must be a scalar or have B={b} entries, got {sig.numel()}.")
    kern = _gauss_kernels(sig, radius).to(xb.dtype)
    if sig.numel() == 1:
        groups, kern, y = c, kern.expand(c, -1), xb
    else:
        groups, kern, y = b * c, kern.repeat_interleave(c, 0), xb.reshape(1, b * c, *sp)
    conv = F.conv2d if d == 2 else F.conv3d
    for axis in range(d):
        shape = [groups, 1] + [1] * d
        shape[2 + axis] = 2 * radius + 1
        pad = [0] * (2 * d)
        pad[2 * (d - 1 - axis)] = pad[2 * (d - 1 - axis) + 1] = radius
        y = conv(F.pad(y, pad, mode="replicate"), kern.reshape(shape), groups=groups)
    y = y.reshape(b, c, *sp)
    return y if batched else y[0]


def simulate_low_resolution(
    x: torch.Tensor, zoom: Param, spatial_dims: int | None = None, mode: str = "bilinear"
) -> torch.Tensor:
    """Nearest down-sampling by ``zoom`` (0 < zoom <= 1) then ``mode`` up-sampling to the input size.

    Works for per-sample ``(B,)`` zooms in one batched pass: the low-resolution image is held in the
    corner of a full-size buffer (two ``grid_sample`` calls, no per-sample sizes). Edges clamp.

    Example:
        >>> y = simulate_low_resolution(torch.arange(16.0).reshape(1, 4, 4), 0.5)
        >>> y.shape
        torch.Size([1, 4, 4])
    """
    xb, batched = as_batched(as_float(x), spatial_dims, "simulate_low_resolution")
    if not isinstance(zoom, torch.Tensor) and not 0.0 < zoom <= 1.0:
        raise ValueError(f"simulate_low_resolution: zoom must be in (0, 1], got {zoom}.")
    b, d = xb.shape[0], xb.ndim - 2
    z = torch.as_tensor(zoom, dtype=torch.float32).to(xb.device).reshape(-1).expand(b)
    eye = torch.eye(d, device=xb.device)
    cdt = xb.dtype if xb.dtype == torch.float32 else torch.float32
    src = xb.to(cdt)

    n_rev = torch.tensor(xb.shape[2:][::-1], dtype=torch.float32).to(xb.device, non_blocking=True)

    def theta(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.cat([eye * s[:, None, None], t[:, :, None]], dim=2)

    # down: low-res voxel j <- input voxel floor(j / z) (as F.interpolate "nearest"); a 1e-3 voxel nudge
    # makes grid_sample's round-half-even pick the floor
    t_down = 1 / z[:, None] - 1 / (z[:, None] * n_rev) + 2e-3 / n_rev - 1
    g_down = F.affine_grid(theta(1.0 / z, t_down), list(xb.shape), align_corners=False)
    low = F.grid_sample(src, g_down, mode="nearest", padding_mode="border", align_corners=False)
    # up: output voxel i <- low-res position (i + 0.5) * z - 0.5, clamped to the last valid low-res voxel
    g_up = F.affine_grid(theta(z, (z - 1)[:, None].expand(b, d)), list(xb.shape), align_corners=False)
    g_up = torch.minimum(g_up, (2 * z[:, None] - 1 - 1 / n_rev).reshape(b, *([1] * d), d))
    out = F.grid_sample(low, g_up, mode=mode, padding_mode="border", align_corners=False).to(xb.dtype)
    return out if batched else out[0]
