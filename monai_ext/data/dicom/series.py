"""Find DICOM series in a folder tree from headers only, and split them into consistent parts.

A *series part* is a set of slices that can form one volume: same SeriesInstanceUID, orientation, size
and pixel spacing; when slices repeat positions, parts are also split by echo, temporal position or
acquisition number (whichever makes the positions unique). A differing AcquisitionNumber alone does
not split a series (CT scanners often number each rotation). Enhanced multi-frame files are one part
each. Descriptors hold no patient names or IDs.

Example:
    >>> from monai_ext.data.dicom import find_series
    >>> # for s in find_series("/data/pacs_export"): print(s.id, s.modality, s.shape, s.spacing)
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from monai_ext.data.dicom.geometry import check_spacing, slice_normal

__all__ = [
    "DicomReadError",
    "DicomWarning",
    "SliceRef",
    "SeriesPart",
    "SeriesDescriptor",
    "ScanReport",
    "scan",
    "find_series",
    "group_datasets",
    "list_files",
]

#: SOP classes that are not images to stack: DICOMDIR, SEG, RTSTRUCT, RT plan/dose, SR, key objects
NON_IMAGE_SOP = {
    "1.2.840.10008.1.3.10": "DICOMDIR (media directory)",
    "1.2.840.10008.5.1.4.1.1.66.4": "DICOM SEG (read it with read_seg)",
    "1.2.840.10008.5.1.4.1.1.481.3": "RTSTRUCT (read it with read_rtstruct)",
    "1.2.840.10008.5.1.4.1.1.481.5": "RT plan",
    "1.2.840.10008.5.1.4.1.1.481.2": "RT dose",
    "1.2.840.10008.5.1.4.1.1.88.11": "structured report",
    "1.2.840.10008.5.1.4.1.1.88.22": "structured report",
    "1.2.840.10008.5.1.4.1.1.88.33": "structured report",
    "1.2.840.10008.5.1.4.1.1.88.59": "key object selection",
}
DICOM_EXTRA_HINT = (
    "install the DICOM extra: pip install 'monai-ext[dicom]' (pylibjpeg plugins) or python-gdcm"
)


class DicomReadError(ValueError):
    """A DICOM file or series that cannot be read as asked; the message names the file and the fix."""


class DicomWarning(UserWarning):
    """Something a user must know about a DICOM series (gaps, skipped files), that does not stop loading."""


@dataclass
class SliceRef:
    """One 2D frame of a series part: file, frame index (multi-frame) and its geometry (LPS mm)."""

    path: str
    frame: int | None
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: tuple[float, float]
    instance_number: int
    sop_instance_uid: str
    slope: float = 1.0
    intercept: float = 0.0


@dataclass
class SeriesPart:
    """Slices of one consistent part of a series, sorted along the slice normal."""

    uid: str
    split_key: tuple
    header: Dataset
    slices: list[SliceRef]
    multiframe: bool = False

    @property
    def has_geometry(self) -> bool:
        return all(s.position is not None and s.orientation is not None for s in self.slices)

    @property
    def id(self) -> str:
        text = self.uid + "|" + repr(self.split_key) if self.split_key else self.uid
        return "s" + hashlib.sha1(text.encode()).hexdigest()[:11]

    def sort(self) -> None:
        """Sort by position along the slice normal (then InstanceNumber); keeps order if no geometry."""
        if self.has_geometry and self.slices:
            n = slice_normal(self.slices[0].orientation)
            self.slices.sort(key=lambda s: (round(float(np.dot(n, s.position)), 4), s.instance_number))
        else:
            self.slices.sort(key=lambda s: (s.instance_number, s.frame or 0))

    def normal_positions(self) -> list[float]:
        n = slice_normal(self.slices[0].orientation)
        return [float(np.dot(n, s.position)) for s in self.slices]


@dataclass
class SeriesDescriptor:
    """What :func:`find_series` reports for each series part (no patient names or IDs).

    ``kind`` is ``"volume"`` (several slices, one orientation), ``"image2d"`` (one slice) or
    ``"multiframe"`` (an enhanced multi-frame object); ``shape`` and ``spacing`` follow the (col, row, slice)
    array layout; ``issues`` lists spacing problems (gaps, duplicates, non-uniform steps).
    """

    id: str
    series_instance_uid: str
    modality: str
    description: str
    series_number: int | None
    kind: str
    n_slices: int
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    has_geometry: bool
    files: list[str] = field(repr=False)
    issues: list[str] = field(default_factory=list)
    part: SeriesPart | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no files, no patient data)."""
        return {
            "id": self.id,
            "modality": self.modality,
            "description": self.description,
            "series_number": self.series_number,
            "kind": self.kind,
            "n_slices": self.n_slices,
            "shape": list(self.shape),
            "spacing": [round(float(v), 6) for v in self.spacing],
            "has_geometry": self.has_geometry,
            "issues": list(self.issues),
        }


