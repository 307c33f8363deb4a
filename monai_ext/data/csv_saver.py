"""MONAI's ``CSVSaver`` with a header row, an atomic write and a duplicate-id check.

:class:`AtomicCSVSaver` subclasses :class:`monai.data.CSVSaver` and changes three things: ``finalize``
writes a header row (``id_column`` then the value columns), it writes the whole file under a temporary
name in the output folder and moves it onto the final name with ``os.replace`` (a crash leaves the
previous file, never a half-written one), and ``save`` refuses an id saved twice in one run instead of
silently keeping the last row. Numbers are written as MONAI writes them (``str(float)``).

Example:
    >>> import tempfile, numpy as np
    >>> from monai_ext.data.csv_saver import AtomicCSVSaver
    >>> out = tempfile.mkdtemp()
    >>> saver = AtomicCSVSaver(out, "predictions.csv", id_column="image", columns=["p_a", "p_b"])
    >>> saver.save_batch(np.array([[0.25, 0.75]]), {"filename_or_obj": ["x.png"]})
    >>> saver.finalize()
    >>> print(open(f"{out}/predictions.csv").read(), end="")
    image,p_a,p_b
    x.png,0.25,0.75
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

import numpy as np
import torch
from monai.config import PathLike
from monai.data import CSVSaver
from monai.utils import ImageMetaKey

from monai_ext.data.atomic import write_bytes_atomic

__all__ = ["AtomicCSVSaver"]


class AtomicCSVSaver(CSVSaver):
    """:class:`monai.data.CSVSaver` writing a header, atomically, and refusing duplicate ids.

    Use it as the ``saver`` of :class:`monai.handlers.ClassificationSaver`. Each ``finalize`` replaces
    the file with the rows saved since the previous ``finalize`` (MONAI's saver appends instead); an
    existing file is left untouched until the new one is complete.

    Args:
        output_dir: folder of the CSV file, created if missing.
        filename: name of the CSV file.
        id_column: header of the first column (the ``filename_or_obj`` of each item).
        columns: headers of the value columns; ``None``: ``pred`` for one value per row, else
            ``pred_0`` .. ``pred_{n-1}`` (an empty run then writes only ``id_column``).
        delimiter: field delimiter.

    Example:
        >>> from monai.handlers import ClassificationSaver
        >>> saver = AtomicCSVSaver("./eval", "risk_scores.csv", id_column="patient_id", columns=["log_risk"])
        >>> handler = ClassificationSaver(saver=saver)  # then handler.attach(evaluator)
    """

    def __init__(
        self,
        output_dir: PathLike = "./",
        filename: str = "predictions.csv",
        id_column: str = "id",
        columns: Sequence[str] | None = None,
        delimiter: str = ",",
    ) -> None:
        super().__init__(
            output_dir=output_dir, filename=filename, overwrite=False, flush=False, delimiter=delimiter
        )
        if isinstance(columns, str):
            raise TypeError(f"columns must be a sequence of names, not the string {columns!r}")
        self.id_column = str(id_column)
        self.columns: list[str] | None = None if columns is None else [str(c) for c in columns]

    def save(self, data: torch.Tensor | np.ndarray, meta_data: dict | None = None) -> None:
        """Cache one item like :meth:`monai.data.CSVSaver.save`; raise ``ValueError`` on a repeated id."""
        key = meta_data[ImageMetaKey.FILENAME_OR_OBJ] if meta_data else str(self._data_index)
        if key in self._cache_dict:
            raise ValueError(
                f"{self._filepath}: id {key!r} is saved twice in one run; each row needs a unique "
                f"{self.id_column!r} (MONAI's CSVSaver would keep only the last row)"
            )
        super().save(data, meta_data)

    def _header(self, n_values: int | None) -> list[str]:
        if self.columns is not None:
            return [self.id_column, *self.columns]
        if n_values is None:
            return [self.id_column]
        if n_values == 1:
            return [self.id_column, "pred"]
        return [self.id_column, *(f"pred_{i}" for i in range(n_values))]

    def finalize(self) -> None:
        """Write header and cached rows to a temporary file, move it onto the CSV path, clear the cache.

        Raises:
            ValueError: a row's number of values differs from ``columns`` (or, with ``columns=None``,
                from the first row). The existing file is then left as it was.
        """
        rows = [
            (str(k), [str(float(x)) for x in np.asarray(v).flatten()]) for k, v in self._cache_dict.items()
        ]
        header = self._header(len(rows[0][1]) if rows else None)
        try:
            text = io.StringIO()
            writer = csv.writer(text, delimiter=self.delimiter, lineterminator="\n")
            writer.writerow(header)
            for key, values in rows:
                if len(values) != len(header) - 1:
                    raise ValueError(
                        f"{self._filepath}: id {key!r} has {len(values)} value(s) but the header names "
                        f"{len(header) - 1} column(s) {header[1:]}"
                    )
                writer.writerow([key, *values])
            write_bytes_atomic(self._filepath, text.getvalue().encode())
        finally:
            self.reset_cache()
