"""Run batch augmentations on the device inside MONAI / Ignite engines.

:class:`GPUAugmentPrepareBatch` is a MONAI ``PrepareBatch``: it moves the batch to the engine's device
(as ``PrepareBatchDefault``), then applies a batch augmentation to image and label together, so the
augmentation runs on the GPU after the transfer. :class:`BatchAugChain` chains augmentations and
validates once. A bundle switches augmentation on or off with one key::

    "use_gpu_augment": true,
    "gpu_augment": {"_target_": "monai_ext.transforms.batch.hook.BatchAugChain", "transforms": [
        {"_target_": "monai_ext.transforms.batch.BatchRandAffine", "prob": 0.5, "rotate_range": 0.3},
        {"_target_": "monai_ext.transforms.batch.BatchRandGaussianNoise", "prob": 0.2}]},
    "prepare_batch": {"_target_": "monai_ext.transforms.batch.hook.GPUAugmentPrepareBatch",
                      "augment": "@gpu_augment", "enabled": "@use_gpu_augment"}

and passes ``"prepare_batch": "@prepare_batch"`` to its ``SupervisedTrainer``.

Example:
    >>> import torch
    >>> from monai_ext.transforms.batch import BatchRandFlip
    >>> prep = GPUAugmentPrepareBatch(BatchRandFlip(prob=1.0, seed=0))
    >>> img, lab = prep({"image": torch.rand(2, 1, 4, 4), "label": torch.zeros(2, 1, 4, 4)}, device="cpu")
    >>> img.shape
    torch.Size([2, 1, 4, 4])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.engines.utils import PrepareBatch, PrepareBatchDefault
from torch import nn

from monai_ext.transforms.batch.base import BatchAugmentation, BatchAugResult

__all__ = ["BatchAugChain", "GPUAugmentPrepareBatch"]


class BatchAugChain(nn.Module):
    """Apply batch augmentations in order to ``(image, label)``; ``params`` is a list, one entry each.

    Inputs are validated once by the first member (``check_finite`` there); members then run without
    re-validating. Replay with ``chain(image, label, params=out.params)``.

    Example:
        >>> from monai_ext.transforms.batch import BatchHUWindow, BatchRandAffine
        >>> augs = [BatchHUWindow(-1000, 1000), BatchRandAffine(prob=1.0, rotate_range=0.2, seed=0)]
        >>> chain = BatchAugChain(augs)
        >>> out = chain(torch.zeros(2, 1, 8, 8, 8))
        >>> len(out.params)
        2
    """

    def __init__(self, transforms: Sequence[BatchAugmentation], check_finite: bool = True) -> None:
        super().__init__()
        if not transforms:
            raise ValueError("BatchAugChain: `transforms` must not be empty.")
        for i, t in enumerate(transforms):
            if not isinstance(t, BatchAugmentation):
                raise TypeError(
                    f"BatchAugChain: `transforms[{i}]` must be a BatchAugmentation, got {type(t).__name__}."
                )
        self.transforms = nn.ModuleList(transforms)
        self.check_finite = check_finite

    def forward(
        self,
        image: torch.Tensor,
        label: torch.Tensor | None = None,
        params: list[dict[str, Any]] | None = None,
    ) -> BatchAugResult:
        """Validate once, then run each member (replaying ``params[i]`` if given)."""
        first = self.transforms[0]
        keep, first.check_finite = first.check_finite, self.check_finite
        try:
            first.validate(image, label)
        finally:
            first.check_finite = keep
        if params is not None and len(params) != len(self.transforms):
            raise ValueError(
                f"BatchAugChain: `params` has {len(params)} entries, expected {len(self.transforms)}."
            )
        out_params = []
        outside = {v.untyped_storage().data_ptr() for v in (image, label) if v is not None}
        for i, t in enumerate(self.transforms):
            # members after the first new tensor may overwrite it (the caller's tensors never are)
            owned = image.untyped_storage().data_ptr() not in outside and image.is_contiguous()
            res = t.run(image, label, None if params is None else params[i], inplace=owned)
            image, label = res.image, res.label
            out_params.append(res.params)
        return BatchAugResult(image, label, out_params)


class GPUAugmentPrepareBatch(PrepareBatch):
    """``PrepareBatchDefault`` followed by a batch augmentation of image and label on the device.

    Args:
        augment: a :class:`BatchAugmentation` or :class:`BatchAugChain` (or any module returning a
            :class:`BatchAugResult`); None disables augmentation.
        enabled: the one switch a bundle config flips; False makes this ``PrepareBatchDefault``.
        augment_label: transform the label with the image. None (default): only when the label is
            spatial (same number of dimensions as the image), so class or survival targets pass through.

    The augmented image and label come back as plain tensors (their per-sample metadata no longer
    describes the augmented voxels); augmentation runs under ``torch.no_grad``.

    Example:
        >>> prep = GPUAugmentPrepareBatch(None)
        >>> prep({"image": torch.ones(1, 1, 2, 2), "label": torch.ones(1, 1, 2, 2)})[0].shape
        torch.Size([1, 1, 2, 2])
    """

    def __init__(
        self, augment: nn.Module | None, enabled: bool = True, augment_label: bool | None = None
    ) -> None:
        if augment is not None and not callable(augment):
            raise TypeError(
                f"GPUAugmentPrepareBatch: `augment` must be a module, got {type(augment).__name__}."
            )
        self.augment = augment
        self.enabled = bool(enabled)
        self.augment_label = augment_label
        self._default = PrepareBatchDefault()

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor] | torch.Tensor | Sequence[torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Move ``batchdata`` to ``device`` and augment ``(image, label)`` there."""
        prepared = self._default(batchdata, device, non_blocking, **kwargs)
        if not self.enabled or self.augment is None:
            return prepared
        image, label = prepared if isinstance(prepared, tuple) else (prepared, None)
        image = image.as_tensor() if hasattr(image, "as_tensor") else image
        label = label.as_tensor() if hasattr(label, "as_tensor") else label
        spatial = label is not None and label.ndim == image.ndim
        with_label = spatial if self.augment_label is None else (self.augment_label and label is not None)
        with torch.no_grad():
            res = self.augment(image, label if with_label else None)
        return res.image, (res.label if with_label else label)
