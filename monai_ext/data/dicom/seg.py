"""DICOM SEG writing (highdicom) and SEG / RTSTRUCT reading into label volumes on the source grid.

RTSTRUCT contours are rasterised here (scikit-image), not with rt-utils: rt-utils 1.2.7 pairs
PixelSpacing's row spacing with the row direction, builds its masks as (Columns, Rows) and averages the
slice step from the first and last slices, which misplaces contours on anisotropic, non-square or gapped
series.

Label volumes use the reader's layout: (col, row, slice) with slices sorted along the normal, so a
label predicted on ``read_series(...).array`` (or on ``LoadImage(reader=DicomSeriesReader())``'s output
before any spatial transform) goes straight into :func:`write_seg`.

Example:
    >>> from monai_ext.data.dicom import read_seg, read_series, write_seg
    >>> # vol = read_series("/data/ct"); seg = write_seg(mask, vol, ["liver"], "/out/seg.dcm")
    >>> # labels, names = read_seg("/out/seg.dcm", vol)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from monai_ext.data.dicom.reader import DicomVolume, read_series
from monai_ext.data.dicom.series import DicomReadError

__all__ = ["write_seg", "read_seg", "read_rtstruct", "segment_codes"]

_HINT = "install the DICOM extra: pip install 'monai-ext[dicom]'"


def _volume(series: DicomVolume | str | os.PathLike | Sequence[str | os.PathLike]) -> DicomVolume:
    vol = series if isinstance(series, DicomVolume) else read_series(series)
    if vol.descriptor.kind == "multiframe":
        raise DicomReadError(
            "SEG/RTSTRUCT on enhanced multi-frame sources is not supported; expected single-frame slices"
        )
    return vol


def _sorted_headers(vol: DicomVolume) -> list[pydicom.Dataset]:
    if len(vol.headers) != vol.array.shape[2]:
        raise DicomReadError(
            f"series has {len(vol.headers)} files for {vol.array.shape[2]} slices; expected one each"
        )
    return list(vol.headers)


def _as_label(label: Any, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(label.detach().cpu() if hasattr(label, "detach") else label)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.shape != tuple(shape):
        raise ValueError(
            f"label has shape {arr.shape}; expected the series' (col, row, slice) shape {tuple(shape)}"
        )
    if not np.all(np.equal(np.mod(arr, 1), 0)) or arr.min() < 0:
        raise ValueError("label must hold non-negative integers (0 = background, k = segment k)")
    return arr.astype(np.uint16)


def _atomic_save(ds: pydicom.Dataset, out_path: str | os.PathLike) -> None:
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".dcm", dir=out.parent)
    os.close(fd)
    try:
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


_LESIONS = {"tumor", "tumour", "neoplasm", "nodule", "mass", "lesion", "metastasis", "cyst"}
_ALIASES = {"tumour": "Tumor"}


def segment_codes(name: str) -> tuple[Any, Any]:
    """SNOMED CT (category, type) codes of a segment name, from pydicom's code dictionary.

    ``"liver"`` gives (Anatomical Structure, Liver); a leading ``left`` / ``right`` is dropped for the
    lookup (``"left kidney"``: Kidney); lesion words (``tumour``, ``nodule``, ...) take the category
    Morphologically Abnormal Structure. Names without a code fall back to (Tissue, Tissue), so PACS
    viewers still show the segment label.

    Example:
        >>> [c.meaning for c in segment_codes("left kidney")]
        ['Anatomical Structure', 'Kidney']
    """
    from pydicom.sr.codedict import codes

    words = [w for w in name.replace("_", " ").replace("-", " ").lower().split() if w]
    if len(words) > 1 and words[0] in ("left", "right"):
        words = words[1:]
    key = "".join(_ALIASES.get(w, w.capitalize()) for w in words)
    known = set(dir(codes.SCT))
    if key not in known:
        return codes.SCT.Tissue, codes.SCT.Tissue
    lesion = any(w in _LESIONS for w in words)
    category = codes.SCT.MorphologicallyAbnormalStructure if lesion else codes.SCT.AnatomicalStructure
    return category, getattr(codes.SCT, key)


def write_seg(
    label: Any,
    series: DicomVolume | str | os.PathLike | Sequence[str | os.PathLike],
    segment_names: Sequence[str],
    out_path: str | os.PathLike | None = None,
    series_description: str = "monai-ext segmentation",
    algorithm_name: str = "monai-ext",
) -> Any:
    """Write a binary DICOM SEG of ``label`` (0 = background, k = ``segment_names[k-1]``) on ``series``.

    Each segment is coded from its name by :func:`segment_codes` (SNOMED CT; Tissue when unknown).

    highdicom copies only the patient, study and frame-of-reference attributes a SEG needs from the source
    and references every source instance. Returns the ``highdicom.seg.Segmentation``; writes it
    atomically to ``out_path`` when given.

    Raises:
        ValueError: label shape differs from the series grid, or labels not in 0..len(segment_names).
    """
    try:
        import highdicom as hd
        from pydicom.sr.codedict import codes
    except ImportError as e:  # pragma: no cover - dependency of the dicom extra
        raise ImportError(f"write_seg needs highdicom; {_HINT}") from e
    import monai_ext

    vol = _volume(series)
    lab = _as_label(label, vol.array.shape)
    names = list(segment_names)
    if not names or int(lab.max()) > len(names):
        raise ValueError(f"label values go up to {int(lab.max())} but segment_names has {len(names)} name(s)")
    algo = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, version=str(monai_ext.__version__), family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=name,
            segmented_property_category=category,
            segmented_property_type=prop,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo,
        )
        for i, name in enumerate(names)
        for category, prop in [segment_codes(name)]
    ]
    seg = hd.seg.Segmentation(
        source_images=_sorted_headers(vol),
        pixel_array=np.ascontiguousarray(lab.transpose(2, 1, 0)),  # (frames, rows, cols) in source order
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="monai-ext",
        manufacturer_model_name=algorithm_name,
        software_versions=str(monai_ext.__version__),
        device_serial_number="0",
        series_description=series_description,
    )
    if out_path is not None:
        _atomic_save(seg, out_path)
    return seg


def read_seg(
    seg: str | os.PathLike | pydicom.Dataset,
    series: DicomVolume | str | os.PathLike | Sequence[str | os.PathLike],
) -> tuple[np.ndarray, list[str]]:
    """Read a DICOM SEG into a label volume (col, row, slice) on ``series``' grid; return (labels, names).

    Overlapping segments are resolved by the highest segment number.
    """
    try:
        import highdicom as hd
    except ImportError as e:  # pragma: no cover
        raise ImportError(f"read_seg needs highdicom; {_HINT}") from e
    vol = _volume(series)
    name = str(seg) if not isinstance(seg, pydicom.Dataset) else "SEG dataset"
    try:
        obj = (
            hd.seg.segread(seg)
            if not isinstance(seg, pydicom.Dataset)
            else hd.seg.Segmentation.from_dataset(seg)
        )
    except Exception as e:
        raise DicomReadError(f"{name}: not a readable DICOM SEG ({type(e).__name__}: {e})") from e
    uids = [h.SOPInstanceUID for h in _sorted_headers(vol)]
    numbers = list(obj.get_segment_numbers())
    out = np.zeros(vol.array.shape[::-1], dtype=np.uint16)
    try:
        for n in numbers:
            px = obj.get_pixels_by_source_instance(
                uids, segment_numbers=[n], assert_missing_frames_are_empty=False
            )
            out[px[..., 0] > 0] = n
    except (KeyError, ValueError, AttributeError) as e:
        raise DicomReadError(f"{name}: SEG does not reference the slices of the given series ({e})") from e
    names = [obj.get_segment_description(n).segment_label for n in numbers]
    return np.ascontiguousarray(out.transpose(2, 1, 0)), names


def _polygon_fill(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    try:
        from skimage.draw import polygon
    except ImportError as e:  # pragma: no cover
        raise ImportError("read_rtstruct needs scikit-image: pip install scikit-image") from e
    mask = np.zeros(shape, dtype=bool)
    rr, cc = polygon(rows, cols, shape)
    mask[rr, cc] = True
    return mask


def read_rtstruct(
    rtstruct: str | os.PathLike, series: DicomVolume | str | os.PathLike | Sequence[str | os.PathLike]
) -> tuple[np.ndarray, list[str]]:
    """Rasterise an RTSTRUCT's closed planar contours into a (col, row, slice) label volume on ``series``.

    Each contour (LPS mm) is mapped to voxel indices with the series' exact slice geometry (its referenced
    SOP instance, else the nearest slice within half a step) and filled with ``skimage.draw.polygon``
    (pixel centres inside the polygon); several contours of one ROI on one slice combine by the even-odd
    rule, so holes stay holes. ROI ``k`` (in StructureSetROISequence order) gets label ``k``; later ROIs
    overwrite earlier ones. Returns (labels, roi_names).

    Raises:
        DicomReadError: not an RTSTRUCT, or a contour lies off every slice of the series.
    """
    vol = _volume(series)
    try:
        ds = pydicom.dcmread(rtstruct)
    except Exception as e:
        raise DicomReadError(f"{rtstruct}: not a readable DICOM file ({type(e).__name__}: {e})") from e
    if "ROIContourSequence" not in ds or "StructureSetROISequence" not in ds:
        raise DicomReadError(f"{rtstruct}: not an RTSTRUCT (no ROIContourSequence / StructureSetROISequence)")
    headers = _sorted_headers(vol)
    ncol, nrow, nsl = vol.array.shape
    inv = np.linalg.inv(np.diag([-1.0, -1.0, 1.0, 1.0]) @ vol.affine)  # LPS mm -> (col, row, slice)
    by_uid = {str(h.SOPInstanceUID): k for k, h in enumerate(headers)}
    positions = vol.meta.get("slice_positions")
    normal = np.cross(*np.asarray(headers[0].ImageOrientationPatient, float).reshape(2, 3))
    numbers = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    label_of = {n: k for k, n in enumerate(numbers, start=1)}
    out = np.zeros((nsl, nrow, ncol), dtype=np.uint16)
    for roi in ds.ROIContourSequence:
        number = int(roi.ReferencedROINumber)
        if number not in label_of:
            continue
        planes: dict[int, np.ndarray] = {}
        for c in roi.get("ContourSequence", []):
            pts = np.asarray(c.ContourData, dtype=float).reshape(-1, 3)
            if len(pts) < 3:
                continue  # points and open lines carry no area
            refs = [str(i.ReferencedSOPInstanceUID) for i in c.get("ContourImageSequence", [])]
            k = next((by_uid[u] for u in refs if u in by_uid), None)
            if k is None:
                z = float(np.mean(pts @ normal))
                pos = np.asarray(
                    positions
                    if positions is not None
                    else [float(np.dot(normal, headers[0].ImagePositionPatient))]
                )
                k = int(np.argmin(np.abs(pos - z)))
                half = max(0.5 * float(np.min(np.diff(pos))) if len(pos) > 1 else 0.5, 1e-3)
                if abs(pos[k] - z) > half:
                    raise DicomReadError(
                        f"{rtstruct}: contour of ROI {numbers[number]!r} at {z:.2f} mm"
                        " lies off the series' slices"
                    )
            vox = (inv @ np.c_[pts, np.ones(len(pts))].T)[:3]
            m = _polygon_fill(vox[1], vox[0], (nrow, ncol))
            planes[k] = planes[k] ^ m if k in planes else m
        for k, m in planes.items():
            out[k][m] = label_of[number]
    return np.ascontiguousarray(out.transpose(2, 1, 0)), list(numbers.values())
