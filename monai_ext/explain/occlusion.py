"""Occlusion sensitivity over ``monai.visualize.OcclusionSensitivity``, as an importance map.

MONAI returns the class probabilities with each region occluded (low = important). :func:`occlusion_map`
turns that into ``p(class | image) - p(class | image with the region occluded)`` for the explained class,
one sample at a time, so larger values mean more important, like Grad-CAM. Extra network inputs
(``tabular=``) are bound and broadcast over MONAI's batches of occluded copies.

Example:
    >>> import torch
    >>> from monai_ext.networks import build_densenet
    >>> net = build_densenet(121, 2, 1, 2, init_features=4, growth_rate=4).eval()
    >>> occlusion_map(net, torch.rand(1, 1, 32, 32), mask_size=8).shape
    torch.Size([1, 1, 32, 32])
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import torch
from monai.visualize import OcclusionSensitivity
from torch import nn

from monai_ext.explain.cam import BoundInputs

__all__ = ["occlusion_map"]


def occlusion_map(
    model: nn.Module,
    image: torch.Tensor,
    class_idx: int | torch.Tensor | None = None,
    mask_size: int | Sequence[int] = 8,
    overlap: float = 0.5,
    mode: str | float = "mean_img",
    n_batch: int = 32,
    activate: bool | Callable = True,
    forward_kwargs: Mapping[str, torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """Drop of the explained class's probability when each region is occluded, ``(B, 1, *spatial)``.

    Args:
        model: classifier returning ``(B, K)`` logits.
        image: ``(B, C, *spatial)``; each sample is analysed on its own.
        class_idx: int, ``(B,)`` tensor, or ``None`` (predicted class).
        mask_size: occluded box size (int or one per spatial dim).
        overlap: overlap of successive boxes, in ``[0, 1)``.
        mode: MONAI occlusion mode: ``"mean_img"``, ``"mean_patch"``, ``"gaussian"`` or a constant value.
        n_batch: occluded copies per forward pass.
        activate: ``True`` = softmax (sigmoid for one output); a callable; or ``False`` (raw logits).
        forward_kwargs: other network inputs, e.g. ``{"tabular": t}`` (batch ``B`` or 1).

    Example:
        >>> from monai_ext.networks import ImageTabularNet
        >>> net = ImageTabularNet(2, 1, 1, 3, channels=(4, 8), strides=(2,))
        >>> occlusion_map(net, torch.rand(2, 1, 16, 16), class_idx=0, mask_size=4,
        ...               forward_kwargs={"tabular": torch.zeros(2, 3)}).shape
        torch.Size([2, 1, 16, 16])
    """
    if not isinstance(image, torch.Tensor) or image.dim() < 3:
        raise ValueError(
            f"occlusion_map: `image` must be a tensor (B, C, *spatial), "
            f"got {getattr(image, 'shape', type(image))}."
        )
    b = image.shape[0]
    kwargs = {k: v for k, v in (forward_kwargs or {}).items() if v is not None}
    for key, value in kwargs.items():
        if value.shape[0] not in (1, b):
            raise ValueError(f"occlusion_map: `forward_kwargs[{key!r}]` must have batch size 1 or B={b}.")
    num_classes = getattr(model, "num_classes", None)

    def act(logits: torch.Tensor) -> torch.Tensor:
        if isinstance(num_classes, int) and num_classes > 0:
            logits = logits[:, :num_classes]
        if callable(activate):
            return activate(logits)
        if activate:
            return logits.sigmoid() if logits.shape[1] == 1 else logits.softmax(1)
        return logits

    out = torch.zeros((b, 1, *image.shape[2:]), dtype=image.dtype, device=image.device)
    was_training = model.training
    model.eval()
    try:
        for i in range(b):
            one = {k: v[i : i + 1] if v.shape[0] == b else v for k, v in kwargs.items()}
            bound = BoundInputs(model, **one)
            x = image[i : i + 1]
            with torch.no_grad():
                probs = act(bound(x))
            if class_idx is None:
                c = int(probs.argmax(dim=1))
            else:
                idx = torch.as_tensor(class_idx).reshape(-1)
                c = int(idx[0] if idx.numel() == 1 else idx[i])
            if not 0 <= c < probs.shape[1]:
                raise ValueError(
                    f"occlusion_map: `class_idx` {c} is out of range for {probs.shape[1]} classes."
                )
            occ = OcclusionSensitivity(
                bound,
                mask_size=mask_size,
                n_batch=n_batch,
                verbose=False,
                mode=mode,
                overlap=overlap,
                activate=act,
            )
            with torch.no_grad(), warnings.catch_warnings():
                # MONAI's occlusion indexes with a list of slices (deprecated in torch, same result)
                warnings.filterwarnings("ignore", message="Using a non-tuple sequence")
                sens, _ = occ(x)
            out[i, 0] = (probs[0, c] - sens[0, c]).to(out.dtype)
    finally:
        model.train(was_training)
    return out
