"""H&E tissue renderer shared by the ``he_patches`` and ``wsi`` generators (private).

Images are synthesised in optical-density (OD) space with the Beer-Lambert law::

    I_c = I0_c * 10 ** -(t * (s_H * C_H * h_c + s_E * C_E * e_c))

where ``h`` and ``e`` are unit haematoxylin and eosin OD vectors (Ruifrok & Johnston 2001 values,
perturbed per slide), ``s_H``/``s_E`` per-slide stain intensities, ``t`` a smooth section-thickness
field and ``I0`` the (slightly tinted) illumination. Stain concentrations come from a tissue map of
soft component weights (glass, adipose, stroma, lymphocytes, tumour) and from objects stamped on
top: nuclei (textured, irregular ellipses with chromatin, a darker membrane and nucleoli) and
eosin fibres. All smooth noise is a hashed lattice noise of *global* pixel coordinates, so tiles of
a whole-slide image rendered independently join without seams.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> stain = random_stain(rng)
    >>> tmap = TissueMap(np.ones((5, 10, 10), np.float32) * [[[0]], [[0]], [[1]], [[0]], [[0]]], cell=8)
    >>> bank = SpriteBank(rng, mpp=1.0)
    >>> objs = sample_objects(rng, tmap, bank, 0, 0, 64, 64, mpp=1.0)
    >>> img = render_region(tmap, objs, bank, stain, 0, 0, 64, 64, mpp=1.0, seed=1, rng=rng)
    >>> img.shape, img.dtype
    ((64, 64, 3), dtype('uint8'))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = [
    "RUIFROK_HE",
    "COMPONENTS",
    "NUCLEUS_KINDS",
    "SlideStain",
    "random_stain",
    "TissueMap",
    "SpriteBank",
    "Objects",
    "value_noise",
    "value_noise_at",
    "fbm",
    "sample_objects",
    "render_region",
    "nucleus_boxes",
]

#: Ruifrok & Johnston (2001) OD vectors of haematoxylin and eosin (rows, unit length).
RUIFROK_HE = np.array([[0.650, 0.704, 0.286], [0.072, 0.990, 0.105]])
RUIFROK_HE = RUIFROK_HE / np.linalg.norm(RUIFROK_HE, axis=1, keepdims=True)

#: Components of a :class:`TissueMap`, in channel order.
COMPONENTS = ("glass", "adipose", "stroma", "lymphocytes", "tumour")
GLASS, ADIPOSE, STROMA, LYMPH, TUMOUR = range(5)

#: Object kinds; 1-4 are nuclei (box labels), 5 is an eosin fibre (no box).
NUCLEUS_KINDS = {1: "tumour", 2: "lymphocyte", 3: "fibroblast", 4: "flat"}
FIBRE = 5

# Object density at weight 1 (per um^2) for the component that spawns it.
_DENSITY = {1: 0.0040, 2: 0.012, 3: 0.0007, 4: 0.00015, FIBRE: 0.0055}
_SPAWN = {1: TUMOUR, 2: LYMPH, 3: STROMA, 4: ADIPOSE, FIBRE: STROMA}


# ----------------------------------------------------------------------------------------- stains
@dataclass(frozen=True)
class SlideStain:
    """Per-slide staining: unit OD vectors ``vectors`` (2, 3: H, E), intensities ``scale`` (2,),
    illumination ``background`` (3,) in 0-255."""

    vectors: np.ndarray
    scale: np.ndarray
    background: np.ndarray

    def as_dict(self) -> dict:
        """JSON-friendly description (rounded)."""
        return {
            "stain_vectors": np.round(self.vectors, 4).tolist(),
            "stain_scale": np.round(self.scale, 4).tolist(),
            "background": np.round(self.background, 2).tolist(),
        }


def random_stain(rng: np.random.Generator, variation: float = 1.0) -> SlideStain:
    """Draw a slide's stain around the Ruifrok & Johnston vectors.

    ``variation`` scales the spread (0 gives the reference stain): vector directions move by about
    5-10 degrees, intensities by +-35 %, the illumination tint by a few grey levels.
    """
    vecs = []
    for v, sd in zip(RUIFROK_HE, (0.08, 0.11)):
        w = np.abs(v + rng.normal(0.0, sd * variation, 3))
        vecs.append(w / np.linalg.norm(w))
    scale = 1.0 + variation * rng.uniform(-0.35, 0.35, 2)
    base = 255.0 - variation * rng.uniform(0.0, 14.0)
    background = np.clip(base - variation * rng.uniform(0.0, 8.0, 3), 200, 255)
    return SlideStain(np.asarray(vecs), scale, background)


# ------------------------------------------------------------------------------------------ noise
_M1, _M2, _M3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9)


def _hash01(iy: np.ndarray, ix: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic uniform [0, 1) value per integer lattice point (splitmix64 finaliser)."""
    with np.errstate(over="ignore"):
        h = np.asarray(iy, np.int64).astype(np.uint64) * _M1
        h = h ^ (np.asarray(ix, np.int64).astype(np.uint64) * _M2)
        h = h ^ (np.uint64(int(seed) & 0xFFFFFFFFFFFF) * _M3)
        h = h ^ (h >> np.uint64(30))
        h = h * np.uint64(0xBF58476D1CE4E5B9)
        h = h ^ (h >> np.uint64(27))
        h = h * np.uint64(0x94D049BB133111EB)
        h = h ^ (h >> np.uint64(31))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 2.0**53)


