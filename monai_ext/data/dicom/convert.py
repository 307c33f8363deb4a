"""DICOM tree -> NIfTI files with a JSON sidecar of non-identifying metadata, one per series part.

File names: ``<PatientID>_<SeriesNumber>_<Modality>_<part id>.nii.gz`` by default, or
``<part id>_<Modality>.nii.gz`` with ``anonymize=True``. Sidecars never hold patient names, IDs or birth
dates; with ``anonymize=True`` they also drop study/series UIDs and dates. Series that cannot form an
image with a place in patient space (no pixel data, no geometry, unreadable or undecodable files, and
with ``strict=True`` gaps or non-uniform spacing) are reported and skipped; the rest is converted.
Every output is written to a temporary name and renamed.

Example:
    >>> from monai_ext.data.dicom import dicom2nifti
    >>> # report = dicom2nifti("/data/export", "/data/nifti", anonymize=True)
    >>> # [c["file"] for c in report["converted"]], report["skipped"]
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_ext.data.dicom.reader import DicomVolume, load_part
from monai_ext.data.dicom.series import DicomReadError, SeriesDescriptor, scan
from monai_ext.data.nifti import write_nifti

__all__ = ["dicom2nifti", "sidecar", "SIDECAR_TAGS"]

#: acquisition attributes copied to the sidecar (none identifies a patient)
SIDECAR_TAGS = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "SeriesDescription",
    "ProtocolName",
    "SeriesNumber",
    "BodyPartExamined",
    "ImageType",
    "SliceThickness",
    "KVP",
    "ConvolutionKernel",
    "MagneticFieldStrength",
    "RepetitionTime",
    "EchoTime",
    "InversionTime",
    "FlipAngle",
    "ScanningSequence",
    "SequenceVariant",
    "PatientPosition",
    "ContrastBolusAgent",
)
_IDENTIFYING_LINKS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "StudyDate",
    "SeriesDate",
)


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | float):
        return v
    if isinstance(v, bytes):
        return None
    if hasattr(v, "__iter__") and not isinstance(v, str):
        return [_jsonable(x) for x in v]
    return str(v)


def sidecar(vol: DicomVolume, anonymize: bool = False) -> dict[str, Any]:
    """Non-identifying metadata of a loaded series (plus study/series UIDs and dates unless ``anonymize``)."""
    h = vol.headers[0]
    out: dict[str, Any] = {t: _jsonable(h.get(t)) for t in SIDECAR_TAGS if h.get(t) not in (None, "")}
    d = vol.descriptor
    out.update(
        {
            "SeriesPartId": d.id,
            "Kind": d.kind,
            "Shape": list(vol.array.shape),
            "VoxelSpacing": [round(float(v), 6) for v in np.linalg.norm(vol.affine[:3, :3], axis=0)],
            "Affine": np.round(vol.affine, 6).tolist(),
            "AffineSpace": "RAS",
            "Units": "HU" if d.modality == "CT" else "stored values x RescaleSlope + RescaleIntercept",
            "SpacingIssues": list(d.issues),
            "TransferSyntaxUID": str(h.file_meta.get("TransferSyntaxUID", ""))
            if hasattr(h, "file_meta")
            else "",
            "NumberOfSourceFiles": len(d.files),
            "ConversionSoftware": "monai-ext dicom2nifti",
        }
    )
    if "slice_positions" in vol.meta:
        out["SlicePositionsAlongNormal"] = [round(float(p), 4) for p in vol.meta["slice_positions"]]
    if not anonymize:
        out.update({t: str(h.get(t)) for t in _IDENTIFYING_LINKS if h.get(t) not in (None, "")})
    return out


def _safe(text: str, fallback: str) -> str:
    s = re.sub(r"[^A-Za-z0-9.-]+", "-", str(text)).strip("-.")
    return s[:40] or fallback


def _write_json(data: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _file_stem(d: SeriesDescriptor, vol: DicomVolume, anonymize: bool) -> str:
    if anonymize:
        return f"{d.id}_{_safe(d.modality, 'OT')}"
    h = vol.headers[0]
    return (
        f"{_safe(h.get('PatientID', ''), 'anon')}_{d.series_number or 0:03d}_{_safe(d.modality, 'OT')}_{d.id}"
    )


def dicom2nifti(
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    series: Sequence[str] | str | None = None,
    anonymize: bool = False,
    strict: bool = False,
) -> dict[str, Any]:
    """Convert every series part under ``in_dir`` (or those in ``series``) to NIfTI + JSON in ``out_dir``.

    Returns a report ``{"converted": [...], "skipped": [...], "non_dicom": n}`` (also written to
    ``out_dir/dicom2nifti_report.json``); each skipped entry names the series part or file and the reason.

    Raises:
        FileNotFoundError: ``in_dir`` does not exist or holds no DICOM file.
        ValueError: a requested ``series`` id is not found.
    """
    if not Path(in_dir).expanduser().exists():
        raise FileNotFoundError(f"IN_DIR {str(in_dir)!r} does not exist")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = scan(in_dir, stop_before_pixels=True)
    if not report.series and not report.skipped:
        raise FileNotFoundError(
            f"IN_DIR {str(in_dir)!r} holds no DICOM files ({len(report.non_dicom)} other file(s))"
        )
    wanted = [series] if isinstance(series, str) else list(series or [])
    descs = report.series
    if wanted:
        known = {d.id for d in descs} | {d.series_instance_uid for d in descs}
        missing = [w for w in wanted if w not in known]
        if missing:
            raise ValueError(
                f"--series {', '.join(missing)} not found in {str(in_dir)!r}; found: "
                + ", ".join(d.id for d in descs)
            )
        descs = [d for d in descs if d.id in wanted or d.series_instance_uid in wanted]
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    converted: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = [
        {"files": len(paths), "example": paths[0], "reason": reason}
        for reason, paths in report.skipped_by_reason().items()
    ]
    for d in descs:
        entry = {"id": d.id, "modality": d.modality, "kind": d.kind, "n_slices": d.n_slices}
        if not d.has_geometry:
            skipped.append(
                {
                    **entry,
                    "reason": "no ImagePositionPatient/ImageOrientationPatient: no place in patient space",
                }
            )
            continue
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                vol = load_part(d.part, strict=strict)
        except DicomReadError as e:
            skipped.append({**entry, "reason": str(e)})
            continue
        stem = _file_stem(d, vol, anonymize)
        nii = write_nifti(vol.array, vol.affine, out / f"{stem}.nii.gz")
        _write_json(sidecar(vol, anonymize), out / f"{stem}.json")
        converted.append(
            {
                **entry,
                "file": nii.name,
                "shape": list(vol.array.shape),
                "warnings": [str(w.message) for w in caught],
            }
        )
    result = {"converted": converted, "skipped": skipped, "non_dicom": len(report.non_dicom)}
    _write_json(result, out / "dicom2nifti_report.json")
    return result
