"""Write a predicted label map as a DICOM SEG that references the DICOM series it was predicted on.

A MONAI-style saver for the end of an inference ``postprocessing`` chain, next to ``SaveImaged``: the
prediction must already be back on the source series' grid (``Invertd``) and discrete (``AsDiscreted``
with ``argmax``). The source series is the folder (or files) the image was loaded from, read from the
prediction's ``filename_or_obj`` metadata unless given; inputs that are not DICOM (NIfTI files) are
skipped, so one chain serves both. The SEG is written atomically by
:func:`monai_ext.data.dicom.seg.write_seg` (highdicom) as ``<output_dir>/<name>_<postfix>.dcm``, where
``<name>`` is the series folder's name, matching ``SaveImaged(separate_folder=False)``'s NIfTI name.

Example:
    >>> from monai_ext.data.dicom.seg_saver import SaveDicomSegd, segment_names_from
    >>> segment_names_from({"0": "background", "1": "liver", "2": "spleen"})
    ['liver', 'spleen']
    >>> saver = SaveDicomSegd("pred", output_dir="out", segment_names=["liver", "spleen"])
    >>> # saver({"pred": label})  # label: MetaTensor (1, X, Y, Z) on the series grid -> out/<series>_seg.dcm
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import ImageMetaKey

from monai_ext.data.dicom.reader import DicomSeriesReader, read_series
from monai_ext.data.dicom.seg import write_seg

__all__ = ["segment_names_from", "dicom_source", "SaveDicomSeg", "SaveDicomSegd"]

logger = logging.getLogger(__name__)

Source = str | os.PathLike | Sequence[str | os.PathLike]


def segment_names_from(names: Mapping[Any, str] | Sequence[str]) -> list[str]:
    """Segment labels 1..N from a list, or from a bundle ``channel_def`` (``{"0": "background", "1": ...}``).

    Key ``0`` (background) is dropped; the other keys must be the integers 1..N.

    Raises:
        ValueError: no segment, or ``channel_def`` keys that are not 0..N.
    """
    if isinstance(names, Mapping):
        try:
            by_value = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"segment_names: channel_def keys must be label values 0..N, got {list(names)}"
            ) from e
        by_value.pop(0, None)
        if sorted(by_value) != list(range(1, len(by_value) + 1)):
            raise ValueError(
                f"segment_names: channel_def keys must be 0 (background) and 1..N, got {sorted(names)}"
            )
        out = [by_value[k] for k in sorted(by_value)]
    elif isinstance(names, str):
        raise ValueError(f"segment_names must be a list of names or a channel_def mapping, got {names!r}")
    else:
        out = [str(n) for n in names]
    if not out:
        raise ValueError("segment_names: expected at least one segment name besides the background")
    return out


def dicom_source(label: Any, source: Any = None) -> Source | None:
    """The series a prediction came from: ``source`` (a path, paths or a MetaTensor), else its metadata."""
    if isinstance(source, MetaTensor):
        source = source.meta.get(ImageMetaKey.FILENAME_OR_OBJ)
    if source is None and isinstance(label, MetaTensor):
        source = label.meta.get(ImageMetaKey.FILENAME_OR_OBJ)
    if isinstance(source, str | os.PathLike):
        return source
    if isinstance(source, Sequence) and source and all(isinstance(s, str | os.PathLike) for s in source):
        return list(source)
    return None


def _name(source: Source) -> str:
    first = Path(source if isinstance(source, str | os.PathLike) else source[0])
    if not isinstance(source, str | os.PathLike) and len(source) > 1:
        return first.parent.name  # a list of slice files: name the SEG after their folder
    return first.name if first.is_dir() else first.name.removesuffix(first.suffix)


@contextmanager
def _quiet(name: str, level: int = logging.WARNING) -> Iterator[None]:
    log = logging.getLogger(name)
    old = log.level
    log.setLevel(max(level, old))
    try:
        yield
    finally:
        log.setLevel(old)


class SaveDicomSeg(Transform):
    """Write a label map on a DICOM series' grid as a DICOM SEG referencing that series.

    Args:
        output_dir: folder of the SEG files (created if missing).
        segment_names: names of labels 1..N, or a bundle ``channel_def`` mapping (background dropped).
        output_postfix: file name is ``<series folder name>_<output_postfix>.dcm``.
        series: part id to pick when the source folder holds several series (as ``DicomSeriesReader``).
        skip_non_dicom: return ``None`` for sources that are not DICOM (e.g. NIfTI); False raises.
        series_description: SeriesDescription of the SEG.
        algorithm_name: name in the SEG's AlgorithmIdentificationSequence.
        atol: largest difference (mm) allowed between the label's affine and the series' affine.
        print_log: log the path of every SEG written.

    Example:
        >>> saver = SaveDicomSeg("out", {"0": "background", "1": "liver"})
        >>> # saver(label, "/data/dicom/case_007")  # -> Path("out/case_007_seg.dcm")
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        segment_names: Mapping[Any, str] | Sequence[str],
        output_postfix: str = "seg",
        series: str | None = None,
        skip_non_dicom: bool = True,
        series_description: str = "monai-ext segmentation",
        algorithm_name: str = "monai-ext",
        atol: float = 1e-3,
        print_log: bool = True,
    ) -> None:
        self.output_dir = Path(output_dir).expanduser()
        self.segment_names = segment_names_from(segment_names)
        self.output_postfix = output_postfix
        self.series = series
        self.skip_non_dicom = skip_non_dicom
        self.series_description = series_description
        self.algorithm_name = algorithm_name
        self.atol = atol
        self.print_log = print_log

    def __call__(self, label: Any, source: Any = None) -> Path | None:
        """Write the SEG of ``label`` ((1, X, Y, Z) or (X, Y, Z)) on ``source``; return its path.

        Raises:
            ValueError: no source path, a non-DICOM source with ``skip_non_dicom=False``, a label that is
                not one channel, or a label whose shape or affine differs from the series grid.
        """
        src = dicom_source(label, source)
        if src is None:
            raise ValueError(
                "SaveDicomSeg: no source series: pass source= or a MetaTensor label whose meta "
                "has 'filename_or_obj' (LoadImaged keeps it)"
            )
        if not DicomSeriesReader().verify_suffix(src):
            if self.skip_non_dicom:
                return None
            raise ValueError(f"SaveDicomSeg: source {src!s} is not a DICOM series folder or DICOM file")
        shape = tuple(label.shape)
        if len(shape) == 4 and shape[0] != 1:
            raise ValueError(
                f"SaveDicomSeg: label has {shape[0]} channels; expected one channel of label values "
                "(apply AsDiscreted(argmax=True) first)"
            )
        vol = read_series(src, series=self.series)
        if isinstance(label, MetaTensor):
            affine = np.asarray(label.affine.detach().cpu(), dtype=float)
            if affine.shape != (4, 4) or not np.allclose(affine, vol.affine, atol=self.atol):
                raise ValueError(
                    f"SaveDicomSeg: label affine differs from the grid of series {src!s} by up to "
                    f"{np.abs(affine - vol.affine).max():.4g} mm; invert the prediction onto the input grid "
                    "(Invertd) before saving\n"
                    f"label affine:\n{np.round(affine, 4)}\nseries affine:\n{np.round(vol.affine, 4)}"
                )
        out = self.output_dir / f"{_name(src)}_{self.output_postfix}.dcm"
        with _quiet("highdicom"):  # its INFO lines name source UIDs, one per copied module
            seg = write_seg(
                label,
                vol,
                self.segment_names,
                out,
                series_description=self.series_description,
                algorithm_name=self.algorithm_name,
            )
        if self.print_log:
            logger.info(
                f"wrote DICOM SEG {out} ({len(self.segment_names)} segments, {seg.NumberOfFrames} frames)"
            )
        return out


class SaveDicomSegd(MapTransform):
    """Dictionary wrapper of :class:`SaveDicomSeg`: one SEG per key; the data passes through unchanged.

    Args:
        keys: label keys to save (e.g. ``"pred"``).
        source_key: key holding the source (a path or the loaded image); default: the label's own metadata.
        allow_missing_keys: skip missing keys instead of raising.
        kwargs: :class:`SaveDicomSeg` arguments (``output_dir``, ``segment_names``, ...).

    Example:
        >>> saver = SaveDicomSegd("pred", output_dir="out", segment_names={"0": "background", "1": "liver"})
    """

    def __init__(
        self,
        keys: KeysCollection,
        source_key: str | None = None,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.source_key = source_key
        self.saver = SaveDicomSeg(**kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.source_key is not None and self.source_key not in d:
            raise KeyError(
                f"SaveDicomSegd: source_key {self.source_key!r} is not in the data (keys: {list(d)})"
            )
        source = d[self.source_key] if self.source_key is not None else None
        for key in self.key_iterator(d):
            self.saver(d[key], source)
        return d
