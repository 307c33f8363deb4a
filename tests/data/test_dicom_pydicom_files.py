"""DICOM reading against the real test files shipped with pydicom (outcome stated per series)."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import itk
import numpy as np
import pydicom
import pytest
from monai.transforms import LoadImage
from pydicom.data import get_testdata_file

from monai_ext.data.dicom import (
    DicomReadError,
    DicomSeriesReader,
    DicomWarning,
    dicom2nifti,
    find_series,
    read_series,
)

TREE = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests"
MR_SMALL_VARIANTS = [
    "MR_small_RLE.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_implicit.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_padded.dcm",
]


def _quiet_find(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DicomWarning)
        return find_series(path)


def test_variant_list_is_complete():
    folder = Path(get_testdata_file("MR_small.dcm")).parent
    assert sorted(p.name for p in folder.glob("MR_small_*.dcm")) == sorted(MR_SMALL_VARIANTS)


@pytest.mark.parametrize("name", MR_SMALL_VARIANTS)
def test_mr_small_transfer_syntaxes_decode_identically(name):
    ref = read_series(get_testdata_file("MR_small.dcm"))
    vol = read_series(get_testdata_file(name))
    assert vol.array.shape == (64, 64, 1)
    np.testing.assert_array_equal(vol.array, ref.array)
    np.testing.assert_allclose(vol.affine, ref.affine)


def test_mr_small_matches_pydicom_pixel_array():
    path = get_testdata_file("MR_small.dcm")
    img = LoadImage(reader=DicomSeriesReader(), image_only=True)(path)
    np.testing.assert_array_equal(img.numpy()[:, :, 0], pydicom.dcmread(path).pixel_array.T)


def test_truncated_file_names_the_file():
    with pytest.raises(DicomReadError, match=r"MR_truncated\.dcm.*truncated"):
        read_series(get_testdata_file("MR_truncated.dcm"))


def test_unsupported_transfer_syntax_suggests_extra(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small_jp2klossless.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder plugin
    ds.save_as(tmp_path / "mpeg2.dcm")
    with pytest.raises(DicomReadError, match=r"mpeg2\.dcm.*transfer syntax.*monai-ext\[dicom\]"):
        read_series(tmp_path / "mpeg2.dcm")


def test_ct5n_numbering_against_position_equals_itk():
    folder = str(TREE / "98892001" / "CT5N")
    numbers = [
        int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber)
        for f in sorted(Path(folder).iterdir())
    ]
    ours = LoadImage(reader=DicomSeriesReader(), image_only=True)(folder)
    ref = LoadImage(reader="ITKReader", image_only=True)(folder)
    assert ours.shape == ref.shape == (16, 16, 5)
    np.testing.assert_array_equal(ours.numpy(), ref.numpy())
    np.testing.assert_allclose(ours.affine.numpy(), ref.affine.numpy(), atol=1e-5)
    raw = itk.imread(folder)  # plain ITK: (z, y, x) array, LPS origin
    np.testing.assert_array_equal(ours.numpy(), np.asarray(raw).transpose(2, 1, 0))
    np.testing.assert_allclose(
        np.diag([-1, -1, 1]) @ ours.affine.numpy()[:3, 3], np.asarray(raw.GetOrigin()), atol=1e-4
    )
    part = _quiet_find(folder)[0].part
    assert numbers == [6, 7, 8, 9, 10]  # numbering runs head to feet ...
    assert [s.instance_number for s in part.slices] == [
        10,
        9,
        8,
        7,
        6,
    ]  # ... we sort feet to head by position


def test_ct2_gap_warns_with_spacings_and_strict_raises():
    folder = TREE / "77654033" / "CT2"
    with pytest.warns(DicomWarning, match=r"gap.*202\.500 mm.*measured steps \[1\.250, 202\.500\]"):
        vol = read_series(folder)
    assert vol.array.shape == (16, 16, 4)
    np.testing.assert_allclose(vol.meta["slice_positions"], [-99.48, 103.02, 104.27, 105.52], atol=1e-3)
    assert vol.affine[2, 2] == pytest.approx(1.25, abs=1e-4)  # median step, not the 68.3 mm average
    with pytest.raises(DicomReadError, match="gap"):
        read_series(folder, strict=True)


@pytest.mark.parametrize(("folder", "n_uids", "n_parts"), [("98892001/CT2N", 1, 2), ("98892003/MR2", 3, 7)])
def test_mixed_orientations_split_into_consistent_parts(folder, n_uids, n_parts):
    parts = _quiet_find(TREE / folder)
    assert len({p.series_instance_uid for p in parts}) == n_uids
    assert len(parts) == n_parts and len({p.id for p in parts}) == n_parts
    for p in parts:
        orientations = {tuple(np.round(s.orientation, 4)) for s in p.part.slices}
        assert len(orientations) == 1
        assert p.kind == "image2d" and p.shape == (16, 16, 1)
    uid_orients = {(p.series_instance_uid, tuple(np.round(p.part.slices[0].orientation, 3))) for p in parts}
    assert len(uid_orients) == n_parts


def test_mr700_each_slice_own_orientation_is_never_stacked():
    folder = TREE / "98892003" / "MR700"
    parts = _quiet_find(folder)
    assert len(parts) == 7 and {p.kind for p in parts} == {"image2d"}
    with pytest.raises(DicomReadError, match="7 series parts"):
        read_series(folder)
    one = read_series(folder, series=parts[0].id)
    assert one.array.shape == (16, 16, 1)


def test_tiny_alpha_without_pixel_data_is_reported_and_skipped():
    with pytest.warns(DicomWarning, match=r"50 file\(s\) no pixel data"):
        parts = find_series(TREE / "TINY_ALPHA")
    assert parts == []
    with pytest.raises(DicomReadError, match="no DICOM image series"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DicomWarning)
        read_series(TREE / "TINY_ALPHA")


def test_non_dicom_files_one_warning_with_count():
    with pytest.warns(DicomWarning) as rec:
        find_series(TREE)
    msgs = [str(w.message) for w in rec if "non-DICOM" in str(w.message)]
    assert len(msgs) == 1 and msgs[0].startswith("skipped 2 non-DICOM file(s), e.g.")


def test_descriptors_hold_no_patient_data():
    for d in _quiet_find(TREE / "98892001"):
        text = repr(d.to_dict()) + repr(d)
        assert "Anonymized" not in text and "98892001" not in text.replace(str(TREE), "")


def test_convert_whole_tree_reports_and_skips(tmp_path):
    report = dicom2nifti(TREE, tmp_path / "out")
    conv = {c["id"]: c for c in report["converted"]}
    reasons = " | ".join(s["reason"] for s in report["skipped"])
    assert "no pixel data" in reasons and "DICOMDIR" in reasons and "no place in patient space" in reasons
    assert sum(1 for s in report["skipped"] if "no place" in s["reason"]) == 3  # the CR projections
    ct5n = next(d for d in _quiet_find(TREE / "98892001" / "CT5N"))
    assert ct5n.id in conv and conv[ct5n.id]["shape"] == [16, 16, 5]
    ct2 = [c for c in report["converted"] if c["n_slices"] == 4][0]
    assert "gap" in ct2["warnings"][0]
    assert len(report["converted"]) == 21
    img = LoadImage(image_only=True)(str(tmp_path / "out" / conv[ct5n.id]["file"]))
    ref = LoadImage(reader="ITKReader", image_only=True)(str(TREE / "98892001" / "CT5N"))
    np.testing.assert_array_equal(img.numpy(), ref.numpy())
    np.testing.assert_allclose(img.affine.numpy(), ref.affine.numpy(), atol=1e-4)
    assert not [f for f in os.listdir(tmp_path / "out") if f.startswith(".tmp")]


def test_corrupt_file_in_tree_is_reported_and_rest_converted(tmp_path):
    shutil.copytree(TREE / "98892001", tmp_path / "in")
    good = (tmp_path / "in" / "CT5N" / "2062").read_bytes()
    (tmp_path / "in" / "CT5N" / "broken").write_bytes(good[:3227])  # cut inside a header value
    with pytest.warns(DicomWarning, match="corrupt or truncated DICOM header"):
        parts = find_series(tmp_path / "in")
    assert len(parts) == 3
    report = dicom2nifti(tmp_path / "in", tmp_path / "out")
    assert len(report["converted"]) == 3
    assert any("broken" in s["example"] and "corrupt" in s["reason"] for s in report["skipped"])


def test_folder_without_dicom_raises(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(FileNotFoundError, match="no DICOM files"), pytest.warns(DicomWarning):
        find_series(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_series(tmp_path / "missing")
