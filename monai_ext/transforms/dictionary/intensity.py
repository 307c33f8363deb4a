"""Dictionary wrappers (suffix ``d``) of the array intensity transforms: one array transform, no logic.

Random wrappers draw once per call and apply the same parameters to every key.

Example:
    >>> import torch
    >>> from monai_ext.transforms.dictionary import HUWindowd
    >>> t = HUWindowd("image", a_min=-1000, a_max=1000)
    >>> t({"image": torch.zeros(1, 2, 2)})["image"].unique().tolist()
    [0.5]
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform

from monai_ext.transforms.array import intensity as ai

__all__ = [
    "HUWindowd",
    "MultiWindowHUd",
    "PercentileScaled",
    "NonzeroZScored",
    "RandGammad",
    "RandLegendreBiasFieldd",
    "RandDeviceGaussianNoised",
    "RandGaussianBlurd",
    "RandLowResolutiond",
]


class MapWrapper(MapTransform):
    """Apply ``self.transform`` to every key (deterministic transforms)."""

    array_cls: type = object

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = self.array_cls(**kwargs)
        self.backend = self.transform.backend

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class RandMapWrapper(RandomizableTransform, MapTransform):
    """Draw once with ``self.transform`` (prob handled here), apply to every key with the same draw."""

    array_cls: type = object
    spatial_randomize = False

    def __init__(
        self, keys: KeysCollection, prob: float = 0.1, allow_missing_keys: bool = False, **kwargs: Any
    ):
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.transform = self.array_cls(prob=1.0, **kwargs)
        self.backend = self.transform.backend

    def set_random_state(self, seed: int | None = None, state: Any = None) -> RandMapWrapper:
        super().set_random_state(seed, state)
        self.transform.set_random_state(seed, state)
        return self

    def randomize_for(self, first: Any) -> None:
        """Draw the array transform's parameters (once for all keys)."""
        if self.spatial_randomize:
            self.transform.randomize(spatial_dims=first.ndim - 1)
        else:
            self.transform.randomize()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        keys = list(self.key_iterator(d))
        if keys:
            self.randomize_for(d[keys[0]])
        for key in keys:
            d[key] = self.transform(d[key], randomize=False)
        return d


class HUWindowd(MapWrapper):
    """Dictionary :class:`~monai_ext.transforms.array.HUWindow`."""

    array_cls = ai.HUWindow


class MultiWindowHUd(MapWrapper):
    """Dictionary :class:`~monai_ext.transforms.array.MultiWindowHU`."""

    array_cls = ai.MultiWindowHU


class PercentileScaled(MapWrapper):
    """Dictionary :class:`~monai_ext.transforms.array.PercentileScale`."""

    array_cls = ai.PercentileScale


class NonzeroZScored(MapWrapper):
    """Dictionary :class:`~monai_ext.transforms.array.NonzeroZScore`."""

    array_cls = ai.NonzeroZScore


class RandGammad(RandMapWrapper):
    """Dictionary :class:`~monai_ext.transforms.array.RandGamma`."""

    array_cls = ai.RandGamma


class RandLegendreBiasFieldd(RandMapWrapper):
    """Dictionary :class:`~monai_ext.transforms.array.RandLegendreBiasField`."""

    array_cls = ai.RandLegendreBiasField
    spatial_randomize = True


class RandDeviceGaussianNoised(RandMapWrapper):
    """Dictionary :class:`~monai_ext.transforms.array.RandDeviceGaussianNoise`."""

    array_cls = ai.RandDeviceGaussianNoise


class RandGaussianBlurd(RandMapWrapper):
    """Dictionary :class:`~monai_ext.transforms.array.RandGaussianBlur`."""

    array_cls = ai.RandGaussianBlur


class RandLowResolutiond(RandMapWrapper):
    """Dictionary :class:`~monai_ext.transforms.array.RandLowResolution`."""

    array_cls = ai.RandLowResolution
