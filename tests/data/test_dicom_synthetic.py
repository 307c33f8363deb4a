"""DICOM series written in the test: ordering, gaps, round trips (NIfTI, enhanced CT, SEG, RTSTRUCT), CLI."""

from __future__ import annotations

import json
import os
import shutil
import warnings

import numpy as np
import pydicom
import pytest
from monai.transforms import LoadImage, LoadImaged
from pydicom.dataset import Dataset, FileMetaDataset

from monai_ext.cli import main
from monai_ext.data.dicom import (
    DicomReadError,
    DicomSeriesReader,
    DicomWarning,
    dicom2nifti,
    find_series,
    read_rtstruct,
    read_seg,
    read_series,
    write_seg,
)
from monai_ext.data.nifti import load_nifti
from monai_ext.data.synthetic._dicom import write_ct_series

SHAPE = (12, 10, 8)


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    """A CT series (HU volume known) written by the synthetic generator; returns (folder, hu, info)."""
    rng = np.random.default_rng(0)
    hu = rng.integers(-1000, 2000, size=SHAPE).astype(np.int16)
    folder = tmp_path_factory.mktemp("ct") / "series"
    info = write_ct_series(folder, hu, spacing=(0.7, 0.8, 2.5), origin=(10, 20, 30), uid_seed=("test", 0))
    return folder, hu, info


def _copy(ct, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(ct[0], dst)
    return dst, sorted(dst.iterdir())


def test_loads_hu_with_itk_geometry(ct):
    folder, hu, _ = ct
    img = LoadImage(reader=DicomSeriesReader(), image_only=True)(str(folder))
    ref = LoadImage(reader="ITKReader", image_only=True)(str(folder))
    np.testing.assert_array_equal(img.numpy(), hu[::-1, ::-1, :])  # generator writes L,P,S voxel order
    np.testing.assert_array_equal(img.numpy(), ref.numpy())
    np.testing.assert_allclose(img.affine.numpy(), ref.affine.numpy(), atol=1e-5)
    d = LoadImaged("image", reader=DicomSeriesReader(), ensure_channel_first=True)({"image": str(folder)})
    assert d["image"].shape == (1, *SHAPE) and d["image"].meta["modality"] == "CT"


def test_list_of_files_and_scrambled_instance_numbers(ct, tmp_path):
    folder, hu, _ = ct
    dst, files = _copy(ct, tmp_path)
    perm = np.random.default_rng(1).permutation(len(files))
    for f, n in zip(files, perm):
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = int(n) + 1
        ds.save_as(f)
    for f in files:  # file names no longer follow position either
        os.replace(f, dst / f"x{pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber:03d}.dcm")
    vol = read_series(dst)
    np.testing.assert_array_equal(vol.array, hu[::-1, ::-1, :])
    img = LoadImage(reader=DicomSeriesReader(), image_only=True)(sorted(str(p) for p in dst.iterdir()))
    np.testing.assert_array_equal(img.numpy(), hu[::-1, ::-1, :])


def test_missing_slice_warns_with_gap(ct, tmp_path):
    dst, files = _copy(ct, tmp_path)
    os.remove(files[3])
    with pytest.warns(
        DicomWarning, match=r"gap\(s\) of 5\.000 mm after slice 2.*measured steps \[2\.500, 5\.000\]"
    ):
        vol = read_series(dst)
    np.testing.assert_array_equal(vol.array, np.delete(ct[1][::-1, ::-1, :], 3, axis=2))
    with pytest.raises(DicomReadError, match="strict"):
        LoadImage(reader=DicomSeriesReader(strict=True), image_only=True).readers[-1].read(str(dst))


def test_duplicate_and_non_uniform_positions(ct, tmp_path):
    dst, files = _copy(ct, tmp_path)
    ds = pydicom.dcmread(files[5])
    ds.ImagePositionPatient = pydicom.dcmread(files[4]).ImagePositionPatient
    ds.InstanceNumber = 99
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(dst / "dup.dcm")
    with pytest.warns(DicomWarning, match="1 duplicate slice position"):
        vol = read_series(dst)
    assert vol.array.shape == SHAPE  # the duplicate (higher InstanceNumber) was dropped
    os.remove(dst / "dup.dcm")
    ds = pydicom.dcmread(files[4])
    ds.ImagePositionPatient = [float(v) for v in ds.ImagePositionPatient[:2]] + [
        float(ds.ImagePositionPatient[2]) + 0.4
    ]
    ds.save_as(files[4])
    with pytest.warns(
        DicomWarning, match=r"non-uniform slice spacing; measured steps \[2\.100, 2\.500, 2\.900\]"
    ):
        read_series(dst)


def test_inconsistent_slice_size_is_split_and_reported(ct, tmp_path):
    dst, files = _copy(ct, tmp_path)
    ds = pydicom.dcmread(files[0])
    ds.Rows = ds.Rows - 2
    ds.PixelData = ds.PixelData[: ds.Rows * ds.Columns * 2]
    ds.save_as(files[0])
    parts = find_series(dst)
    assert sorted(p.n_slices for p in parts) == [1, SHAPE[2] - 1]
    with pytest.raises(DicomReadError, match="holds 2 series parts"):
        read_series(dst)


def test_nifti_round_trip_same_hu(ct, tmp_path):
    folder, hu, _ = ct
    report = dicom2nifti(folder, tmp_path / "nii")
    (entry,) = report["converted"]
    img = load_nifti(tmp_path / "nii" / entry["file"])
    ref = read_series(folder)
    np.testing.assert_array_equal(img.numpy(), hu[::-1, ::-1, :])
    np.testing.assert_allclose(img.affine.numpy(), ref.affine, atol=1e-5)
    side = json.loads((tmp_path / "nii" / entry["file"].replace(".nii.gz", ".json")).read_text())
    assert side["Units"] == "HU" and side["Shape"] == list(SHAPE) and "PatientName" not in side


def test_enhanced_multiframe_ct_same_hu_and_affine(ct, tmp_path):
    hd = pytest.importorskip("highdicom")
    folder, hu, info = ct
    legacy = [pydicom.dcmread(f) for f in info["files"]]
    mf = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=legacy,
        series_instance_uid=hd.UID(),
        series_number=2,
        sop_instance_uid=hd.UID(),
        instance_number=1,
    )
    mf.save_as(tmp_path / "enhanced.dcm")
    vol = read_series(tmp_path / "enhanced.dcm")
    ref = read_series(folder)
    assert vol.descriptor.kind == "multiframe" and "PerFrameFunctionalGroupsSequence" in mf
    np.testing.assert_array_equal(vol.array, hu[::-1, ::-1, :])
    np.testing.assert_allclose(vol.affine, ref.affine, atol=1e-5)


