"""Dictionary wrappers (suffix ``d``) of the array spatial transforms: same geometry for every key.

``mode`` may be given per key (e.g. ``("bilinear", "nearest")`` for image and label); random wrappers
draw once per call. ``inverse`` undoes the affine / crop per key through MONAI's applied-operations
stack, so ``monai.transforms.Invertd`` works.

Example:
    >>> import torch
    >>> from monai_ext.transforms.dictionary import RandAffineWarpd
    >>> t = RandAffineWarpd(["image", "label"], prob=1.0, rotate_range=0.3, mode=("bilinear", "nearest"))
    >>> out = t.set_random_state(0)({"image": torch.rand(1, 8, 8), "label": torch.ones(1, 8, 8)})
    >>> out["label"].shape, out["label"].applied_operations[-1]["class"]
    (torch.Size([1, 8, 8]), 'RandAffineWarp')
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from monai.config import KeysCollection
from monai.transforms import InvertibleTransform, MapTransform, RandomizableTransform
from monai.utils import ensure_tuple_rep

from monai_ext.transforms.array import spatial as asp
from monai_ext.transforms.dictionary.intensity import RandMapWrapper

__all__ = ["AffineWarpd", "RandAffineWarpd", "RandElasticWarpd", "RandLabelBalancedCropd"]


class AffineWarpd(MapTransform, InvertibleTransform):
    """Dictionary :class:`~monai_ext.transforms.array.AffineWarp` (per-key ``mode``); invertible."""

    def __init__(
        self,
        keys: KeysCollection,
        affine: Any,
        mode: str | Sequence[str] = "bilinear",
        padding_mode: str | Sequence[str] = "zeros",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.transform = asp.AffineWarp(affine)
        self.backend = self.transform.backend
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        self.padding_mode = ensure_tuple_rep(padding_mode, len(self.keys))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, m, p in self.key_iterator(d, self.mode, self.padding_mode):
            d[key] = self.transform(d[key], mode=m, padding_mode=p)
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform.inverse(d[key])
        return d


class _RandWarpd(RandMapWrapper):
    """Shared body of the random warps: per-key ``mode`` / ``padding_mode``, one draw for all keys.

    ``track_skipped`` warps every key even when not drawn (as a recorded no-op, so ``inverse`` pops
    one entry per call); otherwise a skipped call returns the data untouched.
    """

    track_skipped = False
    spatial_randomize = True

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.1,
        mode: str | Sequence[str] = "bilinear",
        padding_mode: str | Sequence[str] = "zeros",
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, prob, allow_missing_keys, **kwargs)
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        self.padding_mode = ensure_tuple_rep(padding_mode, len(self.keys))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        keys = list(self.key_iterator(d))
        if not keys or not (self._do_transform or self.track_skipped):
            return d
        self.randomize_for(d[keys[0]])
        self.transform._do_transform = self._do_transform
        for key, m, p in self.key_iterator(d, self.mode, self.padding_mode):
            d[key] = self.transform(d[key], mode=m, padding_mode=p, randomize=False)
        return d


class RandAffineWarpd(_RandWarpd, InvertibleTransform):
    """Dictionary :class:`~monai_ext.transforms.array.RandAffineWarp` (per-key ``mode``); invertible."""

    array_cls = asp.RandAffineWarp
    track_skipped = True  # not applied: tracked as a no-op for inverse

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform.inverse(d[key])
        return d


class RandElasticWarpd(_RandWarpd):
    """Dictionary :class:`~monai_ext.transforms.array.RandElasticWarp` (per-key ``mode``; default
    ``padding_mode="border"``)."""

    array_cls = asp.RandElasticWarp

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.1,
        mode: str | Sequence[str] = "bilinear",
        padding_mode: str | Sequence[str] = "border",
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, prob, mode, padding_mode, allow_missing_keys, **kwargs)


class RandLabelBalancedCropd(RandomizableTransform, MapTransform, InvertibleTransform):
    """Dictionary :class:`~monai_ext.transforms.array.RandLabelBalancedCrop` -> ``num_samples`` dicts."""

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str,
        spatial_size: Sequence[int],
        num_samples: int = 1,
        ratios: Sequence[float] = (1.0, 1.0),
        image_key: str | None = None,
        image_threshold: float | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, 1.0)
        self.label_key, self.image_key = label_key, image_key
        self.cropper = asp.RandLabelBalancedCrop(spatial_size, num_samples, ratios, image_threshold)
        self.backend = self.cropper.backend

    def set_random_state(self, seed: int | None = None, state: Any = None) -> RandLabelBalancedCropd:
        super().set_random_state(seed, state)
        self.cropper.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        if self.label_key not in d:
            raise KeyError(f"RandLabelBalancedCropd: `label_key` {self.label_key!r} not in the data.")
        label = asp.to_torch(d[self.label_key], "RandLabelBalancedCropd")
        image = None if self.image_key is None else asp.to_torch(d[self.image_key], "RandLabelBalancedCropd")
        self.cropper.randomize(label, image)
        out = [dict(d) for _ in range(self.cropper.num_samples)]
        for key in self.key_iterator(d):
            for i, crop in enumerate(self.cropper(d[key], randomize=False)):
                out[i][key] = crop
        return out

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.cropper.inverse(d[key])
        return d
