"""Heat maps written back as aligned pyramidal TIFFs; GeoJSON annotations to masks and boxes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from monai_ext.data.synthetic import generate

tifffile = pytest.importorskip("tifffile")
pytest.importorskip("skimage")
PIL = pytest.importorskip("PIL.Image")

from monai_ext.data.wsi import (  # noqa: E402
    Slide,
    annotations_to_boxes,
    annotations_to_mask,
    load_annotations,
    write_heatmap,
)

SIZE = 2048


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return generate("wsi", tmp_path_factory.mktemp("wsi_heat") / "d", n=1, seed=1, size=SIZE, mpp=0.25)


def _mpp_tifffile(page) -> tuple[float, float]:
    (xn, xd), (yn, yd) = page.tags["XResolution"].value, page.tags["YResolution"].value
    assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
    return 1e4 * yd / yn, 1e4 * xd / xn


def test_heatmap_same_physical_size_tifffile_and_openslide(data, tmp_path):
    slide = data / "slides" / "slide_000.tif"
    probs = np.random.default_rng(0).random((600, 530))  # not a divisor of the slide
    out = write_heatmap(tmp_path / "heat.tif", probs, slide=slide, tile=128)
    assert out.is_file() and [p.name for p in tmp_path.iterdir()] == ["heat.tif"]
    phys = (SIZE * 0.25, SIZE * 0.25)  # microns
    with tifffile.TiffFile(out) as tif:
        pages = list(tif.pages)
        assert len(pages) == 4 and pages[0].is_tiled and all(p.subfiletype == 1 for p in pages[1:])
        for p in pages:
            my, mx = _mpp_tifffile(p)
            assert my * p.shape[0] == pytest.approx(phys[0], rel=1e-4)
            assert mx * p.shape[1] == pytest.approx(phys[1], rel=1e-4)
        np.testing.assert_array_equal(pages[0].asarray(), np.rint(probs * 255).astype(np.uint8))
        assert pages[1].shape == (300, 265)
    openslide = pytest.importorskip("openslide")
    o = openslide.OpenSlide(str(out))
    try:
        assert o.level_dimensions[0] == (530, 600) and o.level_count == 4
        mx = float(o.properties["openslide.mpp-x"])
        my = float(o.properties["openslide.mpp-y"])
        assert mx * 530 == pytest.approx(phys[1], rel=1e-4) and my * 600 == pytest.approx(phys[0], rel=1e-4)
        region = np.asarray(o.read_region((100, 200), 0, (16, 8)))[..., 0]
        np.testing.assert_array_equal(region, np.rint(probs[200:208, 100:116] * 255))
    finally:
        o.close()
    with Slide(slide) as s, Slide(out) as h:  # our reader agrees on the physical extent
        assert np.multiply(h.mpp(0), h.level_shapes[0]) == pytest.approx(
            np.multiply(s.mpp(0), s.level_shapes[0])
        )


def test_heatmap_bad_input_leaves_no_file(tmp_path):
    bad = np.full((64, 64), 0.5)
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_heatmap(tmp_path / "h.tif", bad, slide_shape=(1024, 1024), slide_mpp=0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        write_heatmap(tmp_path / "h.tif", np.full((8, 8), 2.0), slide_shape=(1024, 1024), slide_mpp=0.5)
    with pytest.raises(ValueError, match="slide_shape"):
        write_heatmap(tmp_path / "h.tif", np.zeros((8, 8)))
    assert list(tmp_path.iterdir()) == []
    # torch tensors and uint8 are accepted; an existing file is replaced whole
    torch = pytest.importorskip("torch")
    write_heatmap(tmp_path / "h.tif", torch.ones(8, 8), slide_shape=(1024, 1024), slide_mpp=0.5)
    write_heatmap(tmp_path / "h.tif", np.full((8, 8), 7, np.uint8), slide_shape=(1024, 1024), slide_mpp=0.5)
    assert (tifffile.imread(tmp_path / "h.tif") == 7).all() and len(list(tmp_path.iterdir())) == 1


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_generator_geojson_matches_tumour_mask(data):
    with PIL.open(data / "masks" / "slide_000_tumour.png") as im:
        ref = np.asarray(im) > 0
    anns = load_annotations(data / "annotations" / "slide_000.geojson")
    assert anns and all(a.kind == "polygon" and a.name == "Tumor" for a in anns)
    mask = annotations_to_mask(anns, ref.shape, downsample=16, classes={"Tumor": 1}) > 0
    assert _dice(mask, ref) >= 0.95
    # at level 1 (downsample 4) the raster is the same region, 4x finer
    with Slide(data / "slides" / "slide_000.tif") as s:
        m1 = annotations_to_mask(anns, s.level_shapes[1], s.downsamples[1]) > 0
    assert m1.shape == (SIZE // 4, SIZE // 4)
    assert _dice(m1.reshape(ref.shape[0], 4, ref.shape[1], 4).mean((1, 3)) > 0.5, ref) >= 0.95
    boxes, labels = annotations_to_boxes(anns, downsample=16, classes={"Tumor": 2})
    assert boxes.shape == (len(anns), 4) and (labels == 2).all()
    for b in boxes:  # every box holds tumour pixels of the mask
        assert ref[int(b[1]) : int(np.ceil(b[3])), int(b[0]) : int(np.ceil(b[2]))].any()


def _square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


QUPATH = [  # QuPath "export as GeoJSON" writes a list of features
    {
        "type": "Feature",
        "geometry": {
            "type": "Polygon",
            "coordinates": [_square(0, 0, 640, 640), _square(160, 160, 480, 480)],
        },
        "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}},
    },
    {
        "type": "Feature",
        "geometry": {
            "type": "MultiPolygon",
            "coordinates": [[_square(800, 0, 960, 160)], [_square(800, 320, 960, 480)]],
        },
        "properties": {"classification": {"name": "Stroma"}},
    },
    {
        "type": "Feature",
        "geometry": {"type": "MultiPoint", "coordinates": [[328, 328], [1000, 600]]},
        "properties": {"classification": {"name": "Lymphocyte"}},
    },
    {
        "type": "Feature",
        "geometry": {"type": "LineString", "coordinates": [[0, 0], [5, 5]]},
        "properties": {},
    },
]


def test_polygons_with_holes_and_points_to_masks_and_boxes(tmp_path):
    path = tmp_path / "qupath.geojson"
    path.write_text(json.dumps(QUPATH))
    with pytest.warns(UserWarning, match="LineString"):
        anns = load_annotations(path)
    assert [a.kind for a in anns] == ["polygon", "polygon", "polygon", "point", "point"]
    classes = {"Tumor": 1, "Stroma": 2, "Lymphocyte": 3}
    for ds in (16, 32):  # two levels
        m = annotations_to_mask(anns, (64, 64), downsample=ds, classes=classes, point_radius=0)
        n = 640 // ds
        ring = np.ones((n, n), bool)
        ring[160 // ds : 480 // ds, 160 // ds : 480 // ds] = False
        assert (m[:n, :n][ring] == 1).all() and (m[:n, :n][~ring] != 1).all()  # hole is cleared
        assert (m[: 160 // ds, 800 // ds : 960 // ds] == 2).all() and (
            m[160 // ds : 320 // ds, 800 // ds] == 0
        ).all()
        assert m[round(328 / ds - 0.5), round(328 / ds - 0.5)] == 3  # point inside the hole
        assert (m == 3).sum() == 2
        assert ((m == 1).sum(), (m == 2).sum()) == (ring.sum(), 2 * (160 // ds) ** 2)
    only_tumour = annotations_to_mask(anns, (64, 64), downsample=16, classes={"Tumor": 5})
    assert set(np.unique(only_tumour)) == {0, 5}
    discs = annotations_to_mask(anns, (64, 64), downsample=16, classes={"Lymphocyte": 1}, point_radius=3)
    assert 2 * 20 < discs.sum() < 2 * 40
    boxes, labels = annotations_to_boxes(anns, downsample=16, classes=classes, point_box=4)
    np.testing.assert_allclose(boxes[0], [0, 0, 40, 40])
    np.testing.assert_allclose(boxes[1:3], [[50, 0, 60, 10], [50, 20, 60, 30]])
    np.testing.assert_allclose(boxes[3], [20.5 - 2, 20.5 - 2, 20.5 + 2, 20.5 + 2])
    assert labels.tolist() == [1, 2, 2, 3, 3]
    clipped, lab = annotations_to_boxes(anns, downsample=32, classes=classes, clip_shape=(16, 16))
    assert (clipped[:, 2:] <= 16).all() and lab.tolist() == [1, 3, 3]  # stroma boxes fall outside


def test_bad_annotation_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.geojson"):
        load_annotations(tmp_path / "missing.geojson")
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.geojson.*not valid JSON"):
        load_annotations(bad)
    bad.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature"}]}))
    with pytest.raises(ValueError, match="bad.geojson.*feature 0 has no geometry"):
        load_annotations(bad)
    bad.write_text(
        json.dumps({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0]]]}})
    )
    with pytest.raises(ValueError, match=">= 3"):
        load_annotations(bad)
