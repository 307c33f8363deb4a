"""Per-feature attributions for the tabular branch of image + tabular networks.

:func:`tabular_integrated_gradients`: integrated gradients (Sundararajan et al., ICML 2017) written in
torch. For :class:`monai_ext.networks.ImageTabularNet` built with ``missing_indicator=True`` the path runs
in the *encoded* space that the network sees, ``[values with NaN -> 0, 0/1 missingness indicators]``, from
a baseline of observed values (``baseline``, default 0, indicators 0) to the input; the attribution of
feature ``j`` is the sum over its value column and its indicator column. So a missing variable gets the
effect of "being missing" instead of a NaN, and completeness holds: the attributions sum to
``f(input) - f(baseline)`` up to the Riemann error. For other networks the path runs over the raw
``tabular`` input, which must then be finite.

:func:`tabular_occlusion`: per feature, the change of the explained output when that feature is replaced
by a reference (default: marked missing, NaN, when the network encodes missingness; else 0).

Example:
    >>> import torch
    >>> from monai_ext.networks import ImageTabularNet
    >>> net = ImageTabularNet(2, 1, 1, 3, channels=(4, 8), strides=(2,)).eval()
    >>> tab = torch.tensor([[0.5, float("nan"), -1.0]])
    >>> tabular_integrated_gradients(net, torch.rand(1, 1, 8, 8), tab, class_idx=1).shape
    torch.Size([1, 3])
"""

from __future__ import annotations

import torch
from torch import nn

from monai_ext.networks.blocks import TabularMissingIndicator

__all__ = ["tabular_integrated_gradients", "tabular_occlusion"]


def _indicator(model: nn.Module) -> TabularMissingIndicator | None:
    encoder = getattr(model, "tabular_encoder", None)
    if isinstance(encoder, nn.Sequential) and isinstance(encoder[0], TabularMissingIndicator):
        return encoder[0]
    return None


def _targets(scores: torch.Tensor, class_idx: int | torch.Tensor | None, name: str) -> torch.Tensor:
    b = scores.shape[0]
    if class_idx is None:
        return scores.argmax(dim=1)
    t = torch.as_tensor(class_idx, device=scores.device).long().reshape(-1)
    if t.numel() == 1:
        t = t.expand(b)
    if t.numel() != b or bool((t < 0).any()) or bool((t >= scores.shape[1]).any()):
        raise ValueError(f"{name}: `class_idx` must be an int or (B={b},) indices in [0, {scores.shape[1]}).")
    return t


def _check(image: torch.Tensor, tabular: torch.Tensor, name: str) -> None:
    if not isinstance(tabular, torch.Tensor) or tabular.dim() != 2 or tabular.shape[0] != image.shape[0]:
        raise ValueError(
            f"{name}: `tabular` must be a (B={image.shape[0]}, T) tensor, "
            f"got {getattr(tabular, 'shape', None)}."
        )