def test_seg_round_trip(ct, tmp_path):
    pytest.importorskip("highdicom")
    folder, _, _ = ct
    vol = read_series(folder)
    label = np.zeros(SHAPE, np.uint8)
    label[2:6, 3:7, 1:4] = 1
    label[7:10, 1:4, 2:6] = 2
    write_seg(label, vol, ["liver", "spleen"], tmp_path / "seg" / "seg.dcm")
    seg = pydicom.dcmread(tmp_path / "seg" / "seg.dcm")
    assert (
        seg.Modality == "SEG" and len(seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence) == SHAPE[2]
    )
    back, names = read_seg(tmp_path / "seg" / "seg.dcm", folder)
    np.testing.assert_array_equal(back, label)
    assert names == ["liver", "spleen"]
    # each segment coded from its name (SNOMED CT), as PACS viewers show it
    codes = []
    for d in seg.SegmentSequence:
        category, prop = d.SegmentedPropertyCategoryCodeSequence[0], d.SegmentedPropertyTypeCodeSequence[0]
        codes.append((category.CodeMeaning, prop.CodeValue))
    assert codes == [("Anatomical Structure", "10200004"), ("Anatomical Structure", "78961009")]
    with pytest.raises(ValueError, match="label has shape"):
        write_seg(label[:-1], vol, ["a", "b"])


