"""Whole-slide region reads: tifffile vs OpenSlide vs full-level crops, border padding, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monai_ext.data.synthetic import generate

tifffile = pytest.importorskip("tifffile")
pytest.importorskip("skimage")

from monai_ext.data.wsi import (  # noqa: E402
    FILL,
    PaddedOpenSlideWSIReader,
    Slide,
    TiledTiffWSIReader,
    read_tiff_region,
    tissue_mask,
)

SIZE = 4096


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory) -> Path:
    out = generate("wsi", tmp_path_factory.mktemp("wsi_reader") / "d", n=1, seed=0, size=SIZE)
    return out / "slides" / "slide_000.tif"


REGIONS = [  # (location level 0 (row, col), size at level, level)
    ((1000, 1300), (512, 300), 0),  # not tile-aligned, crosses tile borders
    ((2048, 2048), (256, 256), 0),  # one tile exactly
    ((1024, 2052), (100, 200), 1),
    ((0, 0), (256, 256), 2),  # a whole level
]


def test_region_equals_crop_of_full_level(slide_path):
    with Slide(slide_path) as s, tifffile.TiffFile(slide_path) as tif:
        assert s.level_shapes == [(SIZE // 4**k, SIZE // 4**k) for k in range(3)]
        assert s.downsamples == [1.0, 4.0, 16.0]
        assert s.mpp(0) == pytest.approx((0.5, 0.5)) and s.mpp(2) == pytest.approx((8.0, 8.0))
        for (y, x), (h, w), lvl in REGIONS:
            full = tif.series[0].levels[lvl].asarray()
            yl, xl = y // 4**lvl, x // 4**lvl
            got = s.read_region((y, x), (h, w), lvl)
            assert got.shape == (h, w, 3) and got.dtype == np.uint8
            np.testing.assert_array_equal(got, full[yl : yl + h, xl : xl + w])


def test_tifffile_and_openslide_agree(slide_path):
    pytest.importorskip("openslide")
    with Slide(slide_path) as a, Slide(slide_path, backend="openslide") as b:
        assert a.level_shapes == b.level_shapes
        assert a.mpp(1) == pytest.approx(b.mpp(1))
        for (y, x), (h, w), lvl in [*REGIONS, ((-100, SIZE - 200), (300, 300), 0)]:
            ra = a.read_region((y, x), (h, w), lvl).astype(float)
            rb = b.read_region((y, x), (h, w), lvl).astype(float)
            assert ra.shape == rb.shape == (h, w, 3)
            assert np.abs(ra - rb).mean() < 1.0  # JPEG decoder rounding at most
            assert np.abs(ra - rb).max() <= 8


@pytest.mark.parametrize("backend", ["tifffile", "openslide"])
def test_border_patch_padded_to_requested_size(slide_path, backend):
    if backend == "openslide":
        pytest.importorskip("openslide")
    with Slide(slide_path, backend=backend) as s:
        ref = s.read_region((SIZE - 256, SIZE - 256), (256, 256), 0)
        # half outside the bottom-right corner
        p = s.read_region((SIZE - 128, SIZE - 128), (256, 256), 0)
        assert p.shape == (256, 256, 3)
        np.testing.assert_array_equal(p[:128, :128], ref[128:, 128:])
        assert (p[128:] == FILL).all() and (p[:, 128:] == FILL).all()
        # partly above/left of the slide at level 1
        q = s.read_region((-64, -128), (128, 128), 1)
        assert q.shape == (128, 128, 3)
        assert (q[:16] == 255).all() and (q[:, :32] == 255).all()
        np.testing.assert_array_equal(q[16:, 32:], s.read_region((0, 0), (112, 96), 1))
        # entirely outside the right edge: all fill
        assert (s.read_region((0, SIZE + 10), (32, 32), 0) == 255).all()
    with Slide(slide_path, backend=backend, fill=0) as s:
        assert (s.read_region((-50, 0), (64, 64), 0)[:50] == 0).all()


def test_monai_reader_interface(slide_path):
    """Our readers are MONAI readers: get_data gives channel-first patches + metadata, like MONAI's."""
    from monai.data import TiffFileWSIReader

    ours, theirs = TiledTiffWSIReader(level=1), TiffFileWSIReader(level=1)
    w1, w2 = ours.read(slide_path), theirs.read(slide_path)
    try:
        a, meta = ours.get_data(w1, location=(512, 1024), size=(128, 96))
        b, _ = theirs.get_data(w2, location=(512, 1024), size=(128, 96))
        assert a.shape == (3, 128, 96) and meta["backend"] == "tifffile"
        np.testing.assert_array_equal(a, b)
        assert ours.get_level_count(w1) == 3 and ours.get_mpp(w1, 2) == pytest.approx((8.0, 8.0))
        # MONAI's reader returns a cut-off array at the border, ours the requested size
        a, _ = ours.get_data(w1, location=(SIZE - 64, 0), size=(64, 64), level=1)
        b, _ = theirs.get_data(w2, location=(SIZE - 64, 0), size=(64, 64), level=1)
        assert a.shape == (3, 64, 64) and b.shape[1] < 64
    finally:
        w1.close()
        w2.close()


