"""Tissue masks against the generator's mask, patch grids at a level or an mpp, the patch dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monai_ext.data.synthetic import generate

pytest.importorskip("tifffile")
pytest.importorskip("skimage")
PIL = pytest.importorskip("PIL.Image")

from monai_ext.data.wsi import (  # noqa: E402
    Slide,
    SlidePatchDataset,
    mask_fraction,
    patch_grid,
    read_patch,
    tissue_mask,
    tissue_mask_from_rgb,
)

SIZE = 4096


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return generate("wsi", tmp_path_factory.mktemp("wsi_tissue") / "d", n=1, seed=3, size=SIZE)


def _png(path: Path) -> np.ndarray:
    with PIL.open(path) as im:
        return np.asarray(im) > 0


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("method", ["saturation", "od"])
def test_tissue_mask_iou_against_generator(data, method):
    ref = _png(data / "masks" / "slide_000_tissue.png")
    mask, ds = tissue_mask(data / "slides" / "slide_000.tif", downsample=16, method=method)
    assert ds == 16.0 and mask.shape == ref.shape and mask.dtype == bool
    assert _iou(mask, ref) >= 0.9


def test_tissue_mask_block_averages_between_levels(data):
    """Downsample 8 comes from level 1 (x4) averaged by 2; it still matches the reference."""
    ref = _png(data / "masks" / "slide_000_tissue.png")
    mask, ds = tissue_mask(data / "slides" / "slide_000.tif", downsample=8)
    assert ds == 8.0 and mask.shape == (SIZE // 8, SIZE // 8)
    assert _iou(mask[::2, ::2], ref) >= 0.9


def test_tissue_mask_fills_holes_and_removes_specks():
    rgb = np.full((100, 100, 3), 245, np.uint8)
    rgb[20:80, 20:80] = (190, 110, 170)  # tissue
    rgb[40:60, 40:60] = 245  # fat / hole inside
    rgb[5:7, 90:92] = (190, 110, 170)  # dust speck
    m = tissue_mask_from_rgb(rgb, min_object_px=10)
    assert m[50, 50] and m[25, 25] and not m[6, 91] and not m[10, 10]
    assert not tissue_mask_from_rgb(rgb, fill_holes=False, min_object_px=10)[50, 50]
    with pytest.raises(ValueError, match="method"):
        tissue_mask_from_rgb(rgb, method="hue")
    assert not tissue_mask_from_rgb(np.full((8, 8, 3), 240, np.uint8)).any()  # blank glass


def test_grid_at_level_restricted_to_tissue(data):
    path = data / "slides" / "slide_000.tif"
    ref = _png(data / "masks" / "slide_000_tissue.png")
    everything = patch_grid(path, 64, level=1, tissue=None)
    assert len(everything) == (SIZE // 256) ** 2 and everything.extent == (256.0, 256.0)
    grid = patch_grid(path, 64, level=1, min_tissue=0.5)
    assert grid.level == 1 and grid.read_size == (64, 64) and grid.mpp == pytest.approx((2.0, 2.0))
    assert 0 < len(grid) < len(everything)
    assert (grid.locations % 256 == 0).all() and (grid.tissue_fraction >= 0.5).all()
    # the kept patches are the ones the reference mask calls >= 50 % tissue, up to the mask edge
    ref_frac = mask_fraction(ref, 16, everything.locations, everything.extent)
    kept = {tuple(p) for p in grid.locations}
    agree = np.mean([(tuple(p) in kept) == (f >= 0.5) for p, f in zip(everything.locations, ref_frac)])
    assert agree >= 0.95
    # a stricter threshold keeps a subset
    strict = patch_grid(path, 64, level=1, min_tissue=0.95)
    assert {tuple(p) for p in strict.locations} <= kept and len(strict) < len(grid)


def test_grid_at_mpp_between_levels(data):
    path = data / "slides" / "slide_000.tif"
    with Slide(path) as s:
        grid = patch_grid(s, 128, mpp=1.0, stride=64, min_tissue=0.5)
        assert grid.level == 0 and grid.read_size == (256, 256) and grid.patch_size == (128, 128)
        assert grid.extent == (256.0, 256.0) and grid.mpp == pytest.approx((1.0, 1.0))
        assert np.diff(np.unique(grid.locations[:, 1])).min() == 128  # stride 64 px at 1 um/px
        # physical size: 128 px * 1.0 um == 256 level-0 px * 0.5 um
        patch = read_patch(s, grid, 0)
        assert patch.shape == (128, 128, 3)
        y, x = grid.locations[0]
        big = s.read_region((y, x), (256, 256), 0).astype(float)
        small = big.reshape(128, 2, 128, 2, 3).mean((1, 3))
        assert np.abs(patch.astype(float) - small).mean() < 6.0
        # an mpp a level holds exactly (2.0 = level 1) reads that level without resizing
        g2 = patch_grid(s, 64, mpp=2.0, tissue=None)
        assert g2.level == 1 and g2.read_size == (64, 64)
    with pytest.raises(ValueError, match="either level or mpp"):
        patch_grid(path, 64, level=1, mpp=1.0)
    with pytest.raises(ValueError, match="patch_size"):
        patch_grid(path, 0, level=0)


def test_grid_include_border_pads(data):
    path = data / "slides" / "slide_000.tif"
    grid = patch_grid(path, 1000, level=0, tissue=None, include_border=True)
    assert len(grid) == 25 and grid.locations.max() == 4000
    with Slide(path) as s:
        p = read_patch(s, grid, len(grid) - 1)
    assert p.shape == (1000, 1000, 3) and (p[96:] == 255).all()


def test_patch_dataset_items_and_loader(data):
    from monai.data import DataLoader
    from monai.transforms import Compose, ScaleIntensityd

    entry = {
        "image": str(data / "slides" / "slide_000.tif"),
        "label": str(data / "masks" / "slide_000_tumour.png"),
        "mask_downsample": 16,
        "case": "a",
    }
    ds = SlidePatchDataset([entry], patch_size=64, level=1, mask_key="label")
    grid = patch_grid(entry["image"], 64, level=1)
    assert len(ds) == len(grid) > 0
    item = ds[3]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == np.uint8
    np.testing.assert_array_equal(item["location"], grid.locations[3])
    assert item["level"] == 1 and item["case"] == "a" and item["label"] in (0, 1)
    with Slide(entry["image"]) as s:
        ref = s.read_region(tuple(grid.locations[3]), (64, 64), 1)
    np.testing.assert_array_equal(item["image"], np.moveaxis(ref, -1, 0))
    labels = np.array([ds.data[i]["label"] for i in range(len(ds))])
    assert 0 < labels.sum() < len(labels)  # both tumour and non-tumour patches
    ds_t = SlidePatchDataset([entry], 64, level=1, transform=Compose([ScaleIntensityd("image")]))
    batch = next(iter(DataLoader(ds_t, batch_size=4, num_workers=0)))
    assert tuple(batch["image"].shape) == (4, 3, 64, 64) and float(batch["image"].max()) <= 1.0
    assert tuple(batch["location"].shape) == (4, 2)
    ds.close()
    with pytest.raises(KeyError, match="'label'"):
        SlidePatchDataset([{"image": entry["image"]}], 64, level=2, mask_key="label")