def test_rtstruct_contours_rasterised_on_source_grid(ct, tmp_path):
    folder, _, _ = ct
    vol = read_series(folder)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ vol.affine

    def contour(c0, c1, r0, r1, k, ref=True):  # box around pixel centres c0..c1, r0..r1 on slice k
        corners = [(c0 - 0.5, r0 - 0.5), (c1 + 0.5, r0 - 0.5), (c1 + 0.5, r1 + 0.5), (c0 - 0.5, r1 + 0.5)]
        c = Dataset()
        c.ContourGeometricType, c.NumberOfContourPoints = "CLOSED_PLANAR", 4
        c.ContourData = [float(x) for cc, rr in corners for x in (lps @ [cc, rr, k, 1])[:3]]
        if ref:
            item = Dataset()
            item.ReferencedSOPInstanceUID = vol.headers[k].SOPInstanceUID
            c.ContourImageSequence = [item]
        return c

    rt = Dataset()
    rt.SOPClassUID, rt.SOPInstanceUID, rt.Modality = (
        "1.2.840.10008.5.1.4.1.1.481.3",
        pydicom.uid.generate_uid(),
        "RTSTRUCT",
    )
    roi = Dataset()
    roi.ROINumber, roi.ROIName = 3, "box"
    rt.StructureSetROISequence = [roi]
    rc = Dataset()
    rc.ReferencedROINumber = 3
    rc.ContourSequence = [contour(2, 8, 1, 7, 2), contour(4, 5, 3, 4, 2), contour(3, 6, 2, 5, 4, ref=False)]
    rt.ROIContourSequence = [rc]
    rt.file_meta = FileMetaDataset()
    rt.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    rt.file_meta.MediaStorageSOPClassUID, rt.file_meta.MediaStorageSOPInstanceUID = (
        rt.SOPClassUID,
        rt.SOPInstanceUID,
    )
    rt.save_as(tmp_path / "rt.dcm", enforce_file_format=True)
    labels, names = read_rtstruct(tmp_path / "rt.dcm", vol)
    expected = np.zeros(SHAPE, np.uint16)
    expected[2:9, 1:8, 2] = 1
    expected[4:6, 3:5, 2] = 0  # the inner contour is a hole
    expected[3:7, 2:6, 4] = 1  # contour without a reference: placed by position
    assert names == ["box"]
    np.testing.assert_array_equal(labels, expected)
    with pytest.raises(DicomReadError, match="not an RTSTRUCT"):
        read_rtstruct(vol.descriptor.files[0], vol)


def test_cli_anonymize_and_bad_series(ct, tmp_path, capsys):
    folder, _, _ = ct
    assert main(["dicom2nifti", str(folder), str(tmp_path / "o"), "--anonymize"]) == 0
    files = sorted(os.listdir(tmp_path / "o"))
    assert len([f for f in files if f.endswith(".nii.gz")]) == 1
    assert not any("SYNTH" in f for f in files)
    side = json.loads((tmp_path / "o" / [f for f in files if f.startswith("s")][0]).read_text())
    assert not {"PatientID", "PatientName", "StudyInstanceUID", "StudyDate"} & set(side)
    assert main(["dicom2nifti", str(folder), str(tmp_path / "p")]) == 0
    assert any(f.startswith("SYNTH000_") for f in os.listdir(tmp_path / "p"))
    assert main(["dicom2nifti", str(folder), str(tmp_path / "q"), "--series", "nope"]) == 2
    assert "--series nope not found" in capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["dicom2nifti", str(folder), str(tmp_path / "r"), "--list"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["n_slices"] == SHAPE[2]


def test_segment_codes_from_names():
    pytest.importorskip("highdicom")
    from monai_ext.data.dicom import segment_codes

    def meanings(name):
        return tuple(c.meaning for c in segment_codes(name))

    assert meanings("left kidney") == ("Anatomical Structure", "Kidney")
    assert meanings("Right_Kidney") == ("Anatomical Structure", "Kidney")
    assert meanings("spine") == ("Anatomical Structure", "Spine")
    assert meanings("tumour") == ("Morphologically Abnormal Structure", "Tumor")
    assert meanings("nodule") == ("Morphologically Abnormal Structure", "Nodule")
    assert meanings("widget xyz") == ("Tissue", "Tissue")  # unknown: the generic code, label kept
