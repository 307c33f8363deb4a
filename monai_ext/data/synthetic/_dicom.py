"""Write a 3D Hounsfield-unit volume as a CT DICOM series (one file per slice) with pydicom.

Geometry convention: the volume is given in the same voxel order and RAS world frame as the NIfTI
written next to it (``affine`` maps voxel ``(i, j, k)`` to RAS millimetres; by default the diagonal
``diag(spacing)`` with ``origin``). DICOM patient coordinates are LPS (``x_lps = -x_ras``,
``y_lps = -y_ras``), so the writer first reorients the voxels to the closest LPS-aligned order
(nibabel axis codes ``L, P, S``): columns run towards the patient's left, rows towards posterior and
slices from inferior to superior, i.e. a standard axial series with ImageOrientationPatient
``[1, 0, 0, 0, 1, 0]`` for any axis-aligned input. ITK (and MONAI's ``ITKReader``) reading the folder
therefore gives the NIfTI voxels flipped along the first two axes, with the RAS affine
``diag(-1, -1, 1) @`` the LPS one; both describe the same world positions.

Stored values are ``uint16`` with ``RescaleSlope 1`` and ``RescaleIntercept -1024`` (HU below
-1024 are clipped). UIDs come from :func:`pydicom.uid.generate_uid` with entropy sources derived from
``uid_seed``, dates are fixed, so the same input gives byte-identical files.

Example:
    >>> import numpy as np, tempfile
    >>> vol = np.full((8, 6, 3), 40, dtype=np.int16)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     info = write_ct_series(d, vol, spacing=(0.8, 0.8, 3.0), uid_seed=("demo", 0))
    ...     len(info["files"])
    3
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CT_IMAGE_STORAGE", "RESCALE_INTERCEPT", "series_uids", "write_ct_series"]

#: SOP Class UID of CT Image Storage.
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: RescaleIntercept used for the uint16 stored values (HU = stored + intercept).
RESCALE_INTERCEPT = -1024
_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def series_uids(uid_seed: Sequence[Any]) -> dict[str, str]:
    """Deterministic Study/Series/FrameOfReference UIDs for the entropy sources ``uid_seed``."""
    from pydicom.uid import generate_uid

    src = [str(s) for s in uid_seed]
    return {
        "StudyInstanceUID": generate_uid(entropy_srcs=[*src, "study"]),
        "SeriesInstanceUID": generate_uid(entropy_srcs=[*src, "series"]),
        "FrameOfReferenceUID": generate_uid(entropy_srcs=[*src, "frame-of-reference"]),
    }


def _lps_oriented(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient ``volume`` (RAS ``affine``) to the closest L, P, S voxel order; return (volume, affine)."""
    import nibabel.orientations as nio

    cur = nio.io_orientation(affine)
    tr = nio.ornt_transform(cur, nio.axcodes2ornt(("L", "P", "S")))
    out = nio.apply_orientation(volume, tr)
    return np.ascontiguousarray(out), affine @ nio.inv_ornt_aff(tr, volume.shape)


def _fmt(values: Sequence[float]) -> list[str]:
    """Decimal strings (DS) with at most 16 characters."""
    out = []
    for v in values:
        s = f"{float(v):.6f}".rstrip("0").rstrip(".")
        out.append("0" if s in ("-0", "") else s[:16])
    return out