def _interp_matrix(start: int, n: int, cell: float, smooth: bool) -> tuple[int, np.ndarray]:
    """Lattice offset and (n, m) interpolation weights for pixels ``start..start+n-1``."""
    pos = (np.arange(start, start + n) + 0.5) / cell - 0.5
    fl = np.floor(pos)
    i0 = int(fl[0])
    f = pos - fl
    if smooth:
        f = f * f * (3.0 - 2.0 * f)
    idx = (fl - i0).astype(int)
    m = np.zeros((n, int(idx[-1]) + 2))
    ar = np.arange(n)
    m[ar, idx] = 1.0 - f
    m[ar, idx + 1] = f
    return i0, m


def value_noise(y0: int, x0: int, h: int, w: int, cell: float, seed: int) -> np.ndarray:
    """Smooth lattice noise in [0, 1] on the pixel block at (y0, x0) of size (h, w), lattice ``cell`` px."""
    iy0, my = _interp_matrix(y0, h, cell, True)
    ix0, mx = _interp_matrix(x0, w, cell, True)
    lat = _hash01(iy0 + np.arange(my.shape[1])[:, None], ix0 + np.arange(mx.shape[1])[None, :], seed)
    return my @ lat @ mx.T


def value_noise_at(ys: np.ndarray, xs: np.ndarray, cell: float, seed: int) -> np.ndarray:
    """:func:`value_noise` evaluated at pixel positions ``ys``, ``xs`` (same values as the dense form)."""
    py = (np.asarray(ys, float) + 0.5) / cell - 0.5
    px = (np.asarray(xs, float) + 0.5) / cell - 0.5
    fy, fx = np.floor(py), np.floor(px)
    ty, tx = py - fy, px - fx
    ty, tx = ty * ty * (3 - 2 * ty), tx * tx * (3 - 2 * tx)
    iy, ix = fy.astype(np.int64), fx.astype(np.int64)
    v00, v01 = _hash01(iy, ix, seed), _hash01(iy, ix + 1, seed)
    v10, v11 = _hash01(iy + 1, ix, seed), _hash01(iy + 1, ix + 1, seed)
    return (1 - ty) * ((1 - tx) * v00 + tx * v01) + ty * ((1 - tx) * v10 + tx * v11)


def fbm(y0: int, x0: int, h: int, w: int, cell: float, seed: int, octaves: int = 3) -> np.ndarray:
    """Fractal sum of :func:`value_noise` octaves, roughly zero-mean in [-1, 1]."""
    out = np.zeros((h, w))
    amp, norm = 1.0, 0.0
    for k in range(octaves):
        out += amp * (value_noise(y0, x0, h, w, cell / 2**k, seed + 7919 * k) - 0.5)
        norm += amp
        amp *= 0.5
    return out * (2.0 / norm) * 1.7


