"""How studies reach the bundles without a server: multi-sequence NIfTI stacking and slide regions.

Runs in the main environment and in the label environment (scripts/label_env.sh).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from monai_ext.cli import main
from monai_ext.label.regions import REGION_KEY, LoadSlideRegiond, is_slide, parse_region, region_to_level0
from monai_ext.label.studies import input_sequences, stack_sequences

SEQ = ["t1", "t1c", "t2", "flair"]


def _nifti(path, value, shape=(8, 6, 4), affine=None):
    affine = np.diag([2.0, 2.0, 3.0, 1.0]) if affine is None else affine
    data = np.full(shape, value, dtype=np.float32)
    data[0, 0, 0] = value + 0.5  # one voxel differs: axis order is checked too
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def test_input_sequences_from_channel_def():
    assert input_sequences("mri_multimodal_segmentation") == SEQ
    assert input_sequences("he_tissue_classification") == []  # RGB is one image, not three sequences
    assert input_sequences("ct_organ_segmentation") == []


def test_stack_sequences_in_bundle_order_with_a_missing_one(tmp_path):
    files = {s: _nifti(tmp_path / f"{s}.nii.gz", 10.0 * (i + 1)) for i, s in enumerate(SEQ) if s != "t1c"}
    out = stack_sequences(
        {"flair": files["flair"], "t2": files["t2"], "t1": files["t1"], "t1c": None},
        tmp_path / "studies" / "brain.nii.gz",
        order=SEQ,
    )
    img = nib.load(out)
    assert img.shape == (8, 6, 4, 4)
    np.testing.assert_allclose(img.affine, np.diag([2.0, 2.0, 3.0, 1.0]))
    data = np.asarray(img.dataobj)
    assert [float(data[1, 1, 1, c]) for c in range(4)] == [10.0, 0.0, 30.0, 40.0]  # t1c absent -> zeros
    assert float(data[0, 0, 0, 3]) == 40.5
    assert [p.name for p in out.parent.iterdir()] == ["brain.nii.gz"]  # no temporary file left


def test_stack_sequences_rejects_bad_input(tmp_path):
    a = _nifti(tmp_path / "a.nii.gz", 1.0)
    b = _nifti(tmp_path / "b.nii.gz", 1.0, shape=(8, 6, 5))
    with pytest.raises(ValueError, match="unknown name"):
        stack_sequences({"t3": a}, tmp_path / "o.nii.gz", order=SEQ)
    with pytest.raises(ValueError, match="resample all sequences onto one grid"):
        stack_sequences({"t1": a, "t2": b}, tmp_path / "o.nii.gz", order=SEQ)
    with pytest.raises(FileNotFoundError, match="sequence 't2'"):
        stack_sequences({"t1": a, "t2": tmp_path / "nope.nii.gz"}, tmp_path / "o.nii.gz", order=SEQ)
    with pytest.raises(ValueError, match="no file given"):
        stack_sequences(dict.fromkeys(SEQ), tmp_path / "o.nii.gz", order=SEQ)
    assert not (tmp_path / "o.nii.gz").exists()


def test_cli_label_stack(tmp_path, capsys):
    t1 = _nifti(tmp_path / "t1.nii.gz", 1.0)
    fl = _nifti(tmp_path / "fl.nii.gz", 4.0)
    out = tmp_path / "s.nii.gz"
    assert main(["label", "stack", str(out), "--seq", f"t1={t1}", "--seq", f"FLAIR={fl}"]) == 0
    assert "all zeros: t1c, t2" in capsys.readouterr().out
    assert nib.load(out).shape == (8, 6, 4, 4)
    assert main(["label", "stack", str(tmp_path / "x.nii.gz"), "--seq", "t1"]) == 2
    assert "NAME=FILE" in capsys.readouterr().err


def test_parse_region():
    assert parse_region({"location": [10, 20], "size": [30, 40], "level": "1"}) == ((10, 20), (30, 40), 1)
    assert parse_region({"location": [0, 0], "size": [0, 0]}) == (None, None, 0)  # whole slide
    assert parse_region({}) == (None, None, 0)
    with pytest.raises(ValueError, match="size"):
        parse_region({"location": [0, 0], "size": [-4, 4]})
    with pytest.raises(ValueError, match="location"):
        parse_region({"location": "here", "size": [4, 4]})
    assert is_slide("a/b.SVS") and is_slide("s.tif") and not is_slide("p.png")


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    pytest.importorskip("openslide")
    pytest.importorskip("imagecodecs")
    from monai_ext.data.synthetic import generate

    return (
        generate("wsi", tmp_path_factory.mktemp("wsi") / "wsi", n=1, seed=0, size=2048)
        / "slides"
        / "slide_000.tif"
    )


def test_slide_region_matches_direct_read(slide):
    from monai_ext.data.wsi import Slide

    with Slide(slide, backend="tifffile") as s:
        ref0 = s.read_region((256, 512), (64, 96), level=0)  # (row, col), (h, w)
        ref1 = s.read_region((256, 512), (32, 48), level=1)
    out = LoadSlideRegiond("image")({"image": str(slide), "location": [512, 256], "size": [96, 64]})
    img = out["image"]
    assert tuple(img.shape) == (3, 64, 96)  # rows first
    np.testing.assert_array_equal(np.moveaxis(np.asarray(img), 0, -1), ref0)
    assert out[REGION_KEY]["read_level"] == 0 and out[REGION_KEY]["shape"] == [64, 96]
    # a bundle working at 2 um/px on a 0.5 um/px slide reads level 1 (downsample 4); x-first layout
    out = LoadSlideRegiond("image", mpp=2.0, xy_first=True)(
        {"image": str(slide), "location": [512, 256], "size": [192, 128]}
    )
    region = out[REGION_KEY]
    assert region["read_level"] == 1 and region["downsample"] == 4.0
    assert tuple(out["image"].shape) == (3, 48, 32)
    np.testing.assert_array_equal(np.asarray(out["image"]).transpose(2, 1, 0), ref1)
    np.testing.assert_allclose(region_to_level0([[0, 0], [10, 5]], region), [[512, 256], [552, 276]])


def test_slide_region_bad_requests(slide):
    with pytest.raises(ValueError, match="out of range"):
        LoadSlideRegiond("image")({"image": str(slide), "location": [0, 0], "size": [8, 8], "level": 5})
    with pytest.raises(ValueError, match="smaller region"):
        LoadSlideRegiond("image", max_pixels=100)({"image": str(slide), "location": [0, 0], "size": [64, 64]})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LoadSlideRegiond("image")({"image": str(slide.with_name("nope.tif"))})
    whole = LoadSlideRegiond("image", mpp=2.0)({"image": str(slide)})  # no location: the whole slide
    assert tuple(whole["image"].shape) == (3, 512, 512) and whole[REGION_KEY]["size"] == [2048, 2048]