def write_ct_series(
    folder: str | os.PathLike,
    hu_volume: np.ndarray,
    spacing: Sequence[float] | None = None,
    origin: Sequence[float] | None = None,
    *,
    affine: np.ndarray | None = None,
    uid_seed: Sequence[Any] = ("monai_ext", 0),
    uids: dict[str, str] | None = None,
    patient_name: str = "SYNTHETIC^CASE000",
    patient_id: str = "SYNTH000",
    description: str = "synthetic CT",
    series_number: int = 1,
    study_date: str = "20000101",
    body_part: str = "ABDOMEN",
    file_pattern: str = "slice_{:04d}.dcm",
) -> dict[str, Any]:
    """Write ``hu_volume`` (x, y, z, in HU) as a CT Image Storage series, one file per slice.

    Args:
        folder: output folder (created); files are written to temporary names and renamed.
        hu_volume: 3D array in Hounsfield units, voxel order matching ``affine``.
        spacing: voxel size in mm (x, y, z) of the default diagonal RAS affine.
        origin: RAS world position (mm) of voxel (0, 0, 0) for the default affine.
        affine: 4x4 RAS affine (NIfTI convention) instead of ``spacing``/``origin``; its voxel axes
            must be orthogonal (no gantry tilt).
        uid_seed: entropy sources for the UIDs (e.g. ``("ct_abdomen", seed, case)``).
        uids: explicit Study/Series/FrameOfReference UIDs (override ``uid_seed``).
        patient_name, patient_id: synthetic, non-identifying values.
        description: SeriesDescription (StudyDescription too).

    Returns:
        dict with ``files`` (paths, slice order inferior to superior), the UIDs, the LPS affine of
        the written voxel order and ``pixel_spacing`` / ``slice_spacing``.

    Raises:
        ValueError: ``hu_volume`` is not 3D, or neither ``spacing`` nor ``affine`` is given, or the
            affine's axes are not orthogonal.
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    vol = np.asarray(hu_volume)
    if vol.ndim != 3:
        raise ValueError(f"argument hu_volume must be a 3D (x, y, z) array, got shape {vol.shape}")
    if affine is None:
        if spacing is None or len(spacing) != 3:
            raise ValueError(
                f"argument spacing must give 3 voxel sizes in mm (or pass affine), got {spacing!r}"
            )
        affine = np.diag([*map(float, spacing), 1.0])
        if origin is not None:
            affine[:3, 3] = [float(o) for o in origin]
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4):
        raise ValueError(f"argument affine must be 4x4, got shape {affine.shape}")
    vol, ras = _lps_oriented(vol, affine)
    lps = _LPS_FROM_RAS @ ras
    zooms = np.linalg.norm(lps[:3, :3], axis=0)
    if np.any(zooms <= 0):
        raise ValueError(f"argument affine has a zero-length voxel axis: {zooms.tolist()}")
    dirs = lps[:3, :3] / zooms
    if (
        abs(dirs[:, 0] @ dirs[:, 1]) > 1e-4
        or np.linalg.norm(np.cross(dirs[:, 0], dirs[:, 1]) - dirs[:, 2]) > 1e-4
    ):
        raise ValueError("argument affine must have orthogonal voxel axes (tilted series are not supported)")
    stored = np.clip(np.rint(vol.astype(np.float64)) - RESCALE_INTERCEPT, 0, 65535).astype(np.uint16)

    ids = dict(uids) if uids is not None else series_uids(uid_seed)
    src = [str(s) for s in uid_seed]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    iop = _fmt([*dirs[:, 0], *dirs[:, 1]])
    pixel_spacing = _fmt([zooms[1], zooms[0]])  # DICOM: row spacing (between rows), column spacing
    files = []
    legacy = int(pydicom.__version__.split(".")[0]) < 3
    for k in range(vol.shape[2]):
        sop = generate_uid(entropy_srcs=[*src, ids["SeriesInstanceUID"], "slice", str(k)])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        path = folder / file_pattern.format(k)
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        if legacy:  # pragma: no cover - pydicom 2.x
            ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = sop
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = study_date
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = "120000"
        ds.AccessionNumber = ""
        ds.Modality = "CT"
        ds.Manufacturer = "monai_ext synthetic"
        ds.InstitutionName = "SYNTHETIC"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = description
        ds.SeriesDescription = description
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.PatientIdentityRemoved = "YES"
        ds.BodyPartExamined = body_part
        ds.SliceThickness = _fmt([zooms[2]])[0]
        ds.SpacingBetweenSlices = _fmt([zooms[2]])[0]
        ds.KVP = "120"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = ids["StudyInstanceUID"]
        ds.SeriesInstanceUID = ids["SeriesInstanceUID"]
        ds.StudyID = "1"
        ds.SeriesNumber = int(series_number)
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        pos = lps @ np.array([0.0, 0.0, float(k), 1.0])
        ds.ImagePositionPatient = _fmt(pos[:3])
        ds.ImageOrientationPatient = iop
        ds.FrameOfReferenceUID = ids["FrameOfReferenceUID"]
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _fmt([pos[2]])[0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(vol.shape[1]), int(vol.shape[0])
        ds.PixelSpacing = pixel_spacing
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.RescaleIntercept = str(RESCALE_INTERCEPT)
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # (rows, columns)
        tmp = path.with_name(f".{path.name}.tmp")
        if legacy:  # pragma: no cover - pydicom 2.x
            ds.save_as(str(tmp), write_like_original=False)
        else:
            ds.save_as(str(tmp), enforce_file_format=True)
        os.replace(tmp, path)
        files.append(str(path))
    return {
        "files": files,
        **ids,
        "lps_affine": lps,
        "pixel_spacing": [float(zooms[1]), float(zooms[0])],
        "slice_spacing": float(zooms[2]),
    }
