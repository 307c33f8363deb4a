"""SaveDicomSeg / SaveDicomSegd: a prediction inverted onto a DICOM series' grid becomes a DICOM SEG that
references the series and reads back voxel for voxel; non-DICOM inputs are skipped; wrong grids refused."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, Invertd, LoadImaged, Orientationd, Spacingd

from monai_ext.data.dicom import DicomSeriesReader, read_seg, read_series
from monai_ext.data.dicom.seg_saver import SaveDicomSeg, SaveDicomSegd, segment_names_from
from monai_ext.data.nifti import write_nifti
from monai_ext.data.synthetic._dicom import write_ct_series

SHAPE = (12, 10, 8)
CHANNEL_DEF = {"0": "background", "1": "liver", "2": "spleen", "3": "kidney"}


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A small CT series (HU: a ramp along x plus noise, so HU bands are slabs); returns (folder, hu)."""
    rng = np.random.default_rng(3)
    ramp = np.linspace(-200, 300, SHAPE[0])[:, None, None] + rng.normal(0, 15, SHAPE)
    hu = np.round(ramp).astype(np.int16)
    folder = tmp_path_factory.mktemp("seg_saver") / "case_a"
    write_ct_series(folder, hu, spacing=(0.9, 0.8, 2.5), origin=(5, -7, 12), uid_seed=("seg_saver", 0))
    return folder, hu


def _loaded(folder):
    return LoadImaged("image", reader=DicomSeriesReader(), ensure_channel_first=True)({"image": str(folder)})[
        "image"
    ]


def _label(image) -> MetaTensor:
    """Labels 1..3 by HU band on slices 1..5, background elsewhere; same grid and meta as ``image``."""
    x = image[0].numpy()
    lab = np.zeros(x.shape, np.uint8)
    lab[x > 0] = 1
    lab[x > 100] = 2
    lab[x > 200] = 3
    lab[..., [0, 6, 7]] = 0
    return MetaTensor(torch.as_tensor(lab[None]), meta=dict(image.meta))


def _expected_frames(lab: np.ndarray, n_segments: int) -> int:
    return sum(int((lab[..., z] == k).any()) for k in range(1, n_segments + 1) for z in range(lab.shape[-1]))


def test_segment_names_from_channel_def():
    assert segment_names_from(CHANNEL_DEF) == ["liver", "spleen", "kidney"]
    assert segment_names_from({2: "b", 1: "a"}) == ["a", "b"]
    assert segment_names_from(("a", "b")) == ["a", "b"]
    with pytest.raises(ValueError, match="1..N"):
        segment_names_from({"0": "background", "2": "spleen"})
    with pytest.raises(ValueError, match="at least one"):
        segment_names_from({"0": "background"})
    with pytest.raises(ValueError, match="label values"):
        segment_names_from({"liver": "x"})
    with pytest.raises(ValueError, match="list of names"):
        segment_names_from("liver")


def test_seg_references_series_and_reads_back(series, tmp_path):
    folder, _ = series
    image = _loaded(folder)
    label = _label(image)
    data = {"image": image, "pred": label}
    out = SaveDicomSegd("pred", output_dir=tmp_path / "out", segment_names=CHANNEL_DEF)(data)
    assert out["pred"] is label and out["image"] is image  # passes through
    path = tmp_path / "out" / "case_a_seg.dcm"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["case_a_seg.dcm"]

    ds = pydicom.dcmread(path)
    src = read_series(folder)
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["liver", "spleen", "kidney"]
    lab = label[0].numpy()
    assert int(ds.NumberOfFrames) == _expected_frames(lab, 3)
    ref = ds.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == src.headers[0].SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in ref.ReferencedInstanceSequence} == {
        h.SOPInstanceUID for h in src.headers
    }
    assert ds.StudyInstanceUID == src.headers[0].StudyInstanceUID
    assert ds.FrameOfReferenceUID == src.headers[0].FrameOfReferenceUID
    back, names = read_seg(path, folder)
    assert names == ["liver", "spleen", "kidney"]
    np.testing.assert_array_equal(back, lab)


