"""Chest CT phantom internals shared by the ``ct_lung_nodules`` and ``outcome`` generators.

All geometry is in millimetres in the array frame (``index * spacing``); arrays are ``(x, y, z)`` for a
diagonal RAS affine (axis 0 towards the patient's right, 1 anterior, 2 superior); intensities are HU.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> chest = render_chest(rng, (64, 64, 24), (5.0, 5.0, 6.0))
    >>> chest.hu.shape, bool(chest.lung.any())
    ((64, 64, 24), True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "ChestPhantom",
    "render_chest",
    "render_segments",
    "smooth_field",
    "nodule_fraction",
    "blend_max",
    "finish_scan",
    "lps_center_to_voxel",
]


@dataclass
class ChestPhantom:
    """A rendered chest: ``hu`` (float32 HU), ``lung`` mask, vessel segments, lung distance map (mm)."""

    hu: np.ndarray
    lung: np.ndarray  # lung_edt: lower bound of the distance (mm) from a lung voxel to the lung border
    spacing: tuple[float, float, float]
    vessels: list[tuple[np.ndarray, np.ndarray, float, float]] = field(default_factory=list)
    lung_edt: np.ndarray | None = None


def smooth_field(
    rng: np.random.Generator, shape: Sequence[int], spacing: Sequence[float], scale_mm: float
) -> np.ndarray:
    """Zero-mean, unit-variance smooth random field with correlation length ~``scale_mm``.

    Cheap: white noise on a grid coarser by ``scale_mm / spacing``, nearest upsampling, Gaussian blur.
    """
    shape = tuple(int(n) for n in shape)
    step = [max(1, int(round(scale_mm / (2.0 * s)))) for s in spacing]
    low = [int(np.ceil(n / st)) + 1 for n, st in zip(shape, step)]
    g = rng.standard_normal(low, dtype=np.float32)
    for axis, st in enumerate(step):
        if st > 1:
            g = g.repeat(st, axis=axis)
    off = [int(rng.integers(st)) for st in step]
    g = g[tuple(slice(o, o + n) for o, n in zip(off, shape))]
    out = ndi.gaussian_filter(g, [max(0.6, 0.35 * scale_mm / s) for s in spacing], mode="nearest")
    out -= out.mean()
    return out / (out.std() + 1e-6)


def render_segments(
    shape: Sequence[int],
    spacing: Sequence[float],
    segments: Sequence[tuple[np.ndarray, np.ndarray, float, float]],
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Partial-volume occupancy (0..1, max-composited) of tapered tubes ``(p0_mm, p1_mm, r0_mm, r1_mm)``."""
    sp = np.asarray(spacing, dtype=np.float32)
    h = float(np.mean(sp))
    frac = np.zeros(shape, np.float32) if out is None else out
    for p0, p1, r0, r1 in segments:
        p0 = np.asarray(p0, np.float32)
        p1 = np.asarray(p1, np.float32)
        rmax = max(r0, r1) + h
        lo = np.maximum(np.floor((np.minimum(p0, p1) - rmax) / sp).astype(int), 0)
        hi = np.minimum(np.ceil((np.maximum(p0, p1) + rmax) / sp).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        gx, gy, gz = (np.arange(lo[a], hi[a], dtype=np.float32) * sp[a] for a in range(3))
        d = p1 - p0
        dd = float(d @ d) + 1e-6
        rx, ry, rz = gx[:, None, None] - p0[0], gy[None, :, None] - p0[1], gz[None, None, :] - p0[2]
        t = np.clip((rx * d[0] + ry * d[1] + rz * d[2]) / dd, 0.0, 1.0)
        dist = np.sqrt((rx - t * d[0]) ** 2 + (ry - t * d[1]) ** 2 + (rz - t * d[2]) ** 2)
        r = r0 + (r1 - r0) * t
        f = np.clip((r - dist) / h + 0.5, 0.0, 1.0) * np.minimum(1.0, 2.0 * r / h)
        view = frac[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        np.maximum(view, f, out=view)
    return frac


def blend_max(
    hu: np.ndarray, frac: np.ndarray, value: np.ndarray | float, where: np.ndarray | None = None
) -> None:
    """In place: ``hu = max(hu, hu + frac * (value - hu))`` (denser structures show through)."""
    new = hu + frac * (value - hu)
    if where is not None:
        new = np.where(where, new, hu)
    np.maximum(hu, new, out=hu)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _vessel_tree(
    rng: np.random.Generator, lung: np.ndarray, spacing: np.ndarray, root: np.ndarray, direction: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray, float, float]]:
    segs: list[tuple[np.ndarray, np.ndarray, float, float]] = []
    stack = [(root, direction / np.linalg.norm(direction), float(rng.uniform(4.0, 5.5)), 0)]
    shape = np.array(lung.shape)

    sx, sy, sz = (float(v) for v in spacing)
    nx, ny, nz = (int(v) for v in shape)

    def inside(q: np.ndarray) -> bool:
        i, j, k = round(float(q[0]) / sx), round(float(q[1]) / sy), round(float(q[2]) / sz)
        return 0 <= i < nx and 0 <= j < ny and 0 <= k < nz and bool(lung[i, j, k])

    while stack:
        p, d, r, gen = stack.pop()
        length = float(rng.uniform(10.0, 22.0)) * (r / 4.0) ** 0.35 * 1.4
        d = d + rng.normal(0, 0.25, 3)
        d /= math.sqrt(float(d @ d))
        q = p + d * length
        if not inside(q):
            # try a few other directions (the tree bends away from the pleura), then a short stub, else stop
            for _ in range(4):
                d2 = d + rng.normal(0, 0.7, 3)
                d2 /= math.sqrt(float(d2 @ d2))
                if inside(p + d2 * length):
                    d, q = d2, p + d2 * length
                    break
            else:
                q = p + d * length * 0.4
                if inside(q):
                    segs.append((p, q, r, r * 0.7))
                continue
        r_end = r * float(rng.uniform(0.82, 0.95))
        segs.append((p, q, r, r_end))
        if r_end < 0.7 or gen > 9:
            continue
        nchild = 2 if rng.random() < 0.85 else 1
        for _ in range(nchild):
            perp = _cross(d, rng.normal(size=3))
            perp /= math.sqrt(float(perp @ perp)) + 1e-9
            ang = float(rng.uniform(0.3, 0.75))
            nd = np.cos(ang) * d + np.sin(ang) * perp
            stack.append((q, nd, r_end * float(rng.uniform(0.68, 0.85)) if nchild == 2 else r_end, gen + 1))
    return segs


def render_chest(
    rng: np.random.Generator, shape: Sequence[int], spacing: Sequence[float], vessels: bool = True
) -> ChestPhantom:
    """Render a non-contrast chest CT (HU, before noise/PSF) with lungs, vessels, mediastinum, ribs and spine.

    Array axes follow a diagonal RAS affine: axis 0 towards the patient's right (heart at lower ``x``,
    liver at higher ``x``), axis 1 posterior to anterior, axis 2 inferior to superior.
    """
    shape = tuple(int(s) for s in shape)
    sp = np.asarray(spacing, dtype=np.float32)
    ext = np.asarray(shape) * sp
    cx, cy = ext[0] / 2, ext[1] / 2
    zlen = ext[2]
    fov = float(min(ext[0], ext[1]))
    k = fov / 320.0  # geometry scales with the field of view (defaults assume ~320 mm)
    x = (np.arange(shape[0], dtype=np.float32) * sp[0] - cx)[:, None, None]
    y = (np.arange(shape[1], dtype=np.float32) * sp[1] - cy)[None, :, None]
    z = (np.arange(shape[2], dtype=np.float32) * sp[2])[None, None, :]
    zr = z / zlen  # 0 inferior .. 1 superior

    ax = float(rng.uniform(128, 148)) * k
    ay = float(rng.uniform(88, 108)) * k
    y0 = float(rng.uniform(-6, 6)) * k
    tf = float(rng.uniform(6, 22)) * k
    tm = float(rng.uniform(7, 13)) * k
    trib = 9.0 * k
    grow = 1.0 - 0.05 * (zr - 0.5)  # the chest is slightly wider inferiorly
    tex = smooth_field(rng, shape, sp, 6.0)
    tex_fine = smooth_field(rng, shape, sp, 2.5)

    def ell(a: float, b: float, yc: float = y0) -> np.ndarray:
        return (x / (a * grow)) ** 2 + ((y - yc) / (b * grow)) ** 2 <= 1.0

    hu = np.full(shape, -1000.0, np.float32)
    body = np.broadcast_to(ell(ax, ay), shape)
    hu[body] = -100.0
    muscle = np.broadcast_to(ell(ax - tf, ay - tf), shape)
    hu[muscle] = 45.0
    cav_ax, cav_ay = ax - tf - tm - trib, ay - tf - tm - trib
    apex = 1.0 - 0.35 * np.clip((zr - 0.7) / 0.3, 0, 1) ** 2
    cavity_rib = (x / (cav_ax + trib)) ** 2 + ((y - y0) / (cav_ay + trib)) ** 2 <= 1.0
    cavity = (x / (cav_ax * apex)) ** 2 + ((y - y0) / (cav_ay * apex)) ** 2 <= 1.0
    cavity = np.broadcast_to(cavity, shape)
    # ribs: oblique bands in the ring around the cavity, sparing the anterior midline (costal cartilage)
    rib_period = float(rng.uniform(22, 28)) * k
    phase = (z + 0.45 * np.abs(y - y0) + float(rng.uniform(0, rib_period))) / rib_period
    angle = np.arctan2(y - y0, x)
    ribs = cavity_rib & ~cavity & (np.mod(phase, 1.0) < 0.38) & ~(np.abs(angle - np.pi / 2) < 0.35)
    hu = np.where(ribs, 450.0 + 120.0 * tex_fine, hu)
    # spine: vertebral body at the posterior cavity border, canal behind; discs every ~28 mm
    vy = y0 - cav_ay + 4.0 * k
    vb = (x**2 + (y - vy) ** 2) <= (17.0 * k) ** 2
    disc = np.mod((z + float(rng.uniform(0, 28))) / 28.0, 1.0) < 0.18
    spine = np.broadcast_to(vb, shape)
    hu = np.where(spine, np.where(disc, 80.0, 300.0 + 60.0 * tex_fine), hu)
    cortex = spine & ~np.broadcast_to((x**2 + (y - vy) ** 2) <= (14.5 * k) ** 2, shape) & ~disc
    hu[cortex] = 700.0
    canal = np.broadcast_to((x**2 + (y - vy + 25 * k) ** 2) <= (7.0 * k) ** 2, shape)
    hu[canal] = 20.0
    # mediastinum (fat/soft-tissue mix), heart, descending aorta, trachea
    mu = float(rng.uniform(-12, 4)) * k
    yrel = (y - y0) / cav_ay
    med_w = (12.0 + 20.0 * np.exp(-(((yrel + 0.15) / 0.45) ** 2))) * k
    med = cavity & (np.abs(x - mu) < med_w) | (cavity & spine)
    heart_c = np.array([mu - 22 * k, y0 + 0.18 * cav_ay, float(rng.uniform(0.05, 0.2)) * zlen])
    hr = np.array([60, 48, 55]) * k * float(rng.uniform(0.9, 1.1))
    heart = ((x - heart_c[0]) / hr[0]) ** 2 + ((y - heart_c[1]) / hr[1]) ** 2 + (
        (z - heart_c[2]) / hr[2]
    ) ** 2 <= 1
    aorta = np.broadcast_to((x - (mu - 25 * k)) ** 2 + (y - (vy + 26 * k)) ** 2 <= (12.0 * k) ** 2, shape)
    trachea = ((x - mu) ** 2 + (y - (y0 - 0.1 * cav_ay)) ** 2 <= (9.0 * k) ** 2) & (zr > 0.55)
    # diaphragm domes (right dome higher), liver right, stomach/spleen left
    zd = float(rng.uniform(0.0, 0.12)) * zlen
    side = np.where(x > mu, 1.0, -1.0)
    latc = mu + side * 0.5 * cav_ax
    dome = (32.0 + 6.0 * side) * k * np.clip(1 - ((x - latc) / (0.6 * cav_ax)) ** 2 - (yrel * 0.9) ** 2, 0, 1)
    below = z < (zd + dome)
    soft = cavity & (med | heart | aorta | below)
    hu = np.where(cavity & med & ~spine, -40.0 + 60.0 * tex, hu)
    hu = np.where(heart | aorta, 40.0 + 6.0 * tex_fine, hu)
    hu = np.where(cavity & below & ~spine, np.where(x > mu, 58.0, 35.0) + 8.0 * tex, hu)
    lung = cavity & ~soft & ~spine
    lung_hu = -860.0 - 25.0 * np.clip(yrel, -1, 1) + 22.0 * tex + 12.0 * tex_fine
    hu = np.where(lung, lung_hu, hu)
    hu[np.broadcast_to(trachea, shape) & cavity] = -1000.0
    lung = np.ascontiguousarray(lung)
    # texture in fat/muscle
    hu += np.where(body & ~lung, 8.0 * tex_fine, 0.0).astype(np.float32)
    chest = ChestPhantom(hu=hu.astype(np.float32), lung=lung, spacing=tuple(float(s) for s in sp))
    if vessels and lung.any():
        segs: list[tuple[np.ndarray, np.ndarray, float, float]] = []
        for s in (-1.0, 1.0):
            for _ in range(4):
                hil = np.array(
                    [
                        cx + mu + s * float(rng.uniform(35, 50)) * k,
                        cy + y0 + float(rng.uniform(-25, 15)) * k,
                        0.0,
                    ]
                )
                hil[2] = float(rng.uniform(0.35, 0.7)) * zlen
                d = np.array([s * 1.0, rng.uniform(-0.8, 0.8), rng.uniform(-0.9, 0.9)])
                segs += _vessel_tree(rng, lung, sp, hil, d)
        frac = render_segments(shape, sp, segs)
        blend_max(chest.hu, frac, (30.0 + 8.0 * tex_fine), where=lung | np.broadcast_to(med, shape))
        chest.vessels = segs
    # distance to the lung border (mm): a fast lower bound of the Euclidean distance (chamfer transforms);
    # the volume's faces count as border, so a nodule placed by it lies wholly inside the scan
    padded = np.pad(lung, 1)
    inner = (slice(1, -1),) * padded.ndim
    cheb = ndi.distance_transform_cdt(padded, metric="chessboard")[inner].astype(np.float32)
    taxi = ndi.distance_transform_cdt(padded, metric="taxicab")[inner].astype(np.float32) / np.sqrt(3.0)
    chest.lung_edt = np.maximum(cheb, taxi) * float(sp.min())
    return chest


def nodule_fraction(
    rng: np.random.Generator,
    spacing: Sequence[float],
    center_mm: np.ndarray,
    radius: float,
    lobulation: float,
    spiculation: float,
    shape: Sequence[int],
    core_fraction: float = 1.0,
) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray]:
    """Occupancy of a (lobulated, spiculated) nodule in a local box: ``(slices, total_frac, core_frac)``.

    The body is a union of a sphere and ``2 + 4*lobulation`` lobes; spicules (count ~ ``16*spiculation``)
    are thin tapered tubes radiating from the surface. ``core_frac`` is the solid part (radius
    ``core_fraction * radius``) used for part-solid nodules. Occupancy is supersampled 2x per axis.
    """
    sp = np.asarray(spacing, np.float32)
    c = np.asarray(center_mm, np.float32)
    n_sp = int(rng.poisson(16.0 * spiculation)) if spiculation > 0.02 else 0
    sp_len = [float(radius * rng.uniform(0.5, 1.3) + rng.uniform(2.0, 5.0)) for _ in range(n_sp)]
    reach = radius * (1.0 + 0.5 * lobulation) + (max(sp_len) if sp_len else 0.0) + 2 * float(sp.max())
    lo = np.maximum(np.floor((c - reach) / sp).astype(int), 0)
    hi = np.minimum(np.ceil((c + reach) / sp).astype(int) + 1, shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    ss = 2
    axes = [
        (np.arange(lo[a] * ss, hi[a] * ss, dtype=np.float32) + 0.5) / ss * sp[a] - 0.5 * sp[a]
        for a in range(3)
    ]
    gx, gy, gz = axes[0][:, None, None] - c[0], axes[1][None, :, None] - c[1], axes[2][None, None, :] - c[2]
    r2 = gx**2 + gy**2 + gz**2
    main_r = radius * (1.0 - 0.12 * lobulation)
    body = r2 <= main_r**2
    n_lobes = int(round(2 + 4 * lobulation))
    for _ in range(n_lobes):
        u = rng.normal(size=3)
        u /= np.linalg.norm(u)
        off = u * radius * 0.6 * lobulation
        lr = radius * (1.0 - 0.4 * lobulation) * float(rng.uniform(0.85, 1.1))
        body |= (gx - off[0]) ** 2 + (gy - off[1]) ** 2 + (gz - off[2]) ** 2 <= lr**2
    core = body & (r2 <= (core_fraction * radius) ** 2) if core_fraction < 1.0 else body

    def down(m: np.ndarray) -> np.ndarray:
        m = m.astype(np.float32)
        s = m.shape
        return m.reshape(s[0] // ss, ss, s[1] // ss, ss, s[2] // ss, ss).mean(axis=(1, 3, 5))

    total = down(body)
    core_f = down(core) if core_fraction < 1.0 else total.copy()
    if n_sp:
        segs = []
        for length in sp_len:
            u = rng.normal(size=3)
            u /= np.linalg.norm(u)
            p0 = c - lo * sp + u * radius * 0.7
            p1 = p0 + u * length
            segs.append((p0, p1, float(rng.uniform(1.2, 1.8)), 0.5))
        spic = render_segments(total.shape, sp, segs)
        np.maximum(total, spic, out=total)
        np.maximum(core_f, spic * (1.0 if core_fraction >= 1.0 else 0.6), out=core_f)
    return sl, total, core_f


def finish_scan(
    rng: np.random.Generator, hu: np.ndarray, spacing: Sequence[float], noise_sd: float
) -> np.ndarray:
    """Scanner PSF blur plus spatially correlated quantum noise; returns int16 HU clipped to [-1024, 3071]."""
    out = ndi.gaussian_filter(hu, 0.45)
    noise = ndi.gaussian_filter(rng.standard_normal(hu.shape, dtype=np.float32), 0.6)
    noise *= noise_sd / (noise.std() + 1e-6)
    out += noise
    return np.clip(np.rint(out), -1024, 3071).astype(np.int16)


def lps_center_to_voxel(center_lps: Sequence[float], affine: np.ndarray) -> np.ndarray:
    """World LPS point (mm) -> continuous voxel index of a NIfTI with RAS ``affine``."""
    ras = np.array([-center_lps[0], -center_lps[1], center_lps[2], 1.0])
    return (np.linalg.inv(affine) @ ras)[:3]
