"""Dictionary transforms for clinical tables: encode columns into a feature vector, build survival targets.

A data dict here is one row of a clinical table (a ``datalist.json`` entry or a ``csv.DictReader`` row):
each clinical column is a top-level key whose value is a number, a string or missing (``None``, NaN, an
empty cell or ``NA``). :class:`TabularEncoded` turns the columns named in ``keys`` into one float32
vector (categories to numbers, optional log, then ``(x - center) / scale``; missing -> NaN, which
:class:`monai_ext.networks.ImageTabularNet` with ``missing_indicator=True`` understands).
:class:`SurvivalTargetd` turns a time and an event column into the ``[time, event]`` target of the Cox
loss. Both remove the raw columns by default: mixed ``str``/``None`` cells do not collate.

Example:
    >>> enc = TabularEncoded(["age", "sex"], categories={"sex": {"F": 0, "M": 1}}, center={"age": 66.0},
    ...                      scale={"age": 9.0})
    >>> enc({"age": "75", "sex": "M", "image": "P1.nii.gz"})["tabular"].tolist()
    [1.0, 1.0]
    >>> SurvivalTargetd(["time_months", "event"])({"time_months": 3.5, "event": "1"})["label"].tolist()
    [3.5, 1.0]
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = ["TabularEncoded", "SurvivalTargetd"]

#: string cells read as missing (after stripping white space)
MISSING_TOKENS: tuple[str, ...] = ("", "NA", "N/A", "NaN", "nan", "None", "null")


def _is_missing(value: Any, tokens: Sequence[str]) -> bool:
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return math.isnan(float(value))
    return isinstance(value, str) and value.strip() in tokens


def _number(column: Hashable, value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError(f"clinical column {column!r}: value {value!r} is not a number") from None


class TabularEncoded(MapTransform):
    """Encode the clinical columns ``keys`` of a row into a float32 vector at ``output_key``.

    Per column ``c`` (in the order of ``keys``): a missing cell gives NaN; a categorical column (in
    ``categories``) maps ``str(value).strip()`` through ``categories[c]``; any other column is read as a
    number, log-transformed when ``c`` is in ``log_columns`` (it must then be positive); the result is
    ``(x - center[c]) / scale[c]`` (defaults 0 and 1).

    Args:
        keys: the clinical columns, in the order of the output vector.
        output_key: where the ``(len(keys),)`` float32 vector goes.
        categories: ``{column: {category: number}}``.
        log_columns: columns encoded as ``log(x)``.
        center, scale: ``{column: value}``; a scale must be positive and finite.
        missing_tokens: string cells read as missing.
        delete_keys: remove the raw columns from the output dict.
        allow_missing_keys: an absent column is encoded as missing (NaN) instead of raising ``KeyError``.

    Bad cells raise ``ValueError`` naming the column and the value (and the allowed categories).

    Example:
        >>> enc = TabularEncoded(["ldh_u_l", "stage"], categories={"stage": {"I": 1, "II": 2}},
        ...                      log_columns=["ldh_u_l"])
        >>> out = enc({"ldh_u_l": "", "stage": " II"})
        >>> [round(float(v), 3) for v in out["tabular"]], "stage" in out
        ([nan, 2.0], False)
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_key: str = "tabular",
        categories: Mapping[str, Mapping[str, float]] | None = None,
        log_columns: Sequence[str] = (),
        center: Mapping[str, float] | None = None,
        scale: Mapping[str, float] | None = None,
        missing_tokens: Sequence[str] = MISSING_TOKENS,
        delete_keys: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(set(self.keys)) != len(self.keys):
            raise ValueError(f"TabularEncoded: `keys` lists a column twice: {list(self.keys)}")
        self.output_key = output_key
        self.categories = {
            str(c): {str(k): float(v) for k, v in m.items()} for c, m in (categories or {}).items()
        }
        self.log_columns = {str(c) for c in log_columns}
        self.center = {str(c): float(v) for c, v in (center or {}).items()}
        self.scale = {str(c): float(v) for c, v in (scale or {}).items()}
        names = {str(k) for k in self.keys}
        for what, cols in (
            ("categories", self.categories),
            ("log_columns", self.log_columns),
            ("center", self.center),
            ("scale", self.scale),
        ):
            unknown = sorted(set(cols) - names)
            if unknown:
                raise ValueError(f"TabularEncoded: `{what}` names column(s) {unknown} that are not in `keys`")
        both = sorted(self.log_columns & set(self.categories))
        if both:
            raise ValueError(f"TabularEncoded: column(s) {both} are both categorical and in `log_columns`")
        bad = {c: s for c, s in self.scale.items() if not (math.isfinite(s) and s > 0)}
        if bad:
            raise ValueError(f"TabularEncoded: `scale` must be positive and finite, got {bad}")
        self.missing_tokens = tuple(missing_tokens)
        self.delete_keys = delete_keys

    def encode_value(self, column: Hashable, value: Any) -> float:
        """The encoded value of one cell (NaN when missing)."""
        c = str(column)
        if _is_missing(value, self.missing_tokens):
            return math.nan
        if c in self.categories:
            cat = str(value).strip()
            if cat not in self.categories[c]:
                raise ValueError(
                    f"clinical column {c!r}: value {value!r} is not one of {sorted(self.categories[c])} "
                    f"(set the categories of {c!r})"
                )
            x = self.categories[c][cat]
        else:
            x = _number(c, value)
            if not math.isfinite(x):
                raise ValueError(f"clinical column {c!r}: value {value!r} must be finite")
            if c in self.log_columns:
                if x <= 0:
                    raise ValueError(
                        f"clinical column {c!r}: value {value!r} must be a positive number "
                        "(it is log-transformed)"
                    )
                x = math.log(x)
        return (x - self.center.get(c, 0.0)) / self.scale.get(c, 1.0)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        values = []
        for c in self.keys:
            if c not in d and not self.allow_missing_keys:
                raise KeyError(
                    f"data has no clinical column {c!r} (expected columns {[str(k) for k in self.keys]}; "
                    "write missing values as null or an empty cell)"
                )
            values.append(self.encode_value(c, d.get(c)))
        if self.delete_keys:
            for c in self.keys:
                d.pop(c, None)
        d[self.output_key] = np.asarray(values, dtype=np.float32)
        return d


