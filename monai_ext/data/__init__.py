"""Data: synthetic data sets, and (later) DICOM, NIfTI and whole-slide readers."""

__all__: list[str] = []
