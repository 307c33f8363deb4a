"""Build volumes from DICOM series parts, and a MONAI ``ImageReader`` on top.

Slices are sorted by position along the slice normal (not by InstanceNumber), rescaled slice by slice
(CT in HU), and placed with an affine in MONAI's RAS convention that matches ``itk.imread`` of the same
series (array axes: column, row, slice). Enhanced multi-frame objects use their per-frame functional
groups (plane position, orientation, pixel measures, pixel value transformation).

Gaps, duplicate positions and non-uniform steps give a :class:`DicomWarning` listing the measured
spacings, or a :class:`DicomReadError` with ``strict=True``. When loading anyway, duplicates after the
first (lowest InstanceNumber) are dropped, and the affine anchors slice 0 at the first position with the
*median* measured step: slices before the first gap are placed exactly, those after it are not. The true
positions are in ``meta["slice_positions"]`` (mm along the normal); resample on them when it matters.

Example:
    >>> from monai.transforms import LoadImage
    >>> from monai_ext.data.dicom import DicomSeriesReader
    >>> load = LoadImage(reader=DicomSeriesReader(), image_only=True)
    >>> # img = load("/data/ct_series")   # MetaTensor (x, y, z) in HU, RAS affine
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys
from pydicom.dataset import Dataset

from monai_ext.data.dicom.geometry import LPS_TO_RAS, affine_lps, check_spacing, slice_normal
from monai_ext.data.dicom.series import (
    DICOM_EXTRA_HINT,
    DicomReadError,
    DicomWarning,
    SeriesDescriptor,
    SeriesPart,
    describe,
    scan,
)

__all__ = ["DicomVolume", "read_series", "load_part", "DicomSeriesReader"]

_UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


@dataclass
class DicomVolume:
    """A loaded series part: ``array`` (col, row, slice), RAS ``affine``, ``meta`` and sorted headers."""

    array: np.ndarray
    affine: np.ndarray
    meta: dict[str, Any]
    descriptor: SeriesDescriptor
    headers: list[Dataset] = field(repr=False)


def _decode(ds: Dataset, path: str) -> np.ndarray:
    """Pixel frames of one file as (frames, rows, cols); clear errors for missing decoders and truncation."""
    if "PixelData" not in ds:
        raise DicomReadError(f"{path}: no pixel data (PixelData missing); expected an image object")
    rows, cols = int(ds.Rows), int(ds.Columns)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    ts = str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
    bits, stored = int(ds.BitsAllocated), int(ds.get("BitsStored", ds.BitsAllocated))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    fast = ts in _UNCOMPRESSED and int(ds.get("SamplesPerPixel", 1)) == 1 and bits in (8, 16, 32)
    if fast and (not signed or stored == bits):
        dtype = np.dtype(("i" if signed else "u") + str(bits // 8)).newbyteorder(
            ">" if ts.endswith(".2.2") else "<"
        )
        need = rows * cols * n_frames * dtype.itemsize
        raw = ds.PixelData
        if len(raw) < need:
            raise DicomReadError(
                f"{path}: truncated or corrupt file: pixel data has {len(raw)} bytes, expected {need} "
                f"({n_frames}x{rows}x{cols}, {bits} bits); re-export the file"
            )
        return np.frombuffer(raw, dtype=dtype, count=rows * cols * n_frames).reshape(n_frames, rows, cols)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            arr = ds.pixel_array
    except (NotImplementedError, RuntimeError, ImportError) as e:
        raise DicomReadError(
            f"{path}: cannot decode transfer syntax {ts} ({getattr(pydicom.uid.UID(ts), 'name', ts)}): {e}; "
            f"{DICOM_EXTRA_HINT}"
        ) from e
    except (ValueError, EOFError) as e:
        raise DicomReadError(f"{path}: truncated or corrupt pixel data: {e}") from e
    if arr.ndim == 2 or (arr.ndim == 3 and int(ds.get("SamplesPerPixel", 1)) > 1 and n_frames == 1):
        arr = arr[None]
    return arr


def load_part(
    part: SeriesPart,
    datasets: dict[str, Dataset] | None = None,
    strict: bool = False,
    name: str | None = None,
) -> DicomVolume:
    """Load one series part into a :class:`DicomVolume` (reads pixel data of files not in ``datasets``)."""
    name = name or os.path.dirname(part.slices[0].path)
    datasets = dict(datasets or {})
    for s in part.slices:
        if s.path not in datasets or "PixelData" not in datasets[s.path]:
            try:
                datasets[s.path] = pydicom.dcmread(s.path)
            except Exception as e:
                raise DicomReadError(f"{s.path}: unreadable DICOM file ({type(e).__name__}: {e})") from e
    desc = describe(part)
    slices = list(part.slices)
    h0 = datasets[slices[0].path]
    rows, cols = int(h0.Rows), int(h0.Columns)
    meta: dict[str, Any] = {}
    if part.has_geometry and len(slices) > 1:
        rep = check_spacing(part.normal_positions())
        if not rep.ok:
            msg = f"{name}: {rep.describe()}"
            if strict:
                raise DicomReadError(
                    msg + " (strict=True); load without strict to accept it, or fix the series"
                )
            warnings.warn(
                msg + "; loaded with the median step, duplicates dropped,"
                " true positions in meta['slice_positions']",
                DicomWarning,
                stacklevel=3,
            )
            if rep.duplicates:  # keep the first slice at each position
                keep, last = [], None
                for s, p in zip(slices, rep.positions):
                    if last is None or abs(p - last) > 0.01:
                        keep.append(s)
                    last = p
                slices = keep
        meta["slice_positions"] = np.asarray(
            [float(np.dot(slice_normal(slices[0].orientation), s.position)) for s in slices]
        )
        step = rep.step or 1.0
    else:
        step = float(h0.get("SpacingBetweenSlices") or h0.get("SliceThickness") or 1.0)
    frames_cache: dict[str, np.ndarray] = {}
    out = np.empty((len(slices), rows, cols), dtype=np.float32)
    for k, s in enumerate(slices):
        ds = datasets[s.path]
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
            raise DicomReadError(
                f"{s.path}: slice size {ds.Rows}x{ds.Columns} differs from {rows}x{cols} of the series"
            )
        if s.path not in frames_cache:
            frames_cache[s.path] = _decode(ds, s.path)
        px = frames_cache[s.path][s.frame or 0]
        if px.ndim != 2:
            raise DicomReadError(
                f"{s.path}: {px.shape[-1]} samples per pixel (colour); expected a grayscale image"
            )
        if s.slope != 1.0 or s.intercept != 0.0:
            np.multiply(px, s.slope, out=out[k], casting="unsafe")
            out[k] += s.intercept
        else:
            out[k] = px
        if s.frame is None:
            frames_cache.pop(s.path, None)
    s0 = slices[0]
    if part.has_geometry:
        a_lps = affine_lps(s0.orientation, s0.position, s0.pixel_spacing, step)
    else:
        a_lps = np.diag([s0.pixel_spacing[1], s0.pixel_spacing[0], step, 1.0])
        meta["geometry"] = "none: no ImagePositionPatient/ImageOrientationPatient, affine is spacing only"
    array = np.ascontiguousarray(out.transpose(2, 1, 0))  # (col, row, slice)
    meta.update(
        {
            "series_id": desc.id,
            "modality": desc.modality,
            "series_description": desc.description,
            "n_slices": len(slices),
            "spacing_issues": "; ".join(desc.issues),
        }
    )
    headers = [datasets[p] for p in dict.fromkeys(s.path for s in slices)]
    return DicomVolume(array=array, affine=LPS_TO_RAS @ a_lps, meta=meta, descriptor=desc, headers=headers)


def _select(report_series: list[SeriesDescriptor], series: str | None, where: str) -> SeriesDescriptor:
    if series is not None:
        hits = [s for s in report_series if series in (s.id, s.series_instance_uid)]
        if not hits:
            raise DicomReadError(
                f"{where}: no series {series!r}; found: "
                + ", ".join(f"{s.id} ({s.modality} {s.kind})" for s in report_series)
            )
        if len(hits) > 1:
            raise DicomReadError(
                f"{where}: series UID {series!r} is split into {len(hits)} parts "
                f"({', '.join(h.id for h in hits)}); pass one part id"
            )
        return hits[0]
    if len(report_series) == 1:
        return report_series[0]
    if not report_series:
        raise DicomReadError(
            f"{where}: no DICOM image series found; expected a folder or files of DICOM images"
        )
    listing = "; ".join(
        f"{s.id}: {s.modality} {s.kind} {s.n_slices} slice(s) {s.description!r}" for s in report_series
    )
    raise DicomReadError(
        f"{where}: holds {len(report_series)} series parts (different series, orientations or sizes), "
        f"not one volume: {listing}; pass series=ID (see find_series)"
    )


def read_series(
    paths: str | os.PathLike | Sequence[str | os.PathLike], series: str | None = None, strict: bool = False
) -> DicomVolume:
    """Load one DICOM series from a folder, a file or a list of files.

    Args:
        paths: folder(s) and/or files holding exactly one series part, or several with ``series`` set.
        series: a part id from :func:`find_series` (or a SeriesInstanceUID that is not split).
        strict: raise instead of warning on gaps, duplicate positions or non-uniform spacing.

    Raises:
        DicomReadError: no series, several series, corrupt file, missing decoder (names the file).
    """
    where = (
        str(paths) if isinstance(paths, str | os.PathLike) else f"{len(paths)} file(s) from {str(paths[0])!r}"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = scan(paths, stop_before_pixels=False)
    for w in caught:  # re-emit the skip warnings from here
        warnings.warn(str(w.message), w.category, stacklevel=2)
    desc = _select(report.series, series, where)
    return load_part(desc.part, datasets=report.datasets, strict=strict, name=where)


class DicomSeriesReader(ImageReader):
    """MONAI ``ImageReader`` for DICOM series: ``LoadImage(reader=DicomSeriesReader())``.

    Accepts a folder, a file, or a list of files of one series; several folders are loaded one by one
    and stacked as channels (MONAI's convention). See :mod:`monai_ext.data.dicom.reader` for geometry.

    Args:
        series: part id (or SeriesInstanceUID) to pick when a folder holds several series.
        strict: raise on gaps, duplicate positions and non-uniform slice spacing instead of warning.
        affine_lps_to_ras: RAS affine (MONAI's default, as ``ITKReader``); False keeps DICOM's LPS.

    Example:
        >>> from monai.transforms import LoadImage
        >>> load = LoadImage(reader=DicomSeriesReader(strict=True), image_only=True)
    """

    def __init__(
        self, series: str | None = None, strict: bool = False, affine_lps_to_ras: bool = True
    ) -> None:
        super().__init__()
        self.series = series
        self.strict = strict
        self.affine_lps_to_ras = affine_lps_to_ras

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """True for folders and for ``.dcm``/``.dicom``/``.ima`` files or files with a DICM preamble."""
        names = [filename] if isinstance(filename, str | os.PathLike) else list(filename)
        for n in names:
            p = Path(n)
            if p.is_dir() or p.suffix.lower() in (".dcm", ".dicom", ".ima"):
                continue
            try:
                with open(p, "rb") as f:
                    if f.read(132)[128:] == b"DICM":
                        continue
            except OSError:
                pass
            return False
        return True

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> list[DicomVolume]:
        """One :class:`DicomVolume` per folder; a list of plain files is one series."""
        names = [data] if isinstance(data, str | os.PathLike) else list(data)
        series = kwargs.get("series", self.series)
        strict = kwargs.get("strict", self.strict)
        if all(Path(n).is_dir() for n in names):
            return [read_series(n, series=series, strict=strict) for n in names]
        return [read_series(names if len(names) > 1 else names[0], series=series, strict=strict)]

    def get_data(self, img: DicomVolume | list[DicomVolume]) -> tuple[np.ndarray, dict]:
        """Array (col, row, slice) or channel-stacked arrays, and MONAI meta (affine, spatial_shape, ...)."""
        vols = img if isinstance(img, list) else [img]
        arrays, meta = [], {}
        for v in vols:
            affine = v.affine if self.affine_lps_to_ras else LPS_TO_RAS @ v.affine
            m = dict(v.meta)
            m[MetaKeys.ORIGINAL_AFFINE] = affine
            m[MetaKeys.AFFINE] = affine.copy()
            m[MetaKeys.SPATIAL_SHAPE] = np.asarray(v.array.shape)
            m[MetaKeys.SPACE] = SpaceKeys.RAS if self.affine_lps_to_ras else SpaceKeys.LPS
            m[MetaKeys.ORIGINAL_CHANNEL_DIM] = float("nan")
            if meta and not np.allclose(meta[MetaKeys.AFFINE], m[MetaKeys.AFFINE]):
                raise DicomReadError("series stacked as channels must share one grid; got different affines")
            meta = meta or m
            arrays.append(v.array)
        if len(arrays) == 1:
            return arrays[0], meta
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return np.stack(arrays, 0), meta