class SurvivalTargetd(MapTransform):
    """Build the survival target ``[time, event]`` (float32) from a time and an event column.

    Args:
        keys: ``(time_key, event_key)``.
        output_key: where the ``(2,)`` target goes.
        delete_keys: remove the two columns from the output dict.
        allow_missing_keys: a row with *neither* column passes unchanged (inference on unlabelled data).

    The time must be finite and >= 0 and the event 0 or 1 (``"1"``, ``1.0``, ``True`` accepted); a missing
    value raises ``KeyError``, a bad one ``ValueError``, both naming the column.

    Example:
        >>> t = SurvivalTargetd(["t", "e"], output_key="y", allow_missing_keys=True)
        >>> t({"t": "12", "e": 0})["y"].tolist(), "y" in t({"image": "a.nii.gz"})
        ([12.0, 0.0], False)
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_key: str = "label",
        delete_keys: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 2:
            raise ValueError(f"SurvivalTargetd: `keys` must be (time_key, event_key), got {list(self.keys)}")
        self.output_key = output_key
        self.delete_keys = delete_keys

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        time_key, event_key = self.keys
        if self.allow_missing_keys and time_key not in d and event_key not in d:
            return d
        values = []
        for key in (time_key, event_key):
            v = d.get(key)
            if _is_missing(v, MISSING_TOKENS):
                raise KeyError(
                    f"data has no {key!r} value: every row used for training or evaluation needs "
                    f"{time_key!r} and {event_key!r}"
                )
            values.append(_number(key, v))
        t, e = values
        if not (math.isfinite(t) and t >= 0 and e in (0.0, 1.0)):
            raise ValueError(
                f"survival target must be {time_key!r} >= 0 and {event_key!r} in {{0, 1}}, got "
                f"{(d.get(time_key), d.get(event_key))!r}"
            )
        if self.delete_keys:
            d.pop(time_key, None)
            d.pop(event_key, None)
        d[self.output_key] = np.asarray([t, e], dtype=np.float32)
        return d
