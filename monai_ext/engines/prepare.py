"""``PrepareBatch`` for multimodal batches: modalities, a presence mask and tabular data.

MONAI engines call ``prepare_batch(batch, device, non_blocking)``; a return of
``(inputs, targets, args, kwargs)`` makes the inferer call ``network(inputs, *args, **kwargs)``.
:class:`MultimodalPrepareBatch` turns either

- a dict with one key per modality (``modality_keys``; each ``(B, C, *spatial)``, a modality key absent
  from the batch is zero-filled and marked absent), or
- a dict with one ``image`` ``(B, M*C, *spatial)`` tensor,

plus an optional ``presence`` ``(B, M)`` mask and ``tabular`` ``(B, T)`` tensor into
``(image, target, (), {"presence": ..., "tabular": ...})``, so the engine calls
``network(image, presence=..., tabular=...)`` (the signature of the ``monai_ext.networks`` fusion nets).
An optional batch augmentation runs on the device through
:class:`~monai_ext.transforms.batch.hook.GPUAugmentPrepareBatch`.

Example:
    >>> import torch
    >>> prep = MultimodalPrepareBatch(modality_keys=("t1", "t2"))
    >>> batch = {"t1": torch.ones(2, 1, 4, 4), "t2": torch.ones(2, 1, 4, 4), "label": torch.zeros(2)}
    >>> image, target, args, kwargs = prep(batch)
    >>> image.shape, kwargs["presence"].tolist()
    (torch.Size([2, 2, 4, 4]), [[True, True], [True, True]])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.engines.utils import PrepareBatch
from torch import nn

from monai_ext.transforms.batch.hook import GPUAugmentPrepareBatch

__all__ = ["MultimodalPrepareBatch"]


def _plain(x: Any) -> Any:
    return x.as_tensor() if hasattr(x, "as_tensor") else x


class MultimodalPrepareBatch(PrepareBatch):
    """Build ``(image, target, (), {"presence", "tabular"})`` from a multimodal batch dict.

    Args:
        modality_keys: per-modality image keys, concatenated along channels in this order; None: read
            ``image_key``.
        image_key: key of the stacked image when ``modality_keys`` is None.
        label_key: key of the target (None: no target).
        presence_key: key of the ``(B, M)`` presence mask; absent -> derived (all present, except
            modality keys missing from the batch).
        tabular_key: key of the ``(B, T)`` tabular data; passed as ``tabular=`` when present.
        augment: optional batch augmentation run on the device (via ``GPUAugmentPrepareBatch``).
        augment_label: augment the target with the image (segmentation); False for class / survival targets.
        pass_presence: pass ``presence=`` to the network (False for single-input networks).

    Example:
        >>> prep = MultimodalPrepareBatch(tabular_key="clin")
        >>> out = prep({"image": torch.ones(1, 2, 4, 4), "presence": torch.tensor([[1, 0]]),
        ...             "clin": torch.ones(1, 3), "label": torch.zeros(1)})
        >>> sorted(out[3]), out[3]["presence"].dtype
        (['presence', 'tabular'], torch.bool)
    """

    def __init__(
        self,
        modality_keys: Sequence[str] | None = None,
        image_key: str = "image",
        label_key: str | None = "label",
        presence_key: str = "presence",
        tabular_key: str | None = "tabular",
        augment: nn.Module | None = None,
        augment_label: bool = True,
        pass_presence: bool = True,
    ) -> None:
        if modality_keys is not None and (isinstance(modality_keys, str) or len(modality_keys) == 0):
            raise ValueError(
                f"MultimodalPrepareBatch: `modality_keys` must be a non-empty sequence of keys, "
                f"got {modality_keys!r}."
            )
        self.modality_keys = None if modality_keys is None else list(modality_keys)
        self.image_key = image_key
        self.label_key = label_key
        self.presence_key = presence_key
        self.tabular_key = tabular_key
        self.augment_label = augment_label
        self.pass_presence = pass_presence
        self._augment = GPUAugmentPrepareBatch(augment) if augment is not None else None

    def _image(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.modality_keys is None:
            if self.image_key not in batch:
                raise KeyError(
                    f"MultimodalPrepareBatch: batch has no {self.image_key!r} key (keys: {sorted(batch)})."
                )
            return _plain(batch[self.image_key]), None
        present = [k for k in self.modality_keys if k in batch]
        if not present:
            raise KeyError(
                f"MultimodalPrepareBatch: batch has none of the modality keys {self.modality_keys} "
                f"(keys: {sorted(batch)})."
            )
        ref = _plain(batch[present[0]])
        parts, mask = [], []
        for k in self.modality_keys:
            if k in batch:
                x = _plain(batch[k])
                if x.shape[0] != ref.shape[0] or x.shape[2:] != ref.shape[2:] or x.shape[1] != ref.shape[1]:
                    raise ValueError(
                        f"MultimodalPrepareBatch: modality {k!r} has shape {list(x.shape)}, expected "
                        f"{list(ref.shape)} like {present[0]!r}."
                    )
                parts.append(x)
                mask.append(torch.ones(ref.shape[0], dtype=torch.bool))
            else:
                parts.append(torch.zeros_like(ref))
                mask.append(torch.zeros(ref.shape[0], dtype=torch.bool))
        return torch.cat(parts, dim=1), torch.stack(mask, dim=1)

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, Any, tuple, dict[str, Any]]:
        """Return ``(image, target, (), {"presence": ..., "tabular": ...})`` on ``device``."""
        if not isinstance(batchdata, Mapping):
            raise TypeError(f"MultimodalPrepareBatch: batch must be a dict, got {type(batchdata).__name__}.")
        image, derived = self._image(batchdata)
        target = None
        if self.label_key is not None:
            if self.label_key not in batchdata:
                raise KeyError(
                    f"MultimodalPrepareBatch: batch has no {self.label_key!r} key "
                    f"(keys: {sorted(batchdata)})."
                )
            target = _plain(batchdata[self.label_key])

        def move(x: Any) -> Any:
            return (
                x.to(device=device, non_blocking=non_blocking, **kwargs) if isinstance(x, torch.Tensor) else x
            )

        if self._augment is not None:
            sub = {"image": image}
            if self.augment_label and target is not None:
                sub["label"] = target
            image, aug_label = self._augment(sub, device, non_blocking, **kwargs)
            if self.augment_label and target is not None:
                target = aug_label
        image, target = move(image), move(target)
        net_kwargs: dict[str, Any] = {}
        if self.pass_presence:
            presence = batchdata.get(self.presence_key, derived)
            if presence is not None:
                presence = torch.as_tensor(_plain(presence))
                if presence.dim() != 2 or presence.shape[0] != image.shape[0]:
                    raise ValueError(
                        f"MultimodalPrepareBatch: {self.presence_key!r} must have shape "
                        f"(B={image.shape[0]}, M), "
                        f"got {list(presence.shape)}."
                    )
                net_kwargs["presence"] = move(presence != 0)
        if self.tabular_key is not None and self.tabular_key in batchdata:
            tab = torch.as_tensor(_plain(batchdata[self.tabular_key]))
            if tab.dim() != 2 or tab.shape[0] != image.shape[0]:
                raise ValueError(
                    f"MultimodalPrepareBatch: {self.tabular_key!r} must have shape (B={image.shape[0]}, T), "
                    f"got {list(tab.shape)}."
                )
            net_kwargs["tabular"] = move(tab.float())
        return image, target, (), net_kwargs
