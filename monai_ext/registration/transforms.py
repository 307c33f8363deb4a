"""MONAI transforms that align images to a reference image with :func:`register_images`.

``RegisterToReference`` (array) registers one moving image to a fixed image; ``RegisterToReferenced``
(dictionary) registers every image under ``keys`` to the image under ``fixed_key`` and carries label
maps along, so a bundle's preprocessing can align T1/T2/FLAIR to T1c, or PET to CT, before fusion.
Each output is on the fixed image's grid, with its affine; ``meta["registration"]`` records the
transform type, the 4x4 RAS matrix (fixed -> moving), the metric before and after, and the overlap.

Example:
    >>> from monai_ext.registration.transforms import RegisterToReferenced
    >>> reg = RegisterToReferenced(keys=["t1", "t2", "flair"], fixed_key="t1c", transform_type="rigid")
    >>> # sample = reg({"t1c": t1c, "t1": t1, "t2": t2, "flair": flair})  # after LoadImaged
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from monai_ext.registration.itk_registration import (
    TRANSFORM_TYPES,
    RegistrationResult,
    load_image,
    register_images,
    resample_to_reference,
)

__all__ = ["RegisterToReference", "RegisterToReferenced"]


def _record(result: RegistrationResult, fixed_name: str) -> dict[str, Any]:
    return {
        "fixed": fixed_name,
        "transform_type": result.transform_type,
        # an array (NaN for bspline) so MONAI's collate can stack it
        "matrix_ras": np.full((4, 4), np.nan) if result.matrix is None else np.asarray(result.matrix),
        "metric_initial": result.metric_initial,
        "metric_final": result.metric_final,
        "overlap": result.overlap,
    }


class RegisterToReference(Transform):
    """Register a moving image (and optional labels) to a fixed image; return a RegistrationResult.

    Args:
        transform_type: ``rigid``, ``affine`` or ``bspline``.
        kwargs: further options of :func:`register_images` (pyramid, iterations, on_failure, ...).

    Example:
        >>> reg = RegisterToReference(transform_type="affine", shrink_factors=(2, 1), smoothing_sigmas=(1, 0))
        >>> # result = reg(flair, t1c); result.image  -> FLAIR on the T1c grid
    """

    backend = ["torch"]

    def __init__(self, transform_type: str = "rigid", **kwargs: Any) -> None:
        if transform_type not in TRANSFORM_TYPES:
            raise ValueError(f"transform_type must be one of {TRANSFORM_TYPES}, got {transform_type!r}")
        self.transform_type = transform_type
        self.kwargs = kwargs

    def __call__(
        self, moving: Any, fixed: Any, label: Any | None = None, names: tuple[str, str] | None = None
    ) -> RegistrationResult:
        return register_images(fixed, moving, label, self.transform_type, names=names, **self.kwargs)


class RegisterToReferenced(MapTransform):
    """Register ``data[key]`` for every key to ``data[fixed_key]``; resample labels with nearest.

    Args:
        keys: moving images (``fixed_key`` itself is skipped).
        fixed_key: the reference image; all outputs get its grid and affine.
        label_keys: ``{label_key: image_key}``: each label map follows the transform found for
            ``image_key`` (which must be in ``keys``); the label must be on that image's grid.
        transform_type: ``rigid``, ``affine`` or ``bspline``.
        allow_missing_keys: skip keys that are absent.
        kwargs: further options of :func:`register_images`.

    A registration that fails its checks raises :class:`RegistrationError` naming the keys.

    Example:
        >>> reg = RegisterToReferenced(["pet"], fixed_key="ct", label_keys={"pet_seg": "pet"})
        >>> # out = reg({"ct": ct, "pet": pet, "pet_seg": seg}); out["pet"].affine == ct.affine
    """

    backend = RegisterToReference.backend

    def __init__(
        self,
        keys: KeysCollection,
        fixed_key: Hashable,
        label_keys: Mapping[Hashable, Hashable] | None = None,
        transform_type: str = "rigid",
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.fixed_key = fixed_key
        self.label_keys = dict(label_keys or {})
        for lk, ik in self.label_keys.items():
            if ik not in self.keys:
                raise ValueError(f"label_keys[{lk!r}] = {ik!r} is not one of keys {tuple(self.keys)}")
        self.register = RegisterToReference(transform_type, **kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.fixed_key not in d:
            raise KeyError(f"fixed_key {self.fixed_key!r} is not in the data (keys: {list(d)})")
        fixed = d[self.fixed_key]
        for key in self.key_iterator(d):
            if key == self.fixed_key:
                continue
            labels = [lk for lk, ik in self.label_keys.items() if ik == key and lk in d]
            first_label = d[labels[0]] if labels else None
            result = self.register(d[key], fixed, first_label, names=(str(self.fixed_key), str(key)))
            rec = _record(result, str(self.fixed_key))
            d[key] = _tag(result.image, rec)
            for i, lk in enumerate(labels):
                if i == 0 and result.label is not None:
                    d[lk] = _tag(result.label, rec)
                else:
                    lab = load_image(d[lk], f"label {lk!r}")
                    d[lk] = _tag(
                        resample_to_reference(lab, load_image(fixed), result.transform, "nearest"), rec
                    )
        return d


def _tag(image: MetaTensor, record: dict[str, Any]) -> MetaTensor:
    image.meta["registration"] = dict(record)
    return image
