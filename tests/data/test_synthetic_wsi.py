"""Tests of the synthetic whole-slide image generator (pyramid, readers, masks, annotations, baseline)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from monai_ext.data.synthetic import generate

tifffile = pytest.importorskip("tifffile")
PIL = pytest.importorskip("PIL.Image")
SIZE, MPP = 4096, 0.5


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _png(path: Path) -> np.ndarray:
    with PIL.open(path) as im:
        return np.asarray(im)


def _openslide():
    return pytest.importorskip("openslide")


def _block_mean(img: np.ndarray, f: int) -> np.ndarray:
    h, w = img.shape[0] // f, img.shape[1] // f
    return img[: h * f, : w * f].reshape(h, f, w, f, -1).astype(float).mean(axis=(1, 3))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return generate("wsi", tmp_path_factory.mktemp("wsi") / "d", n=2, seed=0, size=SIZE, mpp=MPP)


def _slide(data: Path, k: int) -> Path:
    return data / "slides" / f"slide_{k:03d}.tif"


def test_deterministic_per_seed(tmp_path):
    a = generate("wsi", tmp_path / "a", n=1, seed=4, size=1024)
    b = generate("wsi", tmp_path / "b", n=1, seed=4, size=1024)
    c = generate("wsi", tmp_path / "c", n=1, seed=5, size=1024)
    ha, hb, hc = _hashes(a), _hashes(b), _hashes(c)
    assert ha == hb and "slides/slide_000.tif" in ha
    assert ha["slides/slide_000.tif"] != hc["slides/slide_000.tif"]


def test_tifffile_reads_pyramid(data):
    with tifffile.TiffFile(_slide(data, 0)) as tif:
        pages = list(tif.pages)
        assert [p.shape for p in pages] == [(SIZE // 4**k, SIZE // 4**k, 3) for k in range(3)]
        for k, p in enumerate(pages):
            assert (p.tilelength, p.tilewidth) == (256, 256)
            assert p.compression == tifffile.COMPRESSION.JPEG
            assert p.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
            num, den = p.tags["XResolution"].value
            assert 1e4 / (num / den) == pytest.approx(MPP * 4**k, rel=1e-4)
            assert k == 0 or p.subfiletype == 1
        assert f"mpp={MPP}" in pages[0].description
        assert len(tif.series[0].levels) == 3
        # a tile-aligned region decodes to RGB uint8 of the right size without reading the level
        tile = pages[0].asarray()[:256, :256]
        assert tile.dtype == np.uint8 and tile.shape == (256, 256, 3)
    dl = json.loads((data / "datalist.json").read_text())
    assert len(dl["training"]) == 1 and len(dl["test"]) == 1
    assert dl["test"][0]["image"] == "slides/slide_001.tif" and dl["test"][0]["mask_downsample"] == 16


def test_openslide_reads_same_pyramid_and_mpp(data):
    openslide = _openslide()
    slide = openslide.OpenSlide(str(_slide(data, 0)))
    try:
        assert slide.level_count == 3
        assert slide.level_dimensions == tuple((SIZE // 4**k, SIZE // 4**k) for k in range(3))
        assert slide.level_downsamples == pytest.approx((1.0, 4.0, 16.0))
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(MPP)
        assert float(slide.properties["openslide.mpp-y"]) == pytest.approx(MPP)
        # OpenSlide and tifffile decode the same pixels (up to JPEG decoder rounding)
        x, y = SIZE // 2 - 256, SIZE // 2 - 256
        region = np.asarray(slide.read_region((x, y), 0, (512, 512)).convert("RGB")).astype(float)
        with tifffile.TiffFile(_slide(data, 0)) as tif:
            ref = tif.pages[0].asarray()[y : y + 512, x : x + 512].astype(float)
        assert np.abs(region - ref).mean() < 1.0
        # level 1 is level 0 downsampled by 4 (colour consistent)
        r0 = np.asarray(slide.read_region((x, y), 0, (1024, 1024)).convert("RGB"))
        r1 = np.asarray(slide.read_region((x, y), 1, (256, 256)).convert("RGB")).astype(float)
        assert np.abs(_block_mean(r0, 4) - r1).mean() < 4.0
        assert np.abs(_block_mean(r0, 4).mean((0, 1)) - r1.mean((0, 1))).max() < 2.0
    finally:
        slide.close()


def _level2(data: Path, k: int) -> np.ndarray:
    with tifffile.TiffFile(_slide(data, k)) as tif:
        return tif.pages[2].asarray()


def test_masks_align_with_image(data):
    from skimage.color import rgb2hed

    for k in range(2):
        img = _level2(data, k)
        tumour = _png(data / "masks" / f"slide_{k:03d}_tumour.png")
        tissue = _png(data / "masks" / f"slide_{k:03d}_tissue.png")
        assert tumour.shape == tissue.shape == img.shape[:2] and tumour.dtype == np.uint8
        assert set(np.unique(tumour)) == {0, 1} and set(np.unique(tissue)) == {0, 1}
        assert (tumour <= tissue).all()
        assert 0.15 < tissue.mean() < 0.8 and 0.1 < tumour.sum() / tissue.sum() < 0.6
        grey = img.astype(float).mean(-1)
        assert grey[tissue == 0].mean() > 225 and grey[tissue == 1].mean() < grey[tissue == 0].mean() - 25
        hema = rgb2hed(img)[..., 0]
        normal = (tissue == 1) & (tumour == 0)
        assert hema[tumour == 1].mean() > hema[normal].mean()
        assert grey[tumour == 1].mean() < grey[normal].mean()


def test_geojson_matches_tumour_mask(data):
    from skimage.draw import polygon

    gj = json.loads((data / "annotations" / "slide_000.geojson").read_text())
    assert gj["type"] == "FeatureCollection" and gj["features"]
    mask = _png(data / "masks" / "slide_000_tumour.png").astype(bool)
    raster = np.zeros_like(mask)
    for f in gj["features"]:
        assert f["geometry"]["type"] == "Polygon"
        assert f["properties"]["classification"]["name"] == "Tumor"
        for i, ring in enumerate(f["geometry"]["coordinates"]):
            xy = np.asarray(ring) / 16.0 - 0.5  # level-0 (x, y) -> mask pixel centres
            assert xy.min() >= -0.5 and xy[:, 0].max() <= SIZE / 16 and xy[:, 1].max() <= SIZE / 16
            rr, cc = polygon(xy[:, 1], xy[:, 0], mask.shape)
            raster[rr, cc] = i == 0  # outer ring fills, holes clear
    iou = (raster & mask).sum() / (raster | mask).sum()
    assert iou > 0.9


def test_colour_baseline_dice_far_below_target(data):
    """Per-pixel colour logistic regression trained on one slide, tested on the other: Dice <= 0.70."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler

    xs = [_level2(data, k).reshape(-1, 3) / 255.0 for k in range(2)]
    ys = [_png(data / "masks" / f"slide_{k:03d}_tumour.png").reshape(-1) for k in range(2)]
    for degree in (1, 2):
        dice = []
        for tr, te in ((0, 1), (1, 0)):
            clf = make_pipeline(
                PolynomialFeatures(degree),
                StandardScaler(),
                LogisticRegression(max_iter=500, class_weight="balanced"),
            )
            pred = clf.fit(xs[tr], ys[tr]).predict(xs[te])
            dice.append(2 * (pred * ys[te]).sum() / (pred.sum() + ys[te].sum()))
        assert 0.2 < np.mean(dice) <= 0.70, dice


