"""DICOM I/O: find series, load them as MONAI volumes, DICOM SEG / RTSTRUCT, DICOM -> NIfTI.

Example:
    >>> from monai.transforms import LoadImage
    >>> from monai_ext.data.dicom import DicomSeriesReader, find_series
    >>> # for s in find_series("/data/export"): print(s.id, s.kind, s.shape)
    >>> # img = LoadImage(reader=DicomSeriesReader(), image_only=True)("/data/export/ct")
"""

from monai_ext.data.dicom.reader import DicomSeriesReader, DicomVolume, read_series
from monai_ext.data.dicom.series import (
    DicomReadError,
    DicomWarning,
    ScanReport,
    SeriesDescriptor,
    find_series,
    scan,
)

__all__ = [
    "DicomReadError",
    "DicomWarning",
    "DicomSeriesReader",
    "DicomVolume",
    "ScanReport",
    "SeriesDescriptor",
    "find_series",
    "read_series",
    "scan",
    "write_seg",
    "read_seg",
    "read_rtstruct",
    "segment_codes",
    "dicom2nifti",
    "SaveDicomSeg",
    "SaveDicomSegd",
]


def __getattr__(name: str):
    # highdicom / rt-utils are optional: import the modules that need them on first use
    if name in ("write_seg", "read_seg", "read_rtstruct", "segment_codes"):
        from monai_ext.data.dicom import seg

        return getattr(seg, name)
    if name in ("SaveDicomSeg", "SaveDicomSegd"):
        from monai_ext.data.dicom import seg_saver

        return getattr(seg_saver, name)
    if name == "dicom2nifti":
        from monai_ext.data.dicom.convert import dicom2nifti

        return dicom2nifti
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
