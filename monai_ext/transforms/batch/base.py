"""Base class of the batch layer: validation, per-device seeded generator, per-sample ``prob``, replay.

Every batch augmentation is a :class:`BatchAugmentation` (``nn.Module``): it takes ``(B, C, *spatial)``
on any device, draws its per-sample parameters as ``(B,)``-leading tensors from a ``torch.Generator``
on the input's device (seeded by ``seed``; no host copies), applies each sample with probability
``prob`` and returns a :class:`BatchAugResult` ``(image, label, params)``; ``params=`` replays a call.
The validation helpers here (:func:`check_batch_image`, :func:`check_batch_label`,
:func:`value_range`) are shared by every batch module, including the deterministic normalisers.

Example:
    >>> import torch
    >>> from monai_ext.transforms.batch import BatchRandGamma
    >>> x = torch.rand(4, 1, 8, 8)
    >>> aug = BatchRandGamma(prob=0.5, gamma=(0.5, 2.0), seed=0)
    >>> out = aug(x)
    >>> torch.equal(aug(x, params=out.params).image, out.image)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

__all__ = ["BatchAugResult", "BatchAugmentation"]

_LAYOUT = {2: "(B, C, H, W)", 3: "(B, C, D, H, W)"}


class BatchAugResult(NamedTuple):
    """Output of a batch augmentation: the image, the label (or None) and the parameters to replay."""

    image: torch.Tensor
    label: torch.Tensor | None
    params: dict[str, Any]


def value_range(
    v: float | Sequence[float], name: str, owner: str, low: float | None = None
) -> tuple[float, float]:
    """``v`` or ``(min, max)`` as a float range, checked ``min <= max`` (and ``min >= low``).

    Example:
        >>> value_range((0.5, 2.0), "gamma", "Demo")
        (0.5, 2.0)
    """
    lo, hi = (float(v), float(v)) if isinstance(v, int | float) else (float(v[0]), float(v[1]))
    if hi < lo or (low is not None and lo < low):
        bound = "" if low is None else f" and min >= {low}"
        raise ValueError(f"{owner}: `{name}` must be a (min, max) range with min <= max{bound}, got {v}.")
    return lo, hi


def check_batch_image(
    image: torch.Tensor,
    owner: str,
    spatial_dims: Sequence[int] = (2, 3),
    num_channels: int | None = None,
    allow_integer: bool = False,
    check_finite: bool = True,
) -> None:
    """Raise a clear error naming ``owner`` unless ``image`` is a non-empty ``(B, C, *spatial)`` batch.

    ``check_finite`` rejects NaN / Inf in floating images (one device sync).

    Example:
        >>> check_batch_image(torch.zeros(0, 1, 4, 4), "Demo")
        Traceback (most recent call last):
        ...
        ValueError: Demo: `image` batch is empty (B=0); expected at least one sample.
    """
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{owner}: `image` must be a torch.Tensor, got {type(image).__name__}.")
    if image.ndim - 2 not in spatial_dims:
        layouts = " or ".join(_LAYOUT[d] for d in spatial_dims)
        raise ValueError(f"{owner}: `image` must be {layouts}, got {tuple(image.shape)}.")
    if image.shape[0] == 0:
        raise ValueError(f"{owner}: `image` batch is empty (B=0); expected at least one sample.")
    if num_channels is not None and image.shape[1] != num_channels:
        raise ValueError(f"{owner}: `image` has {image.shape[1]} channels, expected {num_channels}.")
    if not image.is_floating_point() and not allow_integer:
        raise TypeError(f"{owner}: `image` must be a floating tensor, got {image.dtype}.")
    if check_finite and image.is_floating_point() and not bool(torch.isfinite(image).all()):
        raise ValueError(f"{owner}: `image` contains NaN or Inf values.")


def check_batch_label(label: torch.Tensor | None, image: torch.Tensor, owner: str) -> None:
    """Raise unless ``label`` is None or a tensor with ``image``'s batch size and spatial size.

    Example:
        >>> check_batch_label(torch.zeros(2, 1, 4, 4), torch.zeros(2, 3, 4, 4), "Demo")
    """
    if label is None:
        return
    if not isinstance(label, torch.Tensor):
        raise TypeError(f"{owner}: `label` must be a torch.Tensor, got {type(label).__name__}.")
    if label.ndim != image.ndim or label.shape[0] != image.shape[0] or label.shape[2:] != image.shape[2:]:
        raise ValueError(
            f"{owner}: `label` shape {tuple(label.shape)} does not match `image` shape "
            f"{tuple(image.shape)}; expected the same batch size and spatial size."
        )


class BatchAugmentation(nn.Module):
    """Base class: validation, per-device seeded generator, per-sample ``prob`` and parameter replay.

    Subclasses implement ``draw(image, generator) -> dict`` and ``apply(image, label, params)``, and
    may extend ``validate``. ``params`` always holds ``apply``, a ``(B,)`` bool mask of the samples
    drawn for augmentation; the others must come back bit-identical. ``check_finite=True`` rejects
    NaN/Inf images (one device sync per call; set False in hot loops that validate elsewhere, e.g.
    inside :class:`~monai_ext.transforms.batch.hook.BatchAugChain`). Class attributes:
    ``transforms_label`` (geometry applied to the label too), ``allow_integer`` (integer images
    accepted), ``spatial_dims`` (2 and/or 3), ``supports_inplace`` (``apply`` takes ``inplace=True``
    and may then overwrite ``image``; the chain asks for it only on tensors it owns).

    Example:
        >>> from monai_ext.transforms.batch import BatchRandGamma
        >>> aug = BatchRandGamma(prob=1.0, gamma=(0.5, 2.0), seed=1)
        >>> aug(torch.rand(2, 1, 4, 4)).params["gamma"].shape
        torch.Size([2])
    """

    transforms_label = False
    allow_integer = False
    supports_inplace = False
    spatial_dims: tuple[int, ...] = (2, 3)

    def __init__(
        self,
        prob: float = 1.0,
        seed: int | None = None,
        num_channels: int | None = None,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"{type(self).__name__}: `prob` must be in [0, 1], got {prob}.")
        self.prob = float(prob)
        self.seed = seed
        self.num_channels = num_channels
        self.check_finite = check_finite
        self._gen: torch.Generator | None = None

    def set_seed(self, seed: int | None) -> BatchAugmentation:
        """Reseed (drops the current generator)."""
        self.seed, self._gen = seed, None
        return self

    def generator(self, device: torch.device) -> torch.Generator:
        """The module's generator on ``device`` (created and seeded on first use)."""
        if self._gen is None or self._gen.device != device:
            seed = self.seed if self.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
            self._gen = torch.Generator(device=device)
            self._gen.manual_seed(seed)
        return self._gen

    def validate(self, image: torch.Tensor, label: torch.Tensor | None) -> None:
        """Raise a clear error for inputs this module cannot handle."""
        name = type(self).__name__
        check_batch_image(
            image, name, self.spatial_dims, self.num_channels, self.allow_integer, self.check_finite
        )
        check_batch_label(label, image, name)

    def draw(self, image: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        """Draw per-sample parameters (subclasses)."""
        return {}

    def apply(
        self, image: torch.Tensor, label: torch.Tensor | None, params: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Apply with the given parameters (subclasses)."""
        raise NotImplementedError

    def run(
        self,
        image: torch.Tensor,
        label: torch.Tensor | None = None,
        params: dict[str, Any] | None = None,
        inplace: bool = False,
    ) -> BatchAugResult:
        """Draw (unless ``params`` is given) and apply, without validation.

        ``inplace=True`` lets modules with ``supports_inplace`` overwrite ``image`` (for intermediate
        tensors that nobody else holds, as inside a chain); others ignore it.
        """
        if params is None:
            b, dev = image.shape[0], image.device
            g = self.generator(dev)
            if self.prob >= 1.0:
                apply = torch.ones(b, dtype=torch.bool, device=dev)
            else:
                apply = torch.rand(b, generator=g, device=dev) < self.prob
            params = {"apply": apply, **self.draw(image, g)}
        elif params["apply"].shape[0] != image.shape[0]:
            raise ValueError(
                f"{type(self).__name__}: `params` are for {params['apply'].shape[0]} samples, "
                f"`image` has {image.shape[0]}."
            )
        if inplace and self.supports_inplace:
            out, lab = self.apply(image, label, params, inplace=True)
        else:
            out, lab = self.apply(image, label, params)
        return BatchAugResult(out, lab, params)

    def forward(
        self, image: torch.Tensor, label: torch.Tensor | None = None, params: dict[str, Any] | None = None
    ) -> BatchAugResult:
        """Validate, then draw (unless ``params`` is given) and apply."""
        self.validate(image, label)
        return self.run(image, label, params)

    @staticmethod
    def _mask(apply: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return apply.reshape(-1, *([1] * (x.ndim - 1)))

    @staticmethod
    def _on_drawn(apply: torch.Tensor, x: torch.Tensor, fn: Any) -> torch.Tensor:
        """``fn(x[idx], idx)`` for the drawn samples, ``x`` for the others (``idx`` indexes ``params``).

        On the CPU ``fn`` runs on the drawn samples only; on other devices on the whole batch, blended
        by ``torch.where`` (no device sync).
        """
        if x.device.type != "cpu":
            return torch.where(apply.reshape(-1, *([1] * (x.ndim - 1))), fn(x, slice(None)), x)
        if bool(apply.all()):
            return fn(x, slice(None))
        idx = apply.nonzero().flatten()
        if not idx.numel():
            return x.clone() if x.is_floating_point() else x.float()
        res = fn(x[idx], idx)
        out = x.to(res.dtype, copy=True)  # integer images come back float, as on the whole-batch path
        out[idx] = res
        return out

    @staticmethod
    def _blend(apply: torch.Tensor, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``out`` where ``apply`` else ``x``, per sample; on the CPU no extra pass when all are applied."""
        if x.device.type == "cpu" and bool(apply.all()):  # a CPU check costs no device sync
            return out
        return torch.where(apply.reshape(-1, *([1] * (x.ndim - 1))), out, x)

    def _uniform(
        self, lo: float, hi: float, b: int, g: torch.Generator, dev: torch.device, *shape: int
    ) -> torch.Tensor:
        """``U(lo, hi)`` of shape ``(b, *shape)`` drawn on ``dev``."""
        return torch.rand((b, *shape), generator=g, device=dev) * (hi - lo) + lo
