"""Synthetic H&E whole-slide images: pyramidal tiled TIFF, tumour and tissue masks, GeoJSON.

Each slide is a tissue section (one or two irregular pieces on white glass) of stroma with
lymphoid aggregates and a little fat, holding tumour regions made of nests of crowded pleomorphic
nuclei separated by (inflamed) tumour stroma. A deterministic low-resolution map of component
weights (one cell = 16 level-0 pixels) fixes the layout; level-0 tiles are rendered from it with
:mod:`monai_ext.data.synthetic._he` (Beer-Lambert H&E synthesis, per-slide stain matrix, nuclei and
fibres stamped from a per-slide sprite bank, seamless global-coordinate textures), one tile at a
time, so a 16k x 16k slide is written with bounded memory (the only large buffer is level 1, a
1/16 of level 0).

Files per slide ``k``:

- ``slides/slide_{k:03d}.tif``: generic tiled pyramidal TIFF (OpenSlide ``generic-tiff``), tiles
  256 x 256, JPEG (option ``compression``), levels downsampled by 4, microns per pixel in the
  resolution tags (``RESOLUTIONUNIT`` centimetre) and in the description (``mpp=...``);
- ``masks/slide_{k:03d}_tumour.png`` and ``..._tissue.png``: uint8 0/1 masks at downsample
  ``mask_downsample`` (16, i.e. the size of pyramid level 2);
- ``annotations/slide_{k:03d}.geojson``: tumour regions as QuPath-style polygon annotations in
  level-0 pixel coordinates (x = column, y = row).

``datalist.json`` lists them (``image``, ``label`` = tumour mask, ``tissue_mask``, ``annotations``,
``mask_downsample``, ``mpp``) in ``training``/``validation``/``test``.

What makes it hard: tumour regions are annotated as regions (nests *and* the stroma between them),
lymphoid aggregates and inflamed stroma are as dark as tumour nests, tumour density varies, and
each slide has its own stain matrix and intensities. A per-pixel colour baseline (logistic
regression on low-resolution RGB, trained on another slide) reaches a Dice of about 0.5-0.65; a
segmentation CNN with context (nuclear morphology, nest architecture) should reach >= 0.85.

Example:
    >>> from monai_ext.data.synthetic import generate
    >>> # out = generate("wsi", "/tmp/wsi", n=1, seed=0, size=4096)
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from monai_ext.data.synthetic._common import rng_for, write_json
from monai_ext.data.synthetic._he import (
    ADIPOSE,
    GLASS,
    LYMPH,
    STROMA,
    TUMOUR,
    Objects,
    SlideStain,
    SpriteBank,
    TissueMap,
    fbm,
    random_stain,
    render_region,
    sample_objects,
    value_noise,
)

__all__ = ["generate_wsi", "MASK_DOWNSAMPLE"]

#: Level-0 pixels per cell of the layout map and per pixel of the written masks.
MASK_DOWNSAMPLE = 16
_TILE = 256
_COMPRESSIONS = {"jpeg": "jpeg", "deflate": "zlib", "zlib": "zlib", "none": None}


def _sig(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


def _slide_map(
    rng: np.random.Generator, hm: int, wm: int, mpp: float
) -> tuple[TissueMap, np.ndarray, np.ndarray]:
    """Layout of one slide on the map grid: (weights map, tumour mask, tissue mask)."""
    um = MASK_DOWNSAMPLE * mpp  # microns per map cell
    seeds = [int(s) for s in rng.integers(0, 2**31, 6)]
    yy, xx = np.mgrid[0:hm, 0:wm]
    yy, xx = (yy + 0.5) / hm, (xx + 0.5) / wm
    pieces = 1 if rng.uniform() < 0.6 else 2
    dist = np.full((hm, wm), np.inf)
    for p in range(pieces):
        if pieces == 1:
            cy, cx, ry, rx = (
                rng.uniform(0.42, 0.58),
                rng.uniform(0.42, 0.58),
                rng.uniform(0.3, 0.4),
                rng.uniform(0.3, 0.4),
            )
        else:
            cy, cx = rng.uniform(0.3, 0.7), (0.3 if p == 0 else 0.7) + rng.uniform(-0.04, 0.04)
            ry, rx = rng.uniform(0.25, 0.36), rng.uniform(0.16, 0.2)
        t = rng.uniform(0, np.pi)
        u = ((yy - cy) * np.cos(t) + (xx - cx) * np.sin(t)) / ry
        v = (-(yy - cy) * np.sin(t) + (xx - cx) * np.cos(t)) / rx
        dist = np.minimum(dist, np.hypot(u, v))
    edge = dist + 0.22 * fbm(0, 0, hm, wm, max(hm, wm) / 5.0, seeds[0], octaves=4)
    tissue = _sig((1.0 - edge) / 0.004)
    inside = tissue > 0.5
    if not inside.any():  # pragma: no cover - the envelope always covers the centre
        inside[hm // 2, wm // 2] = True

    def region(
        cell_um: float, seed: int, frac: float, width: float = 0.04, within: np.ndarray = inside
    ) -> np.ndarray:
        f = fbm(0, 0, hm, wm, cell_um / um, seed, octaves=3)
        return _sig((f - np.quantile(f[within], 1.0 - frac)) / width)

    reg = region(450.0, seeds[1], rng.uniform(0.25, 0.35))
    nest = region(70.0, seeds[2], rng.uniform(0.5, 0.65), 0.05, np.ones_like(inside))
    agg = region(140.0, seeds[3], 0.15)
    fat = region(300.0, seeds[4], 0.07) * _sig((0.75 - dist) / 0.03)
    infl = 0.15 + 0.3 * value_noise(0, 0, hm, wm, 200.0 / um, seeds[5])
    wts = np.zeros((5, hm, wm))
    wts[TUMOUR] = tissue * reg * nest
    wts[LYMPH] = tissue * (reg * (1 - nest) * infl + (1 - reg) * agg * (1 - fat))
    wts[ADIPOSE] = tissue * (1 - reg) * fat
    wts[STROMA] = np.clip(tissue - wts[TUMOUR] - wts[LYMPH] - wts[ADIPOSE], 0, None)
    wts[GLASS] = 1.0 - tissue
    density = 0.7 + 0.9 * value_noise(0, 0, hm, wm, 250.0 / um, seeds[5] + 1)
    tumour = (inside & (reg > 0.5)).astype(np.uint8)
    return TissueMap(wts, MASK_DOWNSAMPLE, density), tumour, inside.astype(np.uint8)


class _TileRenderer:
    """Renders level-0 tiles of one slide in any order; objects near tile borders are shared."""

    def __init__(
        self,
        tmap: TissueMap,
        bank: SpriteBank,
        stain: SlideStain,
        mpp: float,
        key: tuple[int, ...],
        tile: int,
    ):
        self.tmap, self.bank, self.stain, self.mpp, self.key, self.tile = tmap, bank, stain, mpp, key, tile
        self.tex_seed = int(np.random.SeedSequence([*key, 3]).generate_state(1)[0])
        self._cache: dict[tuple[int, int], Objects] = {}
        self.n_tiles = (
            tmap.weights.shape[1] * MASK_DOWNSAMPLE // tile,
            tmap.weights.shape[2] * MASK_DOWNSAMPLE // tile,
        )
        c = tile // MASK_DOWNSAMPLE
        tissue = 1.0 - tmap.weights[GLASS]
        ny, nx = self.n_tiles
        # tiles whose 3x3 neighbourhood holds no tissue are plain glass
        blocks = tissue[: ny * c, : nx * c].reshape(ny, c, nx, c).max(axis=(1, 3)) > 1e-3
        pad = np.pad(blocks, 1)
        self.has_tissue = np.zeros_like(blocks)
        for dy in range(3):
            for dx in range(3):
                self.has_tissue |= pad[dy : dy + ny, dx : dx + nx]

    def _objects(self, ty: int, tx: int) -> Objects:
        if (ty, tx) not in self._cache:
            if len(self._cache) > 4 * self.n_tiles[1] + 16:  # keep about the last rows only
                for k in [k for k in self._cache if k[0] < ty - 1]:
                    del self._cache[k]
            rng = np.random.default_rng(np.random.SeedSequence([*self.key, 7, ty, tx]))
            t = self.tile
            self._cache[(ty, tx)] = sample_objects(
                rng, self.tmap, self.bank, ty * t, tx * t, t, t, self.mpp, self.tex_seed + 5
            )
        return self._cache[(ty, tx)]

    def render(self, ty: int, tx: int) -> np.ndarray:
        t = self.tile
        rng = np.random.default_rng(np.random.SeedSequence([*self.key, 9, ty, tx]))
        if not self.has_tissue[ty, tx]:
            glass = self.stain.background * np.power(
                10.0, -0.004 * self.stain.scale[1] * self.stain.vectors[1]
            )
            img = rng.standard_normal((t, t, 3), dtype=np.float32) * np.float32(2.0) + glass.astype(
                np.float32
            )
            return np.clip(np.rint(img), 0, 255).astype(np.uint8)
        ny, nx = self.n_tiles
        parts = [
            self._objects(y, x)
            for y in range(max(ty - 1, 0), min(ty + 2, ny))
            for x in range(max(tx - 1, 0), min(tx + 2, nx))
        ]
        return render_region(
            self.tmap,
            Objects.concat(parts),
            self.bank,
            self.stain,
            ty * t,
            tx * t,
            t,
            t,
            self.mpp,
            self.tex_seed,
            rng,
        )


def _block_mean(img: np.ndarray, f: int) -> np.ndarray:
    h, w = img.shape[0] // f, img.shape[1] // f
    a = img[: h * f, : w * f].reshape(h, f, w, f, -1)
    acc = np.zeros((h, w, f, a.shape[-1]), np.uint32)
    for i in range(f):
        acc += a[:, i]
    out = acc.sum(axis=2, dtype=np.uint32)
    return ((out + (f * f) // 2) // (f * f)).astype(np.uint8)


def _write_tiff(
    path: Path,
    renderer: _TileRenderer,
    shape: tuple[int, int],
    mpp: float,
    compression: str | None,
    quality: int,
    description: str,
) -> list[tuple[int, int]]:
    """Write the pyramid (level 0 tile by tile, then levels /4); return the level shapes."""
    import tifffile

    h, w = shape
    t = renderer.tile
    shapes = [(h, w)]
    while min(shapes[-1]) // 4 >= t and shapes[-1][0] % 4 == 0 and shapes[-1][1] % 4 == 0:
        shapes.append((shapes[-1][0] // 4, shapes[-1][1] // 4))
    level1 = np.zeros((*shapes[1], 3), np.uint8) if len(shapes) > 1 else None

    def tiles() -> Iterator[np.ndarray]:
        for ty in range(h // t):
            for tx in range(w // t):
                img = renderer.render(ty, tx)
                if level1 is not None:
                    q = t // 4
                    level1[ty * q : (ty + 1) * q, tx * q : (tx + 1) * q] = _block_mean(img, 4)
                yield img

    kw: dict[str, Any] = dict(photometric="rgb", metadata=None, software=False, resolutionunit="CENTIMETER")
    if compression is not None:
        kw["compression"] = compression
        if compression == "jpeg":
            kw["compressionargs"] = {"level": quality}
    tmp = path.with_name(f".{path.name}.tmp")
    with tifffile.TiffWriter(tmp, bigtiff=h * w * 3 > 2**31) as tw:
        res = 1e4 / mpp
        tw.write(
            tiles(),
            shape=(h, w, 3),
            dtype=np.uint8,
            tile=(t, t),
            resolution=(res, res),
            description=description,
            **kw,
        )
        img = level1
        for k in range(1, len(shapes)):
            res = 1e4 / (mpp * 4**k)
            tw.write(img, tile=(t, t), subfiletype=1, resolution=(res, res), **kw)
            if k + 1 < len(shapes):
                img = _block_mean(img, 4)
    os.replace(tmp, path)
    return shapes


def _write_png(path: Path, mask: np.ndarray) -> None:
    from PIL import Image

    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(mask.astype(np.uint8), mode="L").save(tmp, format="PNG")
    os.replace(tmp, path)


def _polygons(mask: np.ndarray, scale: float) -> list[list[list[list[float]]]]:
    """Polygons (outer ring, then holes) of ``mask`` in level-0 (x, y) coordinates."""
    from scipy import ndimage
    from skimage import measure

    def ring(binary: np.ndarray) -> list[list[float]]:
        cs = measure.find_contours(np.pad(binary, 1).astype(float), 0.5)
        c = max(cs, key=len) - 1.0
        turn = np.any(np.diff(np.sign(np.diff(c, axis=0)), axis=0) != 0, axis=1)  # keep corners only
        c = np.concatenate([c[:1], c[1:-1][turn], c[-1:]])
        pts = [[round(float((x + 0.5) * scale), 1), round(float((y + 0.5) * scale), 1)] for y, x in c]
        if pts[0] != pts[-1]:
            pts.append(pts[0])
        return pts

    labels, n = ndimage.label(mask)
    out = []
    for i in range(1, n + 1):
        comp = labels == i
        if comp.sum() < 4:
            continue
        filled = ndimage.binary_fill_holes(comp)
        rings = [ring(filled)]
        holes, nh = ndimage.label(filled & ~comp)
        rings += [ring(holes == j) for j in range(1, nh + 1) if (holes == j).sum() >= 4]
        out.append(rings)
    return out


def _geojson(mask: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    feats = []
    for rings in _polygons(mask, MASK_DOWNSAMPLE):
        feats.append(
            {
                "type": "Feature",
                "id": str(uuid.UUID(bytes=rng.bytes(16), version=4)),
                "geometry": {"type": "Polygon", "coordinates": rings},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": "Tumor", "color": [200, 0, 0]},
                },
            }
        )
    return {"type": "FeatureCollection", "features": feats}


def generate_wsi(
    out_dir: Path,
    n: int,
    seed: int,
    size: int | tuple[int, int] = 4096,
    mpp: float = 0.5,
    compression: str = "jpeg",
    quality: int = 90,
    stain_variation: float = 1.0,
    **options: Any,
) -> dict[str, Any]:
    """Write ``n`` synthetic whole-slide images with tumour masks and annotations into ``out_dir``.

    Args:
        out_dir: existing empty folder.
        n: number of slides.
        seed: random seed; the same seed gives byte-identical files.
        size: level-0 side (or (height, width)) in pixels, multiples of 1024 (4096 = 2 mm at 0.5 um/px).
        mpp: level-0 microns per pixel (0.25-1.0).
        compression: tile compression, ``"jpeg"`` (default), ``"deflate"`` or ``"none"``.
        quality: JPEG quality (50-100).
        stain_variation: spread of the per-slide stains (0 = Ruifrok & Johnston stain on every slide).

    Returns:
        summary dict (also written to ``summary.json``).
    """
    if options:
        raise ValueError(
            f"unknown option(s) for wsi: {', '.join(sorted(options))}; "
            "expected size, mpp, compression, quality, stain_variation"
        )
    shape = (size, size) if isinstance(size, int) and not isinstance(size, bool) else tuple(size)
    if len(shape) != 2 or any(
        isinstance(s, bool) or not isinstance(s, int) or s < 1024 or s % 1024 for s in shape
    ):
        raise ValueError(
            f"option size must be an int or (height, width) of multiples of 1024 pixels, got {size!r}"
        )
    if not 0.25 <= float(mpp) <= 1.0:
        raise ValueError(f"option mpp must be in [0.25, 1.0] microns per pixel, got {mpp!r}")
    if compression not in _COMPRESSIONS:
        raise ValueError(f"option compression must be one of {', '.join(_COMPRESSIONS)}, got {compression!r}")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 50 <= quality <= 100:
        raise ValueError(f"option quality must be an integer JPEG quality in [50, 100], got {quality!r}")
    if not 0.0 <= float(stain_variation) <= 3.0:
        raise ValueError(f"option stain_variation must be in [0, 3], got {stain_variation!r}")
    out_dir = Path(out_dir)
    for sub in ("slides", "masks", "annotations"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    n_test = max(1, n // 5) if n >= 2 else 0
    n_val = n // 10 if n >= 10 else 0
    lists: dict[str, list] = {"training": [], "validation": [], "test": []}
    slides = []
    for k in range(n):
        rng = rng_for(seed, k)
        stain = random_stain(rng, float(stain_variation))
        bank = SpriteBank(rng, float(mpp), per_kind=32)
        hm, wm = shape[0] // MASK_DOWNSAMPLE, shape[1] // MASK_DOWNSAMPLE
        tmap, tumour, tissue = _slide_map(rng, hm, wm, float(mpp))
        renderer = _TileRenderer(tmap, bank, stain, float(mpp), (int(seed), k), _TILE)
        name = f"slide_{k:03d}"
        desc = f"monai-ext synthetic H&E whole-slide image|mpp={float(mpp)}|seed={seed}|slide={k}"
        shapes = _write_tiff(
            out_dir / "slides" / f"{name}.tif",
            renderer,
            shape,
            float(mpp),
            _COMPRESSIONS[compression],
            quality,
            desc,
        )
        _write_png(out_dir / "masks" / f"{name}_tumour.png", tumour)
        _write_png(out_dir / "masks" / f"{name}_tissue.png", tissue)
        write_json(out_dir / "annotations" / f"{name}.geojson", _geojson(tumour, rng))
        split = "test" if k >= n - n_test else "validation" if k >= n - n_test - n_val else "training"
        entry = {
            "image": f"slides/{name}.tif",
            "label": f"masks/{name}_tumour.png",
            "tissue_mask": f"masks/{name}_tissue.png",
            "annotations": f"annotations/{name}.geojson",
            "mask_downsample": MASK_DOWNSAMPLE,
            "mpp": float(mpp),
        }
        lists[split].append(entry)
        slides.append(
            {
                "slide": k,
                "split": split,
                "level_shapes": [list(s) for s in shapes],
                "tissue_fraction": round(float(tissue.mean()), 4),
                "tumour_fraction_of_tissue": round(float(tumour.sum() / max(tissue.sum(), 1)), 4),
                **stain.as_dict(),
            }
        )
    write_json(out_dir / "datalist.json", lists)
    summary = {
        "kind": "wsi",
        "n": n,
        "seed": seed,
        "size": list(shape),
        "mpp": float(mpp),
        "tile": _TILE,
        "compression": compression,
        "mask_downsample": MASK_DOWNSAMPLE,
        "split": {k: len(v) for k, v in lists.items()},
        "slides": slides,
        "targets": {"tumour_segmentation_dice": 0.85},
    }
    write_json(out_dir / "summary.json", summary)
    return summary