# ------------------------------------------------------------------------------------ tissue map
class TissueMap:
    """Soft component weights ``weights`` (5, Hm, Wm) on a coarse grid of ``cell`` px (level 0).

    ``density`` (Hm, Wm) optionally modulates the tumour nuclei density. Pixel centre ``p + 0.5``
    maps to map coordinate ``(p + 0.5) / cell - 0.5`` (bilinear, edges clamped).
    """

    def __init__(self, weights: np.ndarray, cell: float, density: np.ndarray | None = None):
        self.weights = np.asarray(weights, np.float32)
        self.cell = float(cell)
        self.density = None if density is None else np.asarray(density, np.float32)

    def _matrix(self, start: int, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        i0, m = _interp_matrix(start, n, self.cell, False)
        idx = np.clip(i0 + np.arange(m.shape[1]), 0, size - 1)
        return idx, m

    def dense(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        """Weights (5, h, w) for the pixel block at (y0, x0)."""
        iy, my = self._matrix(y0, h, self.weights.shape[1])
        ix, mx = self._matrix(x0, w, self.weights.shape[2])
        sub = self.weights[:, iy][:, :, ix]
        return np.matmul(np.matmul(my.astype(np.float32), sub), mx.T.astype(np.float32))

    def _points(self, arr: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        py = np.clip((ys + 0.5) / self.cell - 0.5, 0, arr.shape[-2] - 1)
        px = np.clip((xs + 0.5) / self.cell - 0.5, 0, arr.shape[-1] - 1)
        fy, fx = (
            np.minimum(np.floor(py).astype(int), arr.shape[-2] - 2),
            np.minimum(np.floor(px).astype(int), arr.shape[-1] - 2),
        )
        fy, fx = np.maximum(fy, 0), np.maximum(fx, 0)
        ty, tx = np.clip(py - fy, 0, 1), np.clip(px - fx, 0, 1)
        g = lambda a, b: arr[..., np.minimum(a, arr.shape[-2] - 1), np.minimum(b, arr.shape[-1] - 1)]  # noqa: E731
        return (1 - ty) * ((1 - tx) * g(fy, fx) + tx * g(fy, fx + 1)) + ty * (
            (1 - tx) * g(fy + 1, fx) + tx * g(fy + 1, fx + 1)
        )

    def at(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Weights (5, n) at pixel positions."""
        return self._points(self.weights, np.asarray(ys, float), np.asarray(xs, float))

    def density_at(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Tumour density factor at pixel positions (1 where no density field is set)."""
        if self.density is None:
            return np.ones(len(ys))
        return self._points(self.density, np.asarray(ys, float), np.asarray(xs, float))


# ---------------------------------------------------------------------------------------- sprites
def _nucleus_sprite(
    rng: np.random.Generator, kind: int, mpp: float, angle: float
) -> tuple[np.ndarray, np.ndarray]:
    """One nucleus: haematoxylin concentration and coverage (both (s, s) float32)."""
    if kind == 1:  # tumour: large, pleomorphic, vesicular chromatin, nucleoli
        a = rng.uniform(4.5, 8.5)
        b, irr, hval, tex, rim = (
            a * rng.uniform(0.6, 0.95),
            rng.uniform(0.06, 0.2),
            rng.uniform(0.55, 1.05),
            0.45,
            0.5,
        )
    elif kind == 2:  # lymphocyte: small, round, dense
        a = rng.uniform(2.8, 3.8)
        b, irr, hval, tex, rim = a * rng.uniform(0.85, 1.0), 0.03, rng.uniform(0.85, 1.25), 0.15, 0.1
    elif kind == 3:  # fibroblast: spindle
        a = rng.uniform(5.0, 9.0)
        b, irr, hval, tex, rim = rng.uniform(1.1, 1.9), 0.04, rng.uniform(0.7, 1.0), 0.2, 0.1
    else:  # flattened (adipocyte / endothelial)
        a = rng.uniform(4.0, 6.0)
        b, irr, hval, tex, rim = rng.uniform(0.9, 1.4), 0.04, rng.uniform(0.6, 0.85), 0.15, 0.1
    ap, bp = a / mpp, max(b / mpp, 0.8)
    half = int(np.ceil(ap * (1 + irr))) + 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(float)
    ca, sa = np.cos(angle), np.sin(angle)
    u, v = (xx * ca + yy * sa) / ap, (-xx * sa + yy * ca) / bp
    d = np.hypot(u, v)
    phi = np.arctan2(v, u)
    r = np.ones_like(d)
    for k in (2, 3, 4):
        r += irr / (k - 1) * rng.normal() * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    cover = np.clip((r - d) * bp + 0.5, 0.0, 1.0)
    chrom = ndimage.gaussian_filter(rng.normal(size=d.shape), max(0.6, 0.5 / mpp))
    chrom /= chrom.std() + 1e-8
    conc = hval * (1.0 + tex * chrom) + hval * rim * np.exp(-(((r - d) * bp - 1.0) ** 2))
    if kind == 1:
        for _ in range(rng.integers(1, 3)):
            t, rr = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.5)
            cy, cx = rr * bp * np.sin(t), rr * ap * np.cos(t)
            cy, cx = cx * sa + cy * ca, cx * ca - cy * sa
            conc += 0.6 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (0.6 / mpp) ** 2))
    return (np.clip(conc, 0.05, None) * cover).astype(np.float32), cover.astype(np.float32)


def _fibre_sprite(rng: np.random.Generator, mpp: float, angle: float) -> np.ndarray:
    """One wavy collagen fibre: eosin concentration (s, s) float32."""
    a, b = rng.uniform(10.0, 24.0) / mpp, max(rng.uniform(0.6, 1.4) / mpp, 0.7)
    half = int(np.ceil(a)) + 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(float)
    ca, sa = np.cos(angle), np.sin(angle)
    u, v = xx * ca + yy * sa, -xx * sa + yy * ca
    v = v - rng.uniform(-0.6, 0.6) * (u / a) ** 2 * a * 0.15 - b * np.sin(u / a * rng.uniform(2, 5))
    prof = np.exp(-((v / b) ** 2)) * np.clip(1.0 - (u / a) ** 2, 0.0, 1.0)
    return (rng.uniform(0.18, 0.4) * prof).astype(np.float32)


class SpriteBank:
    """Per-slide banks of pre-rendered nuclei and fibres at ``mpp`` um/px.

    Oriented kinds (fibroblasts, flat nuclei, fibres) are sorted by angle in [0, pi), so an object
    can pick the sprite matching the local fibre orientation; round kinds are drawn at random.
    """

    def __init__(self, rng: np.random.Generator, mpp: float, per_kind: int = 48):
        self.mpp = float(mpp)
        self.n = per_kind
        self.conc: dict[int, list[np.ndarray]] = {}
        self.cover: dict[int, list[np.ndarray]] = {}
        self.box: dict[int, np.ndarray] = {}
        for kind in (1, 2, 3, 4):
            angles = (
                np.sort(rng.uniform(0, np.pi, per_kind))
                if kind in (3, 4)
                else rng.uniform(0, np.pi, per_kind)
            )
            pairs = [_nucleus_sprite(rng, kind, mpp, t) for t in angles]
            self.conc[kind] = [p[0] for p in pairs]
            self.cover[kind] = [p[1] for p in pairs]
            boxes = []
            for c in self.cover[kind]:
                rows, cols = np.nonzero(c >= 0.5)
                half = c.shape[0] // 2
                boxes.append(
                    [rows.min() - half, cols.min() - half, rows.max() + 1 - half, cols.max() + 1 - half]
                )
            self.box[kind] = np.asarray(boxes, np.int64)
        angles = np.sort(rng.uniform(0, np.pi, per_kind * 2))
        self.conc[FIBRE] = [_fibre_sprite(rng, mpp, t) for t in angles]
        self.max_half = max(s.shape[0] // 2 for v in self.conc.values() for s in v)


@dataclass
class Objects:
    """Objects to stamp: ``kind``, centre ``cy``/``cx`` (level-0 px), ``sprite`` index (all (n,) int64)."""

    kind: np.ndarray
    cy: np.ndarray
    cx: np.ndarray
    sprite: np.ndarray

    @staticmethod
    def concat(parts: list[Objects]) -> Objects:
        """Concatenate object lists."""
        if not parts:
            e = np.zeros(0, np.int64)
            return Objects(e, e, e, e)
        return Objects(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in ("kind", "cy", "cx", "sprite"))
        )


def sample_objects(
    rng: np.random.Generator,
    tmap: TissueMap,
    bank: SpriteBank,
    y0: int,
    x0: int,
    h: int,
    w: int,
    mpp: float,
    orient_seed: int = 0,
    density: dict[int, float] | None = None,
) -> Objects:
    """Draw objects with centres in the block (y0, x0, h, w) from the map's weights (thinned Poisson).

    ``density`` multiplies the default density per kind (e.g. ``{3: 2.0}`` for cellular stroma).
    Stromal nuclei and fibres follow a smooth orientation field seeded by ``orient_seed``.
    """
    area = h * w * mpp * mpp
    parts = []
    for kind, dens in _DENSITY.items():
        lam = dens * area * (density or {}).get(kind, 1.0) * (1.6 if kind == 1 else 1.0)
        m = rng.poisson(lam)
        cy = rng.uniform(y0, y0 + h, m)
        cx = rng.uniform(x0, x0 + w, m)
        wgt = tmap.at(cy, cx)[_SPAWN[kind]]
        if kind == 1:
            wgt = wgt * tmap.density_at(cy, cx) / 1.6
        keep = rng.uniform(size=m) < wgt
        cy, cx = cy[keep], cx[keep]
        nb = len(bank.conc[kind])
        if kind in (3, 4, FIBRE):
            theta = (value_noise_at(cy, cx, 60.0 / mpp, orient_seed) * 2.0) % 1.0
            spr = (np.round(theta * nb + rng.normal(0, nb / 24, len(cy))).astype(np.int64)) % nb
        else:
            spr = rng.integers(0, nb, len(cy))
        parts.append(
            Objects(
                np.full(len(cy), kind, np.int64),
                np.floor(cy).astype(np.int64),
                np.floor(cx).astype(np.int64),
                spr,
            )
        )
    return Objects.concat(parts)


def _stamp(canvas: np.ndarray, sprite: np.ndarray, cy: int, cx: int, op: str) -> None:
    """Place ``sprite`` centred at (cy, cx) of ``canvas`` (canvas coordinates), clipped."""
    half = sprite.shape[0] // 2
    ya, xa = cy - half, cx - half
    yb, xb = ya + sprite.shape[0], xa + sprite.shape[1]
    sy, sx = max(0, -ya), max(0, -xa)
    ya, xa = max(ya, 0), max(xa, 0)
    yb, xb = min(yb, canvas.shape[0]), min(xb, canvas.shape[1])
    if yb <= ya or xb <= xa:
        return
    src = sprite[sy : sy + yb - ya, sx : sx + xb - xa]
    dst = canvas[ya:yb, xa:xb]
    if op == "max":
        np.maximum(dst, src, out=dst)
    else:
        dst += src


def _membranes(y0: int, x0: int, h: int, w: int, cell: float, width: float, seed: int) -> np.ndarray:
    """Adipocyte membranes: Worley F2 - F1 edges of jittered lattice points (global coordinates)."""
    yy = (np.arange(y0, y0 + h) + 0.5)[:, None] / cell
    xx = (np.arange(x0, x0 + w) + 0.5)[None, :] / cell
    iy0, ix0 = int(np.floor(yy[0, 0])) - 1, int(np.floor(xx[0, 0])) - 1
    iy1, ix1 = int(np.floor(yy[-1, 0])) + 1, int(np.floor(xx[0, -1])) + 1
    ly, lx = np.mgrid[iy0 : iy1 + 1, ix0 : ix1 + 1]
    py = ly + 0.1 + 0.8 * _hash01(ly, lx, seed)
    px = lx + 0.1 + 0.8 * _hash01(ly, lx, seed + 1)
    f1 = np.full((h, w), np.inf)
    f2 = np.full((h, w), np.inf)
    by = np.clip(np.floor(yy).astype(int) - iy0, 1, ly.shape[0] - 2)
    bx = np.clip(np.floor(xx).astype(int) - ix0, 1, ly.shape[1] - 2)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            d = np.hypot(py[by + dy, bx + dx] - yy, px[by + dy, bx + dx] - xx)
            f2 = np.minimum(f2, np.maximum(f1, d))
            f1 = np.minimum(f1, d)
    return np.exp(-((((f2 - f1) * cell) / width) ** 2))


def render_region(
    tmap: TissueMap,
    objects: Objects,
    bank: SpriteBank,
    stain: SlideStain,
    y0: int,
    x0: int,
    h: int,
    w: int,
    mpp: float,
    seed: int,
    rng: np.random.Generator,
    noise_sd: float = 2.0,
    fibre_gain: float = 1.0,
    od_gain: float = 1.0,
) -> np.ndarray:
    """Render the block (y0, x0, h, w) as RGB uint8 (h, w, 3).

    Smooth textures depend only on global coordinates and ``seed`` (seamless tiles); ``rng`` only
    draws the white acquisition noise (sd ``noise_sd`` grey levels).
    """
    wts = tmap.dense(y0, x0, h, w)
    tex = fbm(y0, x0, h, w, 5.0 / mpp, seed + 11, octaves=2).astype(np.float32)
    e_conc = (
        wts[STROMA] * (0.16 + 0.05 * tex)
        + wts[LYMPH] * (0.08 + 0.02 * tex)
        + wts[TUMOUR] * (0.22 + 0.07 * tex)
    )
    e_conc += wts[ADIPOSE] * 0.015 + wts[GLASS] * 0.004
    h_conc = wts[TUMOUR] * (0.06 + 0.025 * tex) + wts[LYMPH] * 0.04 + wts[STROMA] * 0.015
    if wts[ADIPOSE].max() > 0.02:
        memb = _membranes(y0, x0, h, w, 70.0 / mpp, max(0.6 / mpp, 0.7), seed + 23).astype(np.float32)
        e_conc += wts[ADIPOSE] * 0.3 * memb
    fib = np.zeros((h, w), np.float32)
    nuc_h = np.zeros((h, w), np.float32)
    nuc_c = np.zeros((h, w), np.float32)
    for k, cy, cx, s in zip(
        objects.kind.tolist(), objects.cy.tolist(), objects.cx.tolist(), objects.sprite.tolist()
    ):
        if k == FIBRE:
            _stamp(fib, bank.conc[k][s], cy - y0, cx - x0, "add")
        else:
            _stamp(nuc_h, bank.conc[k][s], cy - y0, cx - x0, "max")
            _stamp(nuc_c, bank.cover[k][s], cy - y0, cx - x0, "max")
    e_conc = (e_conc + np.float32(fibre_gain) * np.minimum(fib, 0.6) * (1.0 - wts[GLASS])) * (
        1.0 - 0.8 * nuc_c
    )
    h_conc = h_conc * (1.0 - nuc_c) + nuc_h
    thick = (od_gain + 0.12 * fbm(y0, x0, h, w, 150.0 / mpp, seed + 31, octaves=2)).astype(
        np.float32
    ) * np.float32(-np.log(10.0))
    h_conc *= thick * np.float32(stain.scale[0])
    e_conc *= thick * np.float32(stain.scale[1])
    img = np.empty((h, w, 3), np.float32)
    for c in range(3):
        ch = np.exp(h_conc * np.float32(stain.vectors[0, c]) + e_conc * np.float32(stain.vectors[1, c]))
        img[..., c] = ch * np.float32(stain.background[c])
    if noise_sd > 0:
        img += rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(noise_sd)
    np.rint(img, out=img)
    return np.clip(img, 0, 255).astype(np.uint8)


def nucleus_boxes(
    objects: Objects, bank: SpriteBank, y0: int, x0: int, h: int, w: int, min_visible: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``[r0, c0, r1, c1]`` (exclusive max, block coordinates, clipped) and kinds of the nuclei
    whose box is at least ``min_visible`` inside the block."""
    boxes, labels = [], []
    for k, cy, cx, s in zip(
        objects.kind.tolist(), objects.cy.tolist(), objects.cx.tolist(), objects.sprite.tolist()
    ):
        if k == FIBRE:
            continue
        r0, c0, r1, c1 = (bank.box[k][s] + [cy - y0, cx - x0, cy - y0, cx - x0]).tolist()
        full = (r1 - r0) * (c1 - c0)
        cr0, cc0, cr1, cc1 = max(r0, 0), max(c0, 0), min(r1, h), min(c1, w)
        if cr1 <= cr0 or cc1 <= cc0 or (cr1 - cr0) * (cc1 - cc0) < min_visible * full:
            continue
        boxes.append([cr0, cc0, cr1, cc1])
        labels.append(k)
    return np.asarray(boxes, np.int64).reshape(-1, 4), np.asarray(labels, np.int64)