def test_openslide_monai_reader_pads_white(slide_path):
    pytest.importorskip("openslide")
    r = PaddedOpenSlideWSIReader(channel_dim=0)
    wsi = r.read(slide_path)
    try:
        p, _ = r.get_data(wsi, location=(SIZE - 32, 0), size=(64, 64), level=0)
        assert p.shape == (3, 64, 64) and (p[:, 32:] == 255).all() and (p[:, :32] < 255).any()
    finally:
        wsi.close()


def test_read_tiff_region_strips_and_deflate(tmp_path):
    """Non-tiled (stripped) and deflate pages are read segment by segment too."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (300, 200, 3), dtype=np.uint8)
    path = tmp_path / "strips.tif"
    tifffile.imwrite(path, img, rowsperstrip=16, compression="zlib", photometric="rgb")
    with tifffile.TiffFile(path) as tif:
        got = read_tiff_region(tif.pages[0], 90, -10, 50, 100, fill=7)
    np.testing.assert_array_equal(got[:, 10:], img[90:140, :90])
    assert (got[:, :10] == 7).all()


def test_missing_path_names_file(tmp_path):
    missing = tmp_path / "nope.tif"
    for backend in ("tifffile", "openslide"):
        with pytest.raises(FileNotFoundError, match="nope.tif.*does not exist"):
            Slide(missing, backend=backend)
    with pytest.raises(FileNotFoundError, match="is a folder"):
        Slide(tmp_path)


def test_not_a_tiff_names_file_problem_and_fix(tmp_path):
    bad = tmp_path / "notes.tif"
    bad.write_text("this is not an image\n" * 10)
    with pytest.raises(ValueError, match=r"notes.tif.*not a readable TIFF.*pyramidal"):
        Slide(bad)
    pytest.importorskip("openslide")
    with pytest.raises(ValueError, match=r"notes.tif.*cannot be opened by OpenSlide"):
        Slide(bad, backend="openslide")


def test_truncated_slide_names_file(slide_path, tmp_path):
    cut = tmp_path / "cut.tif"
    cut.write_bytes(slide_path.read_bytes()[:5000])
    with pytest.raises(ValueError, match="cut.tif"):
        with Slide(cut) as s:
            s.read_level(s.level_count - 1)


def test_flat_tiff_is_not_a_pyramid(tmp_path):
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.full((512, 512, 3), 200, np.uint8), photometric="rgb")
    with pytest.raises(ValueError, match=r"flat.tif.*not a pyramid.*--pyramid"):
        tissue_mask(flat, downsample=16, max_level_pixels=100_000)


def test_missing_tifffile_suggests_extra(monkeypatch, slide_path):
    import monai_ext.data.wsi.reader as reader

    monkeypatch.setattr(reader, "optional_import", lambda name, *a, **k: (None, False))
    with pytest.raises(ImportError, match=r"pip install \"monai-ext\[wsi\]\""):
        Slide(slide_path)
    with pytest.raises(ImportError, match=r"monai-ext\[wsi\]"):
        Slide(slide_path, backend="openslide")
    with pytest.raises(ValueError, match="backend must be one of"):
        Slide(slide_path, backend="pillow")