def tabular_integrated_gradients(
    model: nn.Module,
    image: torch.Tensor,
    tabular: torch.Tensor,
    class_idx: int | torch.Tensor | None = None,
    baseline: torch.Tensor | float = 0.0,
    steps: int = 32,
    presence: torch.Tensor | None = None,
) -> torch.Tensor:
    """Integrated-gradients attribution ``(B, T)`` of each tabular variable to output column ``class_idx``.

    Args:
        model: network called as ``model(image, presence=..., tabular=...)`` returning ``(B, K)``.
        image: ``(B, C, *spatial)``, held fixed.
        tabular: ``(B, T)``; NaN = missing (networks with a missingness indicator only).
        class_idx: output column to explain (int or ``(B,)``); ``None`` = argmax of the output. For a Cox
            head use its column, ``num_classes``.
        baseline: observed reference values, scalar or ``(T,)`` / ``(B, T)`` (e.g. the training means).
        steps: Riemann steps (midpoint rule) along the path.
        presence: optional ``(B, M)`` modality mask, passed through.

    Example:
        >>> lin = nn.Linear(2, 1)
        >>> class Net(nn.Module):
        ...     def forward(self, image, presence=None, tabular=None):
        ...         return lin(tabular)
        >>> attr = tabular_integrated_gradients(Net(), torch.zeros(1, 1, 2, 2), torch.tensor([[1.0, 2.0]]),
        ...                                     class_idx=0)
        >>> torch.allclose(attr, lin.weight * torch.tensor([[1.0, 2.0]]))
        True
    """
    name = "tabular_integrated_gradients"
    _check(image, tabular, name)
    if steps < 1:
        raise ValueError(f"{name}: `steps` must be >= 1, got {steps}.")
    t = tabular.shape[1]
    base = torch.as_tensor(baseline, dtype=image.dtype, device=image.device).expand(tabular.shape[0], t)
    indicator = _indicator(model)
    if indicator is not None:
        encoded = indicator(tabular.to(image.device, image.dtype))
        with torch.no_grad():
            start = indicator(base.clone())
    else:
        if bool(torch.isnan(tabular).any()):
            raise ValueError(
                f"{name}: `tabular` contains NaN but {type(model).__name__} has no missingness indicator "
                f"(tabular_encoder[0] is not a TabularMissingIndicator); impute missing values first."
            )
        encoded = tabular.to(image.device, image.dtype)
        start = base
    current: dict[str, torch.Tensor] = {}

    def replace(_module, _inputs, _output):
        return current["enc"]

    handle = indicator.register_forward_hook(replace) if indicator is not None else None
    was_training = model.training
    model.eval()
    total = torch.zeros_like(encoded)
    try:
        with torch.no_grad():
            current["enc"] = encoded
            out = model(image, presence=presence, tabular=tabular)
        targets = _targets(out, class_idx, name)
        rows = torch.arange(out.shape[0], device=out.device)
        with torch.enable_grad():
            for k in range(steps):
                alpha = (k + 0.5) / steps
                point = (start + alpha * (encoded - start)).detach().requires_grad_(True)
                current["enc"] = point
                # the hook feeds `point` to the network; without an indicator `point` is the raw input
                score = model(image, presence=presence, tabular=point if indicator is None else tabular)
                (grad,) = torch.autograd.grad(score[rows, targets].sum(), point)
                total += grad
    finally:
        if handle is not None:
            handle.remove()
        model.train(was_training)
    attr = (encoded - start) * total / steps
    if attr.shape[1] == 2 * t:
        attr = attr[:, :t] + attr[:, t:]
    return attr.detach()


def tabular_occlusion(
    model: nn.Module,
    image: torch.Tensor,
    tabular: torch.Tensor,
    class_idx: int | torch.Tensor | None = None,
    reference: float | torch.Tensor | None = None,
    presence: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-feature occlusion ``(B, T)``: ``f(input) - f(input with feature j set to reference)``.

    ``reference=None`` marks the feature missing (NaN) when the network encodes missingness, else uses 0.
    Features already equal to the reference (or already missing) get 0.

    Example:
        >>> from monai_ext.networks import ImageTabularNet
        >>> net = ImageTabularNet(2, 1, 1, 2, channels=(4, 8), strides=(2,)).eval()
        >>> tabular_occlusion(net, torch.rand(2, 1, 8, 8), torch.tensor([[1.0, 2.0], [float("nan"), 0.0]]),
        ...                   class_idx=0)[1, 0].item()
        0.0
    """
    name = "tabular_occlusion"
    _check(image, tabular, name)
    if reference is None:
        reference = float("nan") if _indicator(model) is not None else 0.0
    b, t = tabular.shape
    ref = torch.as_tensor(reference, dtype=tabular.dtype, device=tabular.device).expand(b, t)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(image, presence=presence, tabular=tabular)
            targets = _targets(out, class_idx, name)
            rows = torch.arange(b, device=out.device)
            full = out[rows, targets]
            attr = torch.zeros(b, t, dtype=out.dtype, device=out.device)
            for j in range(t):
                occluded = tabular.clone()
                occluded[:, j] = ref[:, j]
                attr[:, j] = full - model(image, presence=presence, tabular=occluded)[rows, targets]
    finally:
        model.train(was_training)
    return attr
