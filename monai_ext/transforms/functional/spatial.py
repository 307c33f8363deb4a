"""Pure torch spatial kernels: batched affine / elastic resampling, flips and label-balanced crops.

Affine matrices follow MONAI's ``Affine`` convention: a ``(d+1, d+1)`` matrix in voxel units about the
image centre (``(size - 1) / 2``) that maps *output* coordinates to *input* coordinates, with axes in
tensor order (not x/y/z reversed). :func:`affine_matrix` composes ``rotate @ shear @ translate @ scale``
as ``monai.transforms.AffineGrid`` does, for a whole batch at once, on the parameters' device.

Example:
    >>> import torch
    >>> from monai_ext.transforms.functional import affine_matrix, affine_resample
    >>> m = affine_matrix(2, rotate=torch.zeros(1, 1))
    >>> x = torch.rand(1, 1, 8, 8)
    >>> torch.allclose(affine_resample(x, m), x, atol=1e-6)
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from monai_ext.transforms.functional.intensity import as_batched

__all__ = [
    "affine_matrix",
    "affine_theta",
    "affine_grid_slab",
    "affine_resample",
    "elastic_resample",
    "flip_per_sample",
    "rot90_per_sample",
    "crop_patches",
    "sample_crop_starts",
]


def _param(v: torch.Tensor | Sequence[float] | None, width: int, name: str) -> torch.Tensor | None:
    if v is None:
        return None
    v = torch.as_tensor(v, dtype=torch.float32)
    if v.ndim == 1 and width == 1:
        v = v[:, None]
    if v.ndim == 1:
        v = v[None]
    if v.ndim != 2 or v.shape[1] != width:
        raise ValueError(f"affine_matrix: {name} must be (B, {width}), got {tuple(v.shape)}.")
    return v.float()


def affine_matrix(
    spatial_dims: int,
    rotate: torch.Tensor | Sequence[float] | None = None,
    shear: torch.Tensor | Sequence[float] | None = None,
    translate: torch.Tensor | Sequence[float] | None = None,
    scale: torch.Tensor | Sequence[float] | None = None,
) -> torch.Tensor:
    """Batched ``(B, d+1, d+1)`` matrices ``R @ Sh @ T @ S`` (MONAI ``AffineGrid`` order and conventions).

    Args:
        spatial_dims: 2 or 3.
        rotate: radians, ``(B, 1)`` in 2D, ``(B, 3)`` in 3D (intrinsic "XYZ" as MONAI's default).
        shear: ``(B, 2)`` in 2D, ``(B, 6)`` in 3D, composed as ``monai.transforms.utils.create_shear``.
        translate: ``(B, d)`` voxels.
        scale: ``(B, d)`` factors (1 = identity; > 1 samples a larger field of view, i.e. zooms out).

    Example:
        >>> affine_matrix(2, scale=torch.tensor([[2.0, 1.0]]))[0]
        tensor([[2., 0., 0.],
                [0., 1., 0.],
                [0., 0., 1.]])
    """
    d = spatial_dims
    if d not in (2, 3):
        raise ValueError(f"affine_matrix: spatial_dims must be 2 or 3, got {d}.")
    ps = {
        "rotate": _param(rotate, 1 if d == 2 else 3, "rotate"),
        "shear": _param(shear, 2 if d == 2 else 6, "shear"),
        "translate": _param(translate, d, "translate"),
        "scale": _param(scale, d, "scale"),
    }
    given = [p for p in ps.values() if p is not None]
    if not given:
        raise ValueError("affine_matrix: give at least one of rotate, shear, translate, scale.")
    b, dev = given[0].shape[0], given[0].device
    eye = torch.eye(d + 1, device=dev).expand(b, d + 1, d + 1)
    out = eye.clone()
    r = ps["rotate"]
    if r is not None:
        c, s = torch.cos(r), torch.sin(r)
        if d == 2:
            rot = eye.clone()
            rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = c[:, 0], -s[:, 0], s[:, 0], c[:, 0]
            out = out @ rot
        else:
            for axis, (i, j, sign) in enumerate(((1, 2, 1.0), (0, 2, -1.0), (0, 1, 1.0))):
                rot = eye.clone()
                rot[:, i, i], rot[:, j, j] = c[:, axis], c[:, axis]
                rot[:, i, j], rot[:, j, i] = -sign * s[:, axis], sign * s[:, axis]
                out = out @ rot
    sh = ps["shear"]
    if sh is not None:
        pairs = [(0, 1), (1, 0)] if d == 2 else [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
        m = eye.clone()
        for k, (i, j) in enumerate(pairs):
            e = eye.clone()
            e[:, i, j] = sh[:, k]
            m = e @ m
        out = out @ m
    t = ps["translate"]
    if t is not None:
        m = eye.clone()
        m[:, :d, d] = t
        out = out @ m
    sc = ps["scale"]
    if sc is not None:
        out = out @ torch.diag_embed(torch.cat([sc, torch.ones(b, 1, device=dev)], dim=1))
    return out


def affine_theta(
    matrix: torch.Tensor, in_shape: Sequence[int], out_shape: Sequence[int], align_corners: bool = False
) -> torch.Tensor:
    """Convert centred voxel matrices ``(B, d+1, d+1)`` to ``F.affine_grid``'s normalised ``(B, d, d+1)``."""
    d = matrix.shape[-1] - 1
    dev = matrix.device

    def norm(shape: Sequence[int]) -> torch.Tensor:
        n = torch.tensor(
            [float(max(s, 2)) - (1.0 if align_corners else 0.0) for s in shape], dtype=torch.float32
        )
        return torch.cat([2.0 / n, torch.ones(1)]).to(dev, non_blocking=True)

    m = norm(in_shape)[:, None] * matrix.float() / norm(out_shape)[None, :]
    perm = list(range(d))[::-1] + [d]
    return m[:, perm][:, :, perm][:, :d]


def _resample(
    x: torch.Tensor, grid: torch.Tensor, mode: str, padding_mode: str, align_corners: bool
) -> torch.Tensor:
    """grid_sample in float32 (labels and half inputs), result in x's dtype."""
    src = x if x.dtype == torch.float32 else x.float()
    out = F.grid_sample(src, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    if not x.is_floating_point():
        out = out.round_()
    return out.to(x.dtype)


def _base_coords(n: int, align_corners: bool, device: torch.device) -> torch.Tensor:
    """Normalised sample positions along one axis, exactly as ``F.affine_grid`` places them."""
    if n <= 1:
        return torch.zeros(max(n, 1), device=device)
    lin = torch.linspace(-1.0, 1.0, n, device=device)
    return lin if align_corners else lin * ((n - 1) / n)


def affine_grid_slab(
    theta: torch.Tensor, out_shape: Sequence[int], start: int, stop: int, align_corners: bool = False
) -> torch.Tensor:
    """Rows ``start:stop`` (first spatial axis) of ``F.affine_grid(theta, (B, 1, *out_shape))``.

    Built by broadcasting one term per axis (no ``(N, d+1) @ (d+1, d)`` product over every voxel), so a
    resample can generate its grid slab by slab, each slab small enough to stay in cache.

    Example:
        >>> th = torch.tensor([[[0.9, 0.1, 0.0], [0.0, 1.0, 0.2]]])
        >>> ref = F.affine_grid(th, [1, 1, 5, 6], align_corners=False)
        >>> torch.allclose(affine_grid_slab(th, (5, 6), 1, 3), ref[:, 1:3], atol=1e-6)
        True
    """
    d = theta.shape[-1] - 1
    dev, th, b = theta.device, theta.float(), theta.shape[0]
    # one (B, d, rows, *rest) plane per grid coordinate, contiguous along the last axis (vectorised adds);
    # returned as a channels-last view, which grid_sample reads through its strides
    planes = th[:, :, d].reshape(b, d, *([1] * d))
    for axis, n in enumerate(out_shape):
        base = _base_coords(n, align_corners, dev)
        if axis == 0:
            base = base[start:stop]
        shape = [1] * d
        shape[axis] = base.shape[0]
        term = th[:, :, d - 1 - axis].reshape(b, d, *([1] * d)) * base.reshape(shape)
        planes = planes + term
    return planes.movedim(1, -1)


def _resample_blocks(batch: int, shape: Sequence[int], device: torch.device) -> tuple[int, int]:
    """(samples, rows) per grid_sample call: whole batch and volume on GPUs; on the CPU one sample per
    thread (grid_sample parallelises over the batch) and ~2.5 MB of grid per sample, so each thread's
    grid slab and input volume stay in cache."""
    if device.type != "cpu":
        return batch, shape[0]
    per_row = len(shape) * 4
    for s in shape[1:]:
        per_row *= s
    return max(1, min(batch, torch.get_num_threads())), max(1, min(shape[0], (5 << 19) // per_row))


def affine_resample(
    x: torch.Tensor,
    matrix: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
    spatial_size: Sequence[int] | None = None,
) -> torch.Tensor:
    """Resample ``x`` ((C,*sp) with a (d+1,d+1) matrix or (B,C,*sp) with (B,d+1,d+1)) by an affine matrix.

    ``mode="nearest"`` keeps integer label maps integer-valued (computed in float32, cast back). Reduced
    precision images are sampled in float32 and returned in their dtype. The sampling grid is built
    slab by slab along the first spatial axis (:func:`affine_grid_slab`), never for the whole batch.

    Example:
        >>> affine_resample(torch.arange(4.0).reshape(1, 2, 2), torch.eye(3), mode="nearest").tolist()
        [[[0.0, 1.0], [2.0, 3.0]]]
    """
    d = matrix.shape[-1] - 1
    xb, batched = as_batched(x, d, "affine_resample")
    mat = matrix if matrix.ndim == 3 else matrix[None]
    if mat.shape[0] not in (1, xb.shape[0]):
        raise ValueError(f"affine_resample: matrix batch {mat.shape[0]} != image batch {xb.shape[0]}.")
    out_shape = list(spatial_size) if spatial_size is not None else list(xb.shape[2:])
    theta = affine_theta(mat.to(xb.device), xb.shape[2:], out_shape, align_corners).expand(
        xb.shape[0], -1, -1
    )
    group, rows = _resample_blocks(xb.shape[0], out_shape, xb.device)
    if group >= xb.shape[0] and rows >= out_shape[0]:
        grid = affine_grid_slab(theta, out_shape, 0, out_shape[0], align_corners)
        out = _resample(xb, grid, mode, padding_mode, align_corners)
        return out if batched else out[0]
    out = torch.empty((*xb.shape[:2], *out_shape), dtype=xb.dtype, device=xb.device)
    for b0 in range(0, xb.shape[0], group):
        xg, tg = xb[b0 : b0 + group], theta[b0 : b0 + group]
        for r0 in range(0, out_shape[0], rows):
            r1 = min(r0 + rows, out_shape[0])
            grid = affine_grid_slab(tg, out_shape, r0, r1, align_corners)
            out[b0 : b0 + group, :, r0:r1] = _resample(xg, grid, mode, padding_mode, align_corners)
    return out if batched else out[0]


def elastic_resample(
    x: torch.Tensor,
    displacement: torch.Tensor,
    matrix: torch.Tensor | None = None,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Warp ``(B, C, *sp)`` by a smooth displacement on a coarse control lattice (after an optional affine).

    ``displacement`` is ``(B, d, *ctrl)`` in input voxels, axes in tensor order; it is interpolated
    (bicubic in 2D, trilinear in 3D, corners aligned) to the full grid and added to the (affine) sampling
    grid, so affine + elastic cost one resample.

    Example:
        >>> x = torch.rand(1, 1, 8, 8)
        >>> torch.allclose(elastic_resample(x, torch.zeros(1, 2, 3, 3)), x, atol=1e-6)
        True
    """
    d = displacement.shape[1]
    xb, batched = as_batched(x, d, "elastic_resample")
    b, sp = xb.shape[0], list(xb.shape[2:])
    if displacement.ndim != d + 2 or displacement.shape[0] not in (1, b):
        raise ValueError(
            f"elastic_resample: displacement must be (B={b}, {d}, *ctrl), got {tuple(displacement.shape)}."
        )
    mat = torch.eye(d + 1, device=xb.device)[None] if matrix is None else matrix.reshape(-1, d + 1, d + 1)
    theta = affine_theta(mat.to(xb.device), sp, sp).expand(b, -1, -1)
    grid = affine_grid_slab(theta, sp, 0, sp[0])
    disp = F.interpolate(
        displacement.float().to(xb.device),
        size=sp,
        mode="bicubic" if d == 2 else "trilinear",
        align_corners=True,
    )
    scale = torch.tensor([2.0 / max(s, 2) for s in sp], dtype=torch.float32).to(xb.device, non_blocking=True)
    disp = disp * scale.reshape(1, d, *([1] * d))
    grid = grid + disp.flip(1).movedim(1, -1)
    out = _resample(xb, grid, mode, padding_mode, False)
    return out if batched else out[0]


def flip_per_sample(x: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
    """Flip each sample of ``(B, C, *sp)`` along the spatial axes where ``flags`` ``(B, d)`` is True.

    Example:
        >>> flip_per_sample(torch.arange(3.0).reshape(1, 1, 3), torch.tensor([[True]])).tolist()
        [[[2.0, 1.0, 0.0]]]
    """
    d = x.ndim - 2
    if flags.shape != (x.shape[0], d):
        raise ValueError(
            f"flip_per_sample: flags must be (B, {d}) = {(x.shape[0], d)}, got {tuple(flags.shape)}."
        )
    if x.device.type == "cpu":  # one copy per sample, flipped along its own axes (no sync on the CPU)
        out = torch.empty_like(x)
        for i, row in enumerate(flags.tolist()):
            dims = [2 + a - 1 for a, f in enumerate(row) if f]  # sample i is (C, *sp): axis a is a + 1
            out[i] = x[i].flip(dims) if dims else x[i]
        return out
    for a in range(d):
        x = torch.where(flags[:, a].reshape(-1, *([1] * (d + 1))), x.flip(2 + a), x)
    return x


def rot90_per_sample(x: torch.Tensor, k: torch.Tensor, spatial_axes: Sequence[int] = (0, 1)) -> torch.Tensor:
    """Rotate each sample of ``(B, C, *sp)`` by ``k[i]`` quarter turns in the plane of ``spatial_axes``
    (``torch.rot90`` direction, as MONAI ``Rotate90``); the two axes must have equal sizes.

    Example:
        >>> x = torch.arange(4.0).reshape(1, 1, 2, 2)
        >>> rot90_per_sample(x, torch.tensor([1])).tolist()
        [[[[1.0, 3.0], [0.0, 2.0]]]]
    """
    d = x.ndim - 2
    axes = tuple(int(a) for a in spatial_axes)
    if len(axes) != 2 or axes[0] == axes[1] or any(a < 0 or a >= d for a in axes):
        raise ValueError(
            f"rot90_per_sample: spatial_axes must be two distinct axes in 0..{d - 1}, got {axes}."
        )
    dims = (2 + axes[0], 2 + axes[1])
    if x.shape[dims[0]] != x.shape[dims[1]]:
        raise ValueError(
            f"rot90_per_sample: rotated axes {axes} must have equal sizes in a batch, got {tuple(x.shape)}."
        )
    if k.shape != (x.shape[0],):
        raise ValueError(f"rot90_per_sample: k must be (B,) = ({x.shape[0]},), got {tuple(k.shape)}.")
    if x.device.type == "cpu":  # one copy per sample (reading k costs no sync on the CPU)
        out = torch.empty_like(x)
        for i, ki in enumerate(k.tolist()):
            out[i] = torch.rot90(x[i], ki % 4, (dims[0] - 1, dims[1] - 1))
        return out
    out = x
    k4 = k.remainder(4)
    for kk in (1, 2, 3):
        out = torch.where((k4 == kk).reshape(-1, *([1] * (d + 1))), torch.rot90(x, kk, dims), out)
    return out


def crop_patches(x: torch.Tensor, starts: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Gather ``N`` crops per sample: ``x`` ``(B, C, *sp)``, ``starts`` ``(B, N, d)`` -> ``(B*N, C, *size)``.

    Example:
        >>> crop_patches(torch.arange(16.0).reshape(1, 1, 4, 4), torch.tensor([[[1, 2]]]), (2, 2)).tolist()
        [[[[6.0, 7.0], [10.0, 11.0]]]]
    """
    b, c, *sp = x.shape
    d = len(sp)
    if starts.ndim != 3 or starts.shape[0] != b or starts.shape[2] != d:
        raise ValueError(f"crop_patches: starts must be (B={b}, N, {d}), got {tuple(starts.shape)}.")
    n = starts.shape[1]
    if x.device.type == "cpu":  # slices copy faster than a gather; reading the starts costs no sync here
        out = x.new_empty((b, n, c, *size))
        for i, row in enumerate(starts.tolist()):
            for j, st in enumerate(row):
                out[i, j] = x[(i, slice(None), *(slice(s0, s0 + k) for s0, k in zip(st, size)))]
        return out.reshape(b * n, c, *size)
    idx = [torch.arange(b, device=x.device).reshape(b, 1, *([1] * d))]
    for a in range(d):
        shape = [b, n] + [1] * d
        shape[2 + a] = size[a]
        idx.append((starts[:, :, a, None] + torch.arange(size[a], device=x.device)).reshape(shape))
    out = x.movedim(1, -1)[tuple(idx)]  # (B, N, *size, C)
    return out.movedim(-1, 2).reshape(b * n, c, *size)


_RANK_BLOCK = 1024  # voxels per counting block: 128 int64 words, so no byte lane of a word sum overflows


def _block_counts(mask: torch.Tensor) -> torch.Tensor:
    """Running count of True per block of :data:`_RANK_BLOCK` voxels: ``(B, n)`` bool -> ``(B, blocks)``.

    The bools are summed as packed int64 words (8 voxels each, one byte lane per voxel; 128 words per
    block keep every lane <= 128), then the 8 lanes are added: no widening copy of the mask.
    """
    b, n = mask.shape
    pad = -n % _RANK_BLOCK
    if pad or not mask.is_contiguous() or mask.storage_offset() % 8:
        mask = torch.cat([mask, mask.new_zeros(b, pad)], dim=1)
    words = mask.view(torch.uint8).view(torch.int64).reshape(b, -1, _RANK_BLOCK // 8).sum(-1)
    lanes = words.view(torch.uint8).reshape(b, -1, 8)
    return lanes.sum(-1, dtype=torch.int32).cumsum(-1, dtype=torch.int32)


def _nth_true(
    mask: torch.Tensor, block_cumsum: torch.Tensor, rank: torch.Tensor, invert: bool = False
) -> torch.Tensor:
    """Flat index of the ``rank``-th (1-based) True of each row of ``mask`` ``(B, n)`` (of ``~mask`` if
    ``invert``); ``rank`` ``(B, N)``, ``block_cumsum`` the running block counts of that mask.

    Two levels: the block holding it from the running block counts, then a cumsum inside that block only.
    """
    b, n = mask.shape
    blk = torch.searchsorted(block_cumsum, rank).clamp(max=block_cumsum.shape[1] - 1)  # (B, N)
    before = torch.where(blk > 0, torch.gather(block_cumsum, 1, (blk - 1).clamp(min=0)), 0)
    start = blk.long() * _RANK_BLOCK
    cols = start[..., None] + torch.arange(_RANK_BLOCK, device=mask.device)  # (B, N, block)
    rows = torch.arange(b, device=mask.device)[:, None, None]
    inner = mask[rows, cols.clamp(max=n - 1)]
    inner = (~inner if invert else inner) & (cols < n)
    inner_cumsum = inner.to(torch.int32).cumsum(-1, dtype=torch.int32)
    within = torch.searchsorted(inner_cumsum, (rank - before)[..., None])
    return start + within[..., 0]


def sample_crop_starts(
    label: torch.Tensor,
    spatial_size: Sequence[int],
    num_samples: int,
    ratios: Sequence[float] = (1.0, 1.0),
    generator: torch.Generator | None = None,
    image: torch.Tensor | None = None,
    image_threshold: float = 0.0,
) -> torch.Tensor:
    """Draw crop starts ``(B, N, d)`` centred on voxels of classes chosen with probabilities ``ratios``.

    ``label`` is ``(B, 1, *sp)``. Two ratios mean (positive, negative) like MONAI's
    ``RandCropByPosNegLabel`` (positive = ``label > 0``; negative = ``label == 0`` and, if ``image`` is given,
    ``image > image_threshold``); more ratios mean one per class value ``0..K-1`` like
    ``RandCropByLabelClasses``. Classes absent from a sample get probability 0; a sample with none of them
    draws uniformly. Centres are uniform over each class's voxels (drawn with replacement) and then
    shifted so the crop fits, as MONAI does. Everything stays on the device (no host sync).

    Example:
        >>> lab = torch.zeros(1, 1, 8, 8, dtype=torch.long)
        >>> lab[0, 0, 6, 6] = 1
        >>> sample_crop_starts(lab, (3, 3), 2, ratios=(1.0, 0.0)).tolist()
        [[[5, 5], [5, 5]]]
    """
    b, _, *sp = label.shape
    d = len(sp)
    if len(spatial_size) != d or any(s > n or s < 1 for s, n in zip(spatial_size, sp)):
        raise ValueError(f"sample_crop_starts: spatial_size {tuple(spatial_size)} must fit in {tuple(sp)}.")
    if len(ratios) < 2 or min(ratios) < 0 or sum(ratios) <= 0:
        raise ValueError(
            f"sample_crop_starts: ratios must be >= 2 non-negative numbers, not all 0, got {ratios}."
        )
    dev = label.device
    lab = label[:, 0].reshape(b, -1)
    n_vox = lab.shape[1]
    if len(ratios) == 2:
        fg = lab > 0
        fg_counts = _block_counts(fg)
        if image is None:  # background = not foreground: counted from fg's counts, no second mask
            ends = torch.arange(1, fg_counts.shape[1] + 1, device=dev, dtype=torch.int32) * _RANK_BLOCK
            masks = [(fg, False, fg_counts), (fg, True, ends.clamp(max=n_vox) - fg_counts)]
        else:
            bg = ~fg & (image.reshape(b, image.shape[1], -1) > image_threshold).any(1)
            masks = [(fg, False, fg_counts), (bg, False, _block_counts(bg))]
    else:
        masks = [(m, False, _block_counts(m)) for m in (lab == k for k in range(len(ratios)))]
    # (B, n_blocks) running counts of True voxels per block of each mask
    present = torch.stack([c[:, -1] > 0 for _, _, c in masks], dim=1).float()  # (B, M)
    w = present * torch.tensor(list(ratios), dtype=torch.float32).to(dev, non_blocking=True)
    none = (w.sum(1, keepdim=True) == 0).float()
    w = torch.cat([w, none], dim=1)
    choice = torch.multinomial(w, num_samples, replacement=True, generator=generator)  # (B, N)
    u = torch.rand(b, len(masks) + 1, num_samples, generator=generator, device=dev)
    flat = (u[:, -1] * n_vox).long().clamp(max=n_vox - 1)  # the fallback: any voxel, uniformly
    for m_i, (m, invert, counts) in enumerate(masks):
        # the r-th voxel of the class, r uniform (with replacement, as MONAI): no sort, no full cumsum
        count = counts[:, -1:].clamp(min=1)
        r = (u[:, m_i] * count).to(torch.int32).clamp(max=count - 1) + 1
        pos = _nth_true(m, counts, r, invert).clamp(max=n_vox - 1)
        flat = torch.where(choice == m_i, pos, flat)
    coords = []
    for a in range(d - 1, -1, -1):
        coords.append(flat % sp[a])
        flat = flat // sp[a]
    centre = torch.stack(coords[::-1], dim=-1)  # (B, N, d)
    size = torch.tensor(list(spatial_size)).to(dev, non_blocking=True)
    hi = torch.tensor([n - s for n, s in zip(sp, spatial_size)]).to(dev, non_blocking=True)
    return (centre - size // 2).clamp(min=torch.zeros_like(hi), max=hi)
