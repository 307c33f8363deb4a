"""Harrell's C-index for survival models: a function, a MONAI metric and an Ignite handler.

Pairs ``(i, j)`` are comparable when ``t_i < t_j`` and ``i`` had an event, or ``t_i == t_j`` with an
event for ``i`` and censoring for ``j``. A comparable pair is concordant when ``risk_i > risk_j``
(higher risk = earlier event); ties in risk count 1/2. This matches
``lifelines.utils.concordance_index(time, -risk, event)`` (lifelines takes predicted survival times).

Survival targets use the ``(B, 2)`` ``[time, event]`` convention of :mod:`monai_ext.losses.survival`.

Example:
    >>> import torch
    >>> risk = torch.tensor([3.0, 2.0, 1.0])
    >>> y = torch.tensor([[1.0, 1.0], [2.0, 1.0], [3.0, 0.0]])
    >>> float(concordance_index(risk, y[:, 0], y[:, 1]))
    1.0
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from monai.handlers import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric

__all__ = ["ConcordanceIndexHandler", "ConcordanceIndexMetric", "concordance_index"]


def concordance_index(
    risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor, chunk_size: int = 2048
) -> torch.Tensor:
    """Harrell's C-index (float64 scalar tensor); NaN with a warning when no pair is comparable.

    Computed exactly over all pairs in row chunks of ``chunk_size`` (memory ``chunk_size * N``).

    Example:
        >>> float(concordance_index(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0]), torch.tensor([1, 1])))
        0.0
    """
    risk = torch.as_tensor(risk).reshape(-1).double()
    time = torch.as_tensor(time).reshape(-1).double().to(risk.device)
    event = torch.as_tensor(event).reshape(-1).to(risk.device) > 0
    if not (risk.numel() == time.numel() == event.numel()):
        raise ValueError(
            f"concordance_index: `risk`, `time`, `event` must have the same length, got "
            f"{risk.numel()}, {time.numel()}, {event.numel()}."
        )
    if not bool(torch.isfinite(risk).all() and torch.isfinite(time).all()):
        raise ValueError("concordance_index: `risk` and `time` must be finite (no NaN/inf).")
    concordant = torch.zeros((), dtype=torch.float64, device=risk.device)
    comparable = torch.zeros((), dtype=torch.float64, device=risk.device)
    for start in range(0, risk.numel(), chunk_size):
        ti, ri, ei = (
            time[start : start + chunk_size, None],
            risk[start : start + chunk_size, None],
            event[start:],
        )
        ei = ei[:chunk_size, None]
        comp = ei & ((ti < time[None, :]) | ((ti == time[None, :]) & ~event[None, :]))
        score = (ri > risk[None, :]).double() + 0.5 * (ri == risk[None, :]).double()
        concordant = concordant + (score * comp).sum()
        comparable = comparable + comp.sum()
    if comparable == 0:
        warnings.warn("concordance_index: no comparable pairs (no events?); returning NaN.", stacklevel=2)
        return torch.tensor(float("nan"), dtype=torch.float64)
    return concordant / comparable


class ConcordanceIndexMetric(CumulativeIterationMetric):
    """Harrell's C-index accumulated over iterations (``CumulativeIterationMetric``).

    ``metric(y_pred, y)`` per batch with ``y_pred`` risk scores ``(B,)`` or ``(B, 1)`` (or a list of
    per-sample tensors) and ``y`` ``(B, 2)`` ``[time, event]``; ``aggregate()`` returns the C-index over
    everything seen since ``reset()``.

    Args:
        higher_is_riskier: ``True`` if a larger ``y_pred`` means an earlier event (risk, hazard); ``False``
            for predicted survival times.

    Example:
        >>> metric = ConcordanceIndexMetric()
        >>> _ = metric(torch.tensor([2.0, 1.0]), torch.tensor([[1.0, 1.0], [2.0, 0.0]]))
        >>> float(metric.aggregate())
        1.0
    """

    def __init__(self, higher_is_riskier: bool = True) -> None:
        super().__init__()
        self.higher_is_riskier = higher_is_riskier

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> list:
        if y is None:
            raise ValueError("ConcordanceIndexMetric: `y` ([time, event], shape (B, 2)) is required.")
        risk = y_pred.detach().reshape(y_pred.shape[0], -1)
        if risk.shape[1] != 1:
            raise ValueError(
                f"ConcordanceIndexMetric: `y_pred` must hold one risk score per sample, "
                f"got {list(y_pred.shape)}."
            )
        target = y.detach().reshape(y.shape[0], -1)
        if target.shape[1] != 2 or target.shape[0] != risk.shape[0]:
            raise ValueError(
                f"ConcordanceIndexMetric: `y` must have shape (B, 2) = ({risk.shape[0]}, 2), "
                f"got {list(y.shape)}."
            )
        return [risk.float(), target.float()]

    def aggregate(self) -> torch.Tensor:
        buffers = self.get_buffer()
        if not isinstance(buffers, (list, tuple)) or len(buffers) != 2:
            raise ValueError("ConcordanceIndexMetric: nothing accumulated; call the metric on a batch first.")
        risk, target = buffers
        risk = risk.reshape(-1) if self.higher_is_riskier else -risk.reshape(-1)
        return concordance_index(risk, target[:, 0], target[:, 1])


class ConcordanceIndexHandler(IgniteMetricHandler):
    """Ignite metric computing Harrell's C-index over an epoch (wraps :class:`ConcordanceIndexMetric`).

    Example:
        >>> handler = ConcordanceIndexHandler(output_transform=lambda out: (out["pred"], out["label"]))
        >>> handler.update((torch.tensor([2.0, 1.0]), torch.tensor([[1.0, 1.0], [2.0, 0.0]])))
        >>> handler.compute()
        1.0
    """

    def __init__(
        self,
        higher_is_riskier: bool = True,
        output_transform: Callable = lambda x: x,
        save_details: bool = False,
    ) -> None:
        super().__init__(
            metric_fn=ConcordanceIndexMetric(higher_is_riskier=higher_is_riskier),
            output_transform=output_transform,
            save_details=save_details,
        )
