"""Survival losses: Cox proportional-hazards partial likelihood and a discrete-time (logistic hazard) loss.

Survival targets follow one convention across ``monai_ext`` (losses, metrics, workflows):
``target`` is ``(B, 2)`` with column 0 the time (or the time-bin index) and column 1 the event
indicator (1 = event observed, 0 = censored). Both losses take ``forward(input, target)``, so they
plug into MONAI trainers as ``loss_function``.

Example:
    >>> import torch
    >>> loss = CoxPHLoss()
    >>> risk = torch.tensor([0.5, -0.2, 0.1], requires_grad=True)
    >>> target = torch.tensor([[2.0, 1.0], [5.0, 0.0], [3.0, 1.0]])
    >>> bool(torch.isfinite(loss(risk, target)))
    True
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch.nn.modules.loss import _Loss

__all__ = ["CoxPHLoss", "DiscreteTimeSurvivalLoss", "discretize_survival_time"]


def _check_target(input: torch.Tensor, target: torch.Tensor, name: str, width: int | None) -> None:
    b = input.shape[0]
    if width is None and not (input.dim() == 1 or (input.dim() == 2 and input.shape[1] == 1)):
        raise ValueError(
            f"{name}: `input` (risk scores) must have shape (B,) or (B, 1), got {list(input.shape)}."
        )
    if width is not None and input.dim() != 2:
        raise ValueError(f"{name}: `input` (hazard logits) must have shape (B, K), got {list(input.shape)}.")
    if target.dim() != 2 or target.shape[0] != b or target.shape[1] != 2:
        raise ValueError(
            f"{name}: `target` must have shape (B, 2) = ({b}, 2) as [time, event], got {list(target.shape)}."
        )
    if not bool(torch.isfinite(target).all()):
        raise ValueError(f"{name}: `target` contains NaN or inf; expected finite [time, event] pairs.")
    ev = target[:, 1]
    if not bool(((ev == 0) | (ev == 1)).all()):
        raise ValueError(f"{name}: `target[:, 1]` (event) must be 0 or 1.")


class CoxPHLoss(_Loss):
    """Negative Cox partial log-likelihood with Breslow's handling of tied event times.

    ``loss = -sum_{i: event_i} [eta_i - log sum_{j: t_j >= t_i} exp(eta_j)]``, divided by the number of
    events for ``reduction="mean"``. ``input`` is the log-risk ``eta`` (higher = earlier event). A batch
    without events has no partial likelihood: the loss is 0 (still connected to the graph) and a
    ``RuntimeWarning`` is issued. Exact in ``O(B^2)`` memory (batches, not whole cohorts).

    Args:
        reduction: ``"mean"`` (per event) or ``"sum"``.

    Example:
        >>> CoxPHLoss()(torch.zeros(2), torch.tensor([[1.0, 1.0], [2.0, 1.0]])).item()  # log(2)/2
        0.3465735912322998
    """

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in ("mean", "sum"):
            raise ValueError(f"CoxPHLoss: `reduction` must be 'mean' or 'sum', got {reduction!r}.")
        super().__init__(reduction=reduction)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_target(input, target, "CoxPHLoss", None)
        eta = input.reshape(-1)
        time = target[:, 0].to(eta.device)
        event = target[:, 1].to(eta.device) > 0
        n_events = int(event.sum())
        if n_events == 0:
            warnings.warn(
                "CoxPHLoss: batch has no events; returning a zero loss.", RuntimeWarning, stacklevel=2
            )
            return eta.sum() * 0.0
        at_risk = time[None, :] >= time[:, None]  # at_risk[i, j]: j is in the risk set of i
        log_risk_set = torch.logsumexp(eta[None, :].masked_fill(~at_risk, float("-inf")), dim=1)
        nll = -(eta - log_risk_set)[event].sum()
        return nll / n_events if self.reduction == "mean" else nll


def discretize_survival_time(
    time: torch.Tensor, event: torch.Tensor, cuts: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """Map continuous times to the ``(B, 2)`` ``[bin, event]`` target of :class:`DiscreteTimeSurvivalLoss`.

    ``cuts`` are the ``K`` increasing upper edges of the intervals ``(cuts[k-1], cuts[k]]`` (the first
    interval is ``[0, cuts[0]]``). Times after ``cuts[-1]`` go to the last bin as censored (the subject
    survived every interval).

    Example:
        >>> t, e = torch.tensor([0.5, 1.5, 9.0]), torch.tensor([1, 1, 1])
        >>> discretize_survival_time(t, e, [1.0, 2.0, 3.0]).tolist()
        [[0.0, 1.0], [1.0, 1.0], [2.0, 0.0]]
    """
    edges = torch.as_tensor(cuts, dtype=torch.float32, device=time.device)
    if edges.dim() != 1 or edges.numel() < 1 or not bool((edges[1:] > edges[:-1]).all()):
        raise ValueError(f"discretize_survival_time: `cuts` must be 1D and strictly increasing, got {cuts}.")
    idx = torch.bucketize(time.float(), edges, right=False)
    beyond = idx >= edges.numel()
    ev = torch.where(beyond, torch.zeros_like(event), event).float()
    return torch.stack([idx.clamp(max=edges.numel() - 1).float(), ev], dim=1)


class DiscreteTimeSurvivalLoss(_Loss):
    """Negative log-likelihood of a discrete-time (logistic hazard) survival model.

    ``input`` ``(B, K)`` are hazard logits ``h_k = sigmoid(input_k)`` = P(event in interval k | alive at
    its start); ``target`` ``(B, 2)`` = ``[bin, event]`` (see :func:`discretize_survival_time`). An event
    in bin ``k`` contributes ``-log h_k - sum_{j<k} log(1 - h_j)``; censoring in bin ``k`` (survived
    through bin ``k``) contributes ``-sum_{j<=k} log(1 - h_j)``, as in Kvamme & Borgan's logistic hazard.
    The survival curve is ``S_k = prod_{j<=k} (1 - h_j)``.

    Args:
        reduction: ``"mean"`` (over samples) or ``"sum"``.

    Example:
        >>> loss = DiscreteTimeSurvivalLoss()
        >>> round(loss(torch.zeros(1, 3), torch.tensor([[1.0, 1.0]])).item(), 4)  # -2 log(1/2)
        1.3863
    """

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in ("mean", "sum"):
            raise ValueError(
                f"DiscreteTimeSurvivalLoss: `reduction` must be 'mean' or 'sum', got {reduction!r}."
            )
        super().__init__(reduction=reduction)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_target(input, target, "DiscreteTimeSurvivalLoss", input.shape[-1] if input.dim() == 2 else 0)
        k = input.shape[1]
        bins = target[:, 0].to(input.device)
        if not bool(((bins >= 0) & (bins < k) & (bins == bins.round())).all()):
            raise ValueError(
                f"DiscreteTimeSurvivalLoss: `target[:, 0]` (bin) must be integers in [0, {k - 1}]."
            )
        bins = bins.long()
        steps = torch.arange(k, device=input.device)[None, :]
        mask = (steps <= bins[:, None]).to(input.dtype)
        y = ((steps == bins[:, None]) & (target[:, 1:2].to(input.device) > 0)).to(input.dtype)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(input, y, reduction="none")
        per_sample = (bce * mask).sum(dim=1)
        return per_sample.mean() if self.reduction == "mean" else per_sample.sum()
