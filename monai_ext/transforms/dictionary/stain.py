"""Dictionary wrappers (suffix ``d``) of :mod:`monai_ext.transforms.array.stain`; no logic of their own.

Random wrappers draw once per call and apply the same parameters to every key (image and label
alike for :class:`RandDihedral2Dd`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import InvertibleTransform, MapTransform, RandomizableTransform

from monai_ext.transforms.array import stain as A

__all__ = [
    "HistoTissueMaskd",
    "MacenkoStainNormalized",
    "ReinhardStainNormalized",
    "RandHEDJitterd",
    "RandHSVJitterd",
    "RandRGBBrightnessContrastd",
    "RandDihedral2Dd",
    "RandRGBGaussianBlurd",
]


class _Mapd(MapTransform):
    """Apply ``self.t`` to every key."""

    t: Any

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.t(d[key])
        return d


class HistoTissueMaskd(_Mapd):
    """Dictionary :class:`~monai_ext.transforms.array.stain.HistoTissueMask`: writes ``{key}{postfix}``.

    Example:
        >>> HistoTissueMaskd("image")({"image": torch.zeros(3, 4, 4)})["image_tissue"].shape
        torch.Size([1, 4, 4])
    """

    def __init__(
        self, keys: KeysCollection, postfix: str = "_tissue", allow_missing_keys: bool = False, **kwargs
    ):
        super().__init__(keys, allow_missing_keys)
        self.t, self.postfix = A.HistoTissueMask(**kwargs), postfix

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[f"{key}{self.postfix}"] = self.t(d[key])
        return d


class MacenkoStainNormalized(_Mapd):
    """Dictionary :class:`~monai_ext.transforms.array.stain.MacenkoStainNormalize`; the pass-through
    flag of each key goes to ``{key}{passthrough_postfix}`` (set ``None`` to skip).

    Example:
        >>> t = MacenkoStainNormalized("image")
        >>> out = t({"image": torch.full((3, 16, 16), 255, dtype=torch.uint8)})
        >>> bool(out["image_stain_passthrough"])
        True
    """

    def __init__(
        self,
        keys: KeysCollection,
        passthrough_postfix: str | None = "_stain_passthrough",
        allow_missing_keys: bool = False,
        **kwargs,
    ):
        super().__init__(keys, allow_missing_keys)
        self.t, self.postfix = A.MacenkoStainNormalize(**kwargs), passthrough_postfix

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.t(d[key])
            if self.postfix is not None:
                d[f"{key}{self.postfix}"] = self.t.passthrough
        return d


class ReinhardStainNormalized(MacenkoStainNormalized):
    """Dictionary :class:`~monai_ext.transforms.array.stain.ReinhardStainNormalize` (flag as above).

    Example:
        >>> t = ReinhardStainNormalized("image", target_mean=(65.0, 25.0, -15.0), target_std=(15.0, 8.0, 6.0))
        >>> t({"image": torch.rand(3, 16, 16) * 0.8})["image"].shape
        torch.Size([3, 16, 16])
    """

    def __init__(
        self,
        keys: KeysCollection,
        passthrough_postfix: str | None = "_stain_passthrough",
        allow_missing_keys: bool = False,
        **kwargs,
    ):
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.t, self.postfix = A.ReinhardStainNormalize(**kwargs), passthrough_postfix


class _RandMapd(RandomizableTransform, MapTransform):
    """Draw once with the wrapped array transform, apply the same parameters to every key."""

    t: Any

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool, t: Any) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, 1.0)
        self.t = t

    def set_random_state(self, seed: int | None = None, state=None) -> _RandMapd:
        super().set_random_state(seed, state)
        self.t.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.t.randomize(None)
        for key in self.key_iterator(d):
            d[key] = self.t(d[key], randomize=False)
        return d


class RandHEDJitterd(_RandMapd):
    """Dictionary :class:`~monai_ext.transforms.array.stain.RandHEDJitter`.

    Example:
        >>> RandHEDJitterd("image", prob=1.0)({"image": torch.rand(3, 8, 8)})["image"].shape
        torch.Size([3, 8, 8])
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs):
        super().__init__(keys, allow_missing_keys, A.RandHEDJitter(**kwargs))


class RandHSVJitterd(_RandMapd):
    """Dictionary :class:`~monai_ext.transforms.array.stain.RandHSVJitter`.

    Example:
        >>> RandHSVJitterd("image", prob=1.0)({"image": torch.rand(3, 8, 8)})["image"].shape
        torch.Size([3, 8, 8])
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs):
        super().__init__(keys, allow_missing_keys, A.RandHSVJitter(**kwargs))


class RandRGBBrightnessContrastd(_RandMapd):
    """Dictionary :class:`~monai_ext.transforms.array.stain.RandRGBBrightnessContrast`.

    Example:
        >>> RandRGBBrightnessContrastd("image", prob=1.0)({"image": torch.rand(3, 8, 8)})["image"].shape
        torch.Size([3, 8, 8])
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs):
        super().__init__(keys, allow_missing_keys, A.RandRGBBrightnessContrast(**kwargs))


class RandRGBGaussianBlurd(_RandMapd):
    """Dictionary :class:`~monai_ext.transforms.array.stain.RandRGBGaussianBlur`.

    Example:
        >>> RandRGBGaussianBlurd("image", prob=1.0)({"image": torch.rand(3, 16, 16)})["image"].shape
        torch.Size([3, 16, 16])
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs):
        super().__init__(keys, allow_missing_keys, A.RandRGBGaussianBlur(**kwargs))


class RandDihedral2Dd(_RandMapd, InvertibleTransform):
    """Dictionary :class:`~monai_ext.transforms.array.stain.RandDihedral2D`: one element for all keys
    (image and label stay aligned); invertible per key.

    Example:
        >>> t = RandDihedral2Dd(["image", "label"], prob=1.0)
        >>> out = t({"image": torch.rand(3, 8, 8), "label": torch.zeros(1, 8, 8)})
        >>> out["label"].shape
        torch.Size([1, 8, 8])
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs):
        super().__init__(keys, allow_missing_keys, A.RandDihedral2D(**kwargs))

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.t.inverse(d[key]) if isinstance(d[key], torch.Tensor) else d[key]
        return d
