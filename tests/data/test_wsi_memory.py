"""Region reads stay memory-bounded on a 16k x 16k JPEG-tiled slide (slow: generating it takes ~30-60 s)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")
pytest.importorskip("skimage")

from monai_ext.data.wsi import Slide, patch_grid, tissue_mask  # noqa: E402

BIG = 16384
MB = 2**20


@pytest.fixture(scope="module")
def big_slide(wsi_16k) -> Path:
    return Path(wsi_16k["slide"])


def _peak(fn):
    tracemalloc.start()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


@pytest.mark.slow
def test_512_read_from_16k_slide_peaks_below_50mb(big_slide):
    with tifffile.TiffFile(big_slide) as tif:
        assert tif.pages[0].shape == (BIG, BIG, 3) and tif.pages[0].compression == tifffile.COMPRESSION.JPEG

    def open_and_read():
        with Slide(big_slide) as s:
            inner = s.read_region((8000, 8100), (512, 512), 0)
            border = s.read_region((BIG - 200, BIG - 300), (512, 512), 0)
        return inner, border

    (inner, border), peak = _peak(open_and_read)
    assert peak < 50 * MB, f"peak {peak / MB:.1f} MB"
    assert inner.shape == border.shape == (512, 512, 3)
    assert (border[200:] == 255).all() and (border[:200, :300] < 255).any()
    openslide = pytest.importorskip("openslide")
    o = openslide.OpenSlide(str(big_slide))
    try:
        ref = np.asarray(o.read_region((8100, 8000), 0, (512, 512)).convert("RGB")).astype(float)
    finally:
        o.close()
    assert np.abs(inner.astype(float) - ref).mean() < 1.0
    # the tissue mask and a tissue-restricted grid also stay bounded (they read level 2, 1024 x 1024)
    grid, peak = _peak(lambda: patch_grid(big_slide, 256, mpp=1.0, min_tissue=0.5))
    assert peak < 50 * MB, f"grid peak {peak / MB:.1f} MB"
    assert grid.level == 0 and grid.read_size == (512, 512) and len(grid) > 100
    mask, ds = tissue_mask(big_slide, downsample=64)
    assert ds == 64.0 and mask.shape == (256, 256) and 0.1 < mask.mean() < 0.9
