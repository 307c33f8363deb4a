"""Registration steps for bundle preprocessing: align sequences and stack them, or align to a template.

:class:`AlignSequencesd` registers the images under ``keys`` (one per MRI sequence, each loaded from its
own file with its own affine) to a reference sequence, then stacks them as the channels of one image
(the multimodal convention: one ``image`` whose channels are the sequences). It must run *before* the
sequences are concatenated, since each sequence may have its own grid, and a rigid/affine motion between
acquisitions is only visible through the per-file affines and the voxel content. Absent sequences become
zero channels; the reference is the first present key of ``fixed_keys`` (e.g. T1c, else T1, ...).

:class:`RegisterToImaged` registers ``data[key]`` to one fixed image read from a file (an atlas, a
template or one chosen study), so every case ends on the template's grid;
:meth:`RegisterToImaged.save_reference` writes the template next to a checkpoint so inference uses the
same one.

Both call :func:`monai_ext.registration.register_images` (Mattes mutual information, multi-resolution) and
raise :class:`~monai_ext.registration.RegistrationError` naming the images when a registration fails its
checks, so a failed alignment never reaches the network silently.

Example:
    >>> align = AlignSequencesd(["t1", "t1c", "t2", "flair"], fixed_keys=["t1c"], output_key="image",
    ...                         transform_type="rigid", shrink_factors=(2, 1), smoothing_sigmas=(1.0, 0.0))
    >>> align.fixed_keys
    ('t1c', 't1', 't2', 'flair')
    >>> # out = align(LoadImaged(["t1", "t1c", "t2", "flair"], ensure_channel_first=True)(files))
    >>> # out["image"].shape  -> (4, *t1c spatial shape); out["image"].affine == t1c affine
"""

from __future__ import annotations

import copy
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from monai_ext.registration.itk_registration import (
    TRANSFORM_TYPES,
    load_image,
    register_images,
    resample_to_reference,
)

__all__ = ["AlignSequencesd", "RegisterToImaged"]


def _same_grid(a: MetaTensor, b: MetaTensor) -> bool:
    return tuple(a.shape[1:]) == tuple(b.shape[1:]) and np.allclose(
        np.asarray(a.affine, float), np.asarray(b.affine, float), atol=1e-4
    )


def _identity(ndim: int) -> Any:
    import itk

    return itk.IdentityTransform[itk.D, ndim].New()


def _to_grid(label: MetaTensor, fixed: MetaTensor) -> MetaTensor:
    """``label`` unchanged when it is on ``fixed``'s grid, else resampled there (nearest, world space)."""
    if _same_grid(label, fixed):
        return label
    return resample_to_reference(label, fixed, _identity(fixed.ndim - 1), "nearest")


def _registered(
    moving: MetaTensor,
    fixed: MetaTensor,
    transform_type: str,
    padding_value: float,
    kwargs: Mapping[str, Any],
) -> tuple[MetaTensor, Any]:
    result = register_images(fixed, moving, None, transform_type, **kwargs)
    image = result.image
    if padding_value != 0.0:  # register_images pads with 0; CT wants air outside the moving image
        image = resample_to_reference(moving, fixed, result.transform, "linear", default_value=padding_value)
    return image, result


def _check_type(transform_type: str) -> str:
    if transform_type not in TRANSFORM_TYPES:
        raise ValueError(f"transform_type must be one of {TRANSFORM_TYPES}, got {transform_type!r}")
    return transform_type