def test_bad_options(tmp_path):
    with pytest.raises(ValueError, match="size"):
        generate("wsi", tmp_path / "x", n=1, seed=0, size=1000)
    with pytest.raises(ValueError, match="compression"):
        generate("wsi", tmp_path / "y", n=1, seed=0, size=1024, compression="webp2")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.slow
def test_16k_slide_tile_by_tile_memory_bounded(wsi_16k):
    # level 0 alone is 16384^2 * 3 bytes = 768 MB: a whole process (Python, numpy, scipy, tifffile,
    # imagecodecs and every buffer) peaking below that never held level 0, so it wrote tile by tile
    # (measured here: about 80 MB at 4096^2, 115 MB at 8192^2, 250 MB at 16384^2)
    assert wsi_16k["peak_rss_mb"] < 500, f"peak resident memory {wsi_16k['peak_rss_mb']:.0f} MB"
    out = Path(wsi_16k["out"])
    with tifffile.TiffFile(out / "slides" / "slide_000.tif") as tif:
        assert [p.shape[:2] for p in tif.pages] == [(16384 // 4**k,) * 2 for k in range(4)]
        assert tif.pages[0].compression == tifffile.COMPRESSION.JPEG
    openslide = _openslide()
    slide = openslide.OpenSlide(str(out / "slides" / "slide_000.tif"))
    try:
        assert slide.level_dimensions[0] == (16384, 16384) and slide.level_count == 4
        region = np.asarray(slide.read_region((8000, 8000), 0, (512, 512)).convert("RGB"))
        assert region.shape == (512, 512, 3)
    finally:
        slide.close()
    assert _png(out / "masks" / "slide_000_tumour.png").shape == (1024, 1024)