@dataclass
class ScanReport:
    """Result of :func:`scan`: series parts found, and every file skipped with the reason."""

    series: list[SeriesDescriptor]
    non_dicom: list[str]
    skipped: list[tuple[str, str]]
    datasets: dict[str, Dataset] = field(default_factory=dict, repr=False)

    def skipped_by_reason(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = defaultdict(list)
        for path, reason in self.skipped:
            out[reason].append(path)
        return dict(out)


def list_files(root: str | os.PathLike) -> list[str]:
    """All files under ``root`` (a folder) or ``[root]`` (a file), sorted; raises if it does not exist."""
    p = Path(root).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"DICOM input {str(root)!r} does not exist")
    if p.is_file():
        return [str(p)]
    return sorted(str(Path(d) / f) for d, _, fs in os.walk(p) for f in fs if not f.startswith("."))


def _read(path: str, stop_before_pixels: bool) -> Dataset | None:
    """Read a file; None if it is not DICOM (no preamble and no recognisable meta)."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        return None
    except Exception as e:  # truncated / corrupt headers
        raise DicomReadError(f"{path}: corrupt or truncated DICOM header ({type(e).__name__}: {e})") from e


def _f(v: Any, default: float) -> float:
    try:
        return float(v) if v is not None and v != "" else default
    except (TypeError, ValueError):
        return default


def _seq_item(ds: Dataset, seq: str) -> Dataset | None:
    s = ds.get(seq)
    return s[0] if s else None


def _fg(per_frame: Dataset | None, shared: Dataset | None, seq: str) -> Dataset | None:
    for group in (per_frame, shared):
        if group is not None:
            item = _seq_item(group, seq)
            if item is not None:
                return item
    return None


def frame_refs(ds: Dataset, path: str) -> list[SliceRef]:
    """One :class:`SliceRef` per frame: classic single-frame images or enhanced multi-frame objects."""
    inst = int(_f(ds.get("InstanceNumber"), 0))
    sop = str(ds.get("SOPInstanceUID", ""))
    n_frames = int(_f(ds.get("NumberOfFrames"), 1))
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if n_frames > 1 or per_frame is not None:
        shared = _seq_item(ds, "SharedFunctionalGroupsSequence")
        refs = []
        for i in range(n_frames):
            pf = per_frame[i] if per_frame is not None and i < len(per_frame) else None
            pos = _fg(pf, shared, "PlanePositionSequence")
            ori = _fg(pf, shared, "PlaneOrientationSequence")
            meas = _fg(pf, shared, "PixelMeasuresSequence")
            pvt = _fg(pf, shared, "PixelValueTransformationSequence")
            ps = meas.get("PixelSpacing") if meas is not None else ds.get("PixelSpacing")
            refs.append(
                SliceRef(
                    path=path,
                    frame=i,
                    position=None if pos is None else np.asarray(pos.ImagePositionPatient, float),
                    orientation=None if ori is None else np.asarray(ori.ImageOrientationPatient, float),
                    pixel_spacing=(_f(ps[0], 1.0), _f(ps[1], 1.0)) if ps else (1.0, 1.0),
                    instance_number=inst,
                    sop_instance_uid=sop,
                    slope=_f(pvt.get("RescaleSlope") if pvt is not None else ds.get("RescaleSlope"), 1.0),
                    intercept=_f(
                        pvt.get("RescaleIntercept") if pvt is not None else ds.get("RescaleIntercept"), 0.0
                    ),
                )
            )
        return refs
    ps = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    ipp, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    return [
        SliceRef(
            path=path,
            frame=None,
            position=np.asarray(ipp, float) if ipp else None,
            orientation=np.asarray(iop, float) if iop else None,
            pixel_spacing=(_f(ps[0], 1.0), _f(ps[1], 1.0)) if ps else (1.0, 1.0),
            instance_number=inst,
            sop_instance_uid=sop,
            slope=_f(ds.get("RescaleSlope"), 1.0),
            intercept=_f(ds.get("RescaleIntercept"), 0.0),
        )
    ]


def _not_image_reason(ds: Dataset) -> str | None:
    sop = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
    if sop in NON_IMAGE_SOP:
        return NON_IMAGE_SOP[sop]
    if "SeriesInstanceUID" not in ds:
        return "no SeriesInstanceUID"
    if "Rows" not in ds or "Columns" not in ds:
        return "no pixel data (no Rows/Columns)"
    return None


def _split_duplicates(
    slices: list[SliceRef], datasets: dict[str, Dataset]
) -> list[tuple[Any, list[SliceRef]]]:
    """Split slices repeating positions by echo / temporal position / acquisition, if that separates them."""
    if not all(s.position is not None for s in slices):
        return [((), slices)]
    keys = [tuple(np.round(s.position, 3)) for s in slices]
    if len(set(keys)) == len(keys):
        return [((), slices)]
    for tag in ("EchoNumbers", "TemporalPositionIdentifier", "AcquisitionNumber", "TriggerTime"):
        groups: dict[Any, list[SliceRef]] = defaultdict(list)
        for s in slices:
            groups[str(datasets[s.path].get(tag, ""))].append(s)
        if len(groups) > 1 and all(
            len({tuple(np.round(s.position, 3)) for s in g}) == len(g) for g in groups.values()
        ):
            return [((tag, v), g) for v, g in sorted(groups.items())]
    return [((), slices)]


def group_datasets(items: Iterable[tuple[str, Dataset]]) -> tuple[list[SeriesPart], list[tuple[str, str]]]:
    """Group (path, dataset) pairs into consistent :class:`SeriesPart` objects; return (parts, skipped)."""
    by_uid: dict[str, list[tuple[str, Dataset]]] = defaultdict(list)
    skipped: list[tuple[str, str]] = []
    for path, ds in items:
        reason = _not_image_reason(ds)
        if reason:
            skipped.append((path, reason))
        else:
            by_uid[str(ds.SeriesInstanceUID)].append((path, ds))
    parts: list[SeriesPart] = []
    for uid, members in by_uid.items():
        datasets = dict(members)
        sub: dict[tuple, list[SliceRef]] = defaultdict(list)
        for path, ds in members:
            refs = frame_refs(ds, path)
            if len(refs) > 1 or refs[0].frame is not None:
                parts.append(
                    SeriesPart(
                        uid=uid, split_key=("file", Path(path).name), header=ds, slices=refs, multiframe=True
                    )
                )
                continue
            r = refs[0]
            key = (
                None if r.orientation is None else tuple(np.round(r.orientation, 4) + 0.0),
                int(ds.Rows),
                int(ds.Columns),
                tuple(round(v, 4) for v in r.pixel_spacing),
                int(_f(ds.get("SamplesPerPixel"), 1)),
            )
            if r.position is None:  # no geometry: every file its own 2D image
                key = key + (path,)
            sub[key].append(r)
        keys = list(sub)
        for key in keys:
            for dup_key, slices in _split_duplicates(sub[key], datasets):
                split_key = (key if len(keys) > 1 else ()) + tuple(dup_key)
                parts.append(
                    SeriesPart(uid=uid, split_key=split_key, header=datasets[slices[0].path], slices=slices)
                )
    for p in parts:
        p.sort()
    parts.sort(key=lambda p: (int(_f(p.header.get("SeriesNumber"), 0)), p.uid, p.id))
    return parts, skipped


def describe(part: SeriesPart) -> SeriesDescriptor:
    """Build the :class:`SeriesDescriptor` of a part (spacing measured along the normal, never averaged)."""
    h = part.header
    s0 = part.slices[0]
    n = len(part.slices)
    issues: list[str] = []
    dz = _f(h.get("SliceThickness"), 1.0)
    if part.has_geometry and n > 1:
        rep = check_spacing(part.normal_positions())
        dz = rep.step
        if not rep.ok:
            issues.append(rep.describe())
    kind = "multiframe" if part.multiframe else ("volume" if n > 1 else "image2d")
    files = list(dict.fromkeys(s.path for s in part.slices))
    return SeriesDescriptor(
        id=part.id,
        series_instance_uid=part.uid,
        modality=str(h.get("Modality", "")),
        description=str(h.get("SeriesDescription", "")),
        series_number=int(h.SeriesNumber) if h.get("SeriesNumber") not in (None, "") else None,
        kind=kind,
        n_slices=n,
        shape=(int(h.Columns), int(h.Rows), n),
        spacing=(s0.pixel_spacing[1], s0.pixel_spacing[0], dz),
        has_geometry=part.has_geometry,
        files=files,
        issues=issues,
        part=part,
    )


def scan(
    paths: str | os.PathLike | Sequence[str | os.PathLike], stop_before_pixels: bool = True, warn: bool = True
) -> ScanReport:
    """Read headers of every file under ``paths`` (folders and/or files) and group them into series parts.

    Non-DICOM files are skipped with one :class:`DicomWarning` (count and an example); DICOM files that
    are not images (DICOMDIR, SEG, no pixel data, ...) or whose header is corrupt are listed in
    ``ScanReport.skipped`` with the reason (and one warning), and scanning goes on.

    Raises:
        FileNotFoundError: a path does not exist.
    """
    roots = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    files = [f for r in roots for f in list_files(r)]
    non_dicom, items, corrupt = [], [], []
    for f in files:
        try:
            ds = _read(f, stop_before_pixels)
        except DicomReadError as e:
            corrupt.append((f, f"corrupt or truncated DICOM header ({e.__cause__ or e})"[:200]))
            continue
        if ds is None:
            non_dicom.append(f)
        else:
            items.append((f, ds))
    if non_dicom and warn:
        warnings.warn(
            f"skipped {len(non_dicom)} non-DICOM file(s), e.g. {non_dicom[0]!r}", DicomWarning, stacklevel=2
        )
    parts, skipped = group_datasets(items)
    skipped = corrupt + skipped
    if skipped and warn:
        reasons = defaultdict(list)
        for p, r in skipped:
            reasons[r].append(p)
        text = "; ".join(f"{len(v)} file(s) {r}, e.g. {v[0]!r}" for r, v in reasons.items())
        warnings.warn(f"skipped DICOM files that are not images: {text}", DicomWarning, stacklevel=2)
    kept = {} if stop_before_pixels else dict(items)
    return ScanReport(
        series=[describe(p) for p in parts], non_dicom=non_dicom, skipped=skipped, datasets=kept
    )


def find_series(root: str | os.PathLike | Sequence[str | os.PathLike]) -> list[SeriesDescriptor]:
    """Find every DICOM series part under ``root`` from headers only (``stop_before_pixels``).

    Example:
        >>> # parts = find_series("/data/export"); [p.kind for p in parts]
    """
    report = scan(root, stop_before_pixels=True)
    if not report.series and not report.skipped:
        raise FileNotFoundError(
            f"no DICOM files found under {str(root)!r} ({len(report.non_dicom)} other file(s)); "
            "expected a folder of DICOM (.dcm) files"
        )
    return report.series