class AlignSequencesd(MapTransform):
    """Register every sequence in ``keys`` to a reference sequence and stack them as channels.

    Args:
        keys: per-sequence images (channel-first MetaTensors after ``LoadImaged``, or file paths), in the
            channel order of the output.
        fixed_keys: reference candidates in order of preference; the first present one is the fixed image
            (its grid and affine become the output's). Keys not listed follow in ``keys`` order.
        output_key: where the stacked ``(len(keys) * C, *fixed spatial)`` float32 image goes.
        label_keys: label maps, taken to lie in the reference's world space (drawn on the reference
            sequence, as usual): kept when on the fixed grid, else resampled there (nearest neighbour).
        transform_type: ``rigid``, ``affine`` or ``bspline``.
        padding_value: intensity where a moved sequence has no data.
        allow_missing_keys: absent sequences (or ``None``) become zero channels; otherwise ``KeyError``.
        kwargs: options of :func:`~monai_ext.registration.register_images` (``shrink_factors``,
            ``smoothing_sigmas``, ``iterations``, ``sampling_fraction``, ``seed``, ...).

    The output's meta is the fixed sequence's (file name, affine); ``meta["registration_fixed"]`` names the
    reference key and ``meta["registration_ras"]`` holds one 4x4 RAS matrix (fixed -> moving points) per
    key: identity for the reference, NaN for an absent sequence or a B-spline. Inverting later transforms
    (``Invertd``) returns to the fixed sequence's grid.

    Example:
        >>> AlignSequencesd(["t2", "t1c"], fixed_keys=["t1c"], label_keys=["label"]).label_keys
        ('label',)
    """

    def __init__(
        self,
        keys: KeysCollection,
        fixed_keys: Sequence[Hashable] | None = None,
        output_key: Hashable = "image",
        label_keys: Sequence[Hashable] = (),
        transform_type: str = "rigid",
        padding_value: float = 0.0,
        allow_missing_keys: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if isinstance(fixed_keys, str):
            fixed_keys = [fixed_keys]
        preferred = list(fixed_keys or [])
        unknown = [k for k in preferred if k not in self.keys]
        if unknown:
            raise ValueError(f"AlignSequencesd: fixed_keys {unknown} are not in keys {list(self.keys)}")
        self.fixed_keys = tuple(dict.fromkeys([*preferred, *self.keys]))
        self.output_key = output_key
        self.label_keys = tuple([label_keys] if isinstance(label_keys, str) else label_keys)
        self.transform_type = _check_type(transform_type)
        self.padding_value = float(padding_value)
        self.kwargs = dict(kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        present = [k for k in self.keys if d.get(k) is not None]
        absent = [k for k in self.keys if k not in present]
        if absent and not self.allow_missing_keys:
            raise KeyError(f"AlignSequencesd: sequence(s) {absent} missing from the data (keys: {list(d)})")
        if not present:
            raise KeyError(f"AlignSequencesd: none of the sequences {list(self.keys)} is in the data")
        fixed_key = next(k for k in self.fixed_keys if k in present)
        fixed = load_image(d[fixed_key], f"reference sequence {fixed_key!r}")
        channels: list[torch.Tensor] = []
        nd = fixed.ndim - 1
        matrices = np.full((len(self.keys), nd + 1, nd + 1), np.nan)
        for i, key in enumerate(self.keys):
            if key not in present:
                channels.append(torch.full_like(fixed.as_tensor(), self.padding_value, dtype=torch.float32))
                continue
            if key == fixed_key:
                channels.append(fixed.as_tensor().float())
                matrices[i] = np.eye(nd + 1)
                continue
            moving = load_image(d[key], f"sequence {key!r}")
            image, result = _registered(moving, fixed, self.transform_type, self.padding_value, self.kwargs)
            channels.append(image.as_tensor().float())
            if result.matrix is not None:
                matrices[i] = result.matrix
        meta = copy.deepcopy({k: v for k, v in fixed.meta.items() if k != "affine"})
        meta["registration_fixed"] = str(fixed_key)
        meta["registration_ras"] = matrices
        d[self.output_key] = MetaTensor(torch.cat(channels), affine=fixed.affine.clone(), meta=meta)
        for lk in self.label_keys:
            if d.get(lk) is not None:
                d[lk] = _to_grid(load_image(d[lk], f"label {lk!r}"), fixed)
        return d


class RegisterToImaged(MapTransform):
    """Register ``data[key]`` for every key to one fixed image (a template), onto the template's grid.

    Args:
        keys: moving images (channel-first MetaTensors after ``LoadImaged``/``EnsureChannelFirstd``).
        reference: the template, a file path or a channel-first MetaTensor; read on first use.
        label_keys: ``{label_key: image_key}``: labels on ``image_key``'s grid follow its transform (nearest).
        transform_type: ``rigid``, ``affine`` or ``bspline``.
        padding_value: intensity where the moved image has no data (e.g. -1024 for CT air).
        allow_missing_keys: skip absent keys.
        kwargs: options of :func:`~monai_ext.registration.register_images`.

    Each output keeps its own meta (file name) with the template's affine; ``meta["registration_fixed"]``
    is the template's file name.

    Example:
        >>> reg = RegisterToImaged("image", reference="atlas.nii.gz", padding_value=-1024)
        >>> reg.padding_value
        -1024.0
        >>> # reg.save_reference("models/registration_reference.nii.gz"); reg({"image": ct})["image"]
    """

    def __init__(
        self,
        keys: KeysCollection,
        reference: str | os.PathLike | MetaTensor,
        label_keys: Mapping[Hashable, Hashable] | None = None,
        transform_type: str = "rigid",
        padding_value: float = 0.0,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if reference is None or (isinstance(reference, str) and not reference):
            raise ValueError(
                "RegisterToImaged: `reference` must name the fixed image (a file or a MetaTensor)"
            )
        self._reference_source = reference
        self._reference: MetaTensor | None = None
        self.label_keys = dict(label_keys or {})
        for lk, ik in self.label_keys.items():
            if ik not in self.keys:
                raise ValueError(f"label_keys[{lk!r}] = {ik!r} is not one of keys {tuple(self.keys)}")
        self.transform_type = _check_type(transform_type)
        self.padding_value = float(padding_value)
        self.kwargs = dict(kwargs)

    @property
    def reference(self) -> MetaTensor:
        """The fixed image (read once)."""
        if self._reference is None:
            self._reference = load_image(self._reference_source, "registration reference")
        return self._reference

    def _reference_name(self) -> str:
        src = self._reference_source
        if isinstance(src, str | os.PathLike):
            return os.path.basename(os.fspath(src))
        return str(src.meta.get("filename_or_obj", "reference")) if hasattr(src, "meta") else "reference"

    def save_reference(self, path: str | os.PathLike) -> Path:
        """Write the fixed image as NIfTI to ``path`` (atomically), e.g. next to the model checkpoint."""
        from monai_ext.registration.cli import write_nifti_atomic

        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_nifti_atomic(self.reference, str(out))
        return out

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        fixed = self.reference
        name = self._reference_name()
        for key in self.key_iterator(d):
            moving = load_image(d[key], f"image {key!r}")
            image, result = _registered(moving, fixed, self.transform_type, self.padding_value, self.kwargs)
            image.meta["registration_fixed"] = name
            d[key] = image
            for lk, ik in self.label_keys.items():
                if ik == key and d.get(lk) is not None:
                    lab = load_image(d[lk], f"label {lk!r}")
                    d[lk] = resample_to_reference(lab, fixed, result.transform, "nearest")
                    d[lk].meta["registration_fixed"] = name
        return d