def test_prediction_inverted_from_a_resampled_grid(series, tmp_path):
    """The bundle's path: resample for the network, invert back, then save on the series."""
    folder, hu = series
    pre = Compose(
        [
            LoadImaged("image", reader=DicomSeriesReader()),
            EnsureChannelFirstd("image"),
            Orientationd("image", axcodes="RAS"),
            Spacingd("image", pixdim=(1.6, 1.6, 4.0), mode="nearest"),
        ]
    )
    d = pre({"image": str(folder)})
    d["pred"] = MetaTensor((d["image"] > 100).to(torch.uint8), meta=dict(d["image"].meta))
    d = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True)(d)
    SaveDicomSeg(tmp_path, {"0": "background", "1": "dense"}, output_postfix="mask")(d["pred"])
    back, names = read_seg(tmp_path / "case_a_mask.dcm", folder)
    assert names == ["dense"] and back.shape == SHAPE
    np.testing.assert_array_equal(back, d["pred"][0].numpy())
    # nearest resampling there and back keeps most voxels of the direct threshold (LPS -> reader layout)
    direct = (hu[::-1, ::-1, :] > 100).astype(np.uint16)
    assert (back == direct).mean() > 0.85


def test_source_key_and_list_of_files(series, tmp_path):
    folder, _ = series
    image = _loaded(folder)
    plain = torch.as_tensor(_label(image).numpy())  # no meta: the source comes from the image
    SaveDicomSegd("pred", source_key="image", output_dir=tmp_path, segment_names=["a", "b", "c"])(
        {"image": image, "pred": plain}
    )
    assert (tmp_path / "case_a_seg.dcm").is_file()
    files = sorted(str(p) for p in folder.iterdir())
    path = SaveDicomSeg(tmp_path / "files", ["a", "b", "c"])(plain, files)
    assert path == tmp_path / "files" / "case_a_seg.dcm" and path.is_file()
    with pytest.raises(KeyError, match="source_key 'img'"):
        SaveDicomSegd("pred", source_key="img", output_dir=tmp_path, segment_names=["a"])({"pred": plain})
    with pytest.raises(ValueError, match="no source series"):
        SaveDicomSeg(tmp_path, ["a", "b", "c"])(plain)


def test_non_dicom_source_is_skipped_or_refused(tmp_path):
    nii = write_nifti(np.zeros(SHAPE, np.int16), np.eye(4), tmp_path / "ct.nii.gz")
    label = MetaTensor(torch.zeros(1, *SHAPE), meta={"filename_or_obj": str(nii)})
    saver = SaveDicomSeg(tmp_path / "out", ["liver"])
    assert saver(label) is None and not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=r"ct\.nii\.gz is not a DICOM"):
        SaveDicomSeg(tmp_path / "out", ["liver"], skip_non_dicom=False)(label)


def test_label_off_the_series_grid_is_refused(series, tmp_path):
    folder, _ = series
    label = _label(_loaded(folder))
    shifted = label.clone()
    shifted.affine[0, 3] += 2.0
    with pytest.raises(ValueError, match=r"differs from the grid of series .*case_a.*Invertd"):
        SaveDicomSeg(tmp_path, ["a", "b", "c"])(shifted)
    with pytest.raises(ValueError, match="expected the series"):
        SaveDicomSeg(tmp_path, ["a", "b", "c"])(label[:, :-1], str(folder))  # wrong shape, no meta check
    with pytest.raises(ValueError, match="3 channels.*argmax"):
        SaveDicomSeg(tmp_path, ["a", "b", "c"])(torch.zeros(3, *SHAPE), str(folder))
    with pytest.raises(ValueError, match="segment_names has 1"):
        SaveDicomSeg(tmp_path, ["a"])(label)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
