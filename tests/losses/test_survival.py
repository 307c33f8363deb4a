"""Cox partial likelihood (Breslow) and discrete-time survival loss, checked against lifelines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter, KaplanMeierFitter

from monai_ext.losses import CoxPHLoss, DiscreteTimeSurvivalLoss, discretize_survival_time


def _breslow_nll(eta: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    """Direct Breslow negative partial log-likelihood, one event at a time (reference)."""
    total = 0.0
    for i in range(len(eta)):
        if event[i]:
            risk_set = time >= time[i]
            total -= eta[i] - np.log(np.exp(eta[risk_set]).sum())
    return total


def _fixture(n: int, seed: int, ties: bool):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t = rng.exponential(scale=np.exp(-0.8 * x))
    if ties:
        t = np.ceil(t * 4) / 4
    e = (rng.random(n) < 0.7).astype(float)
    return x, t, e


def test_cox_matches_lifelines_log_likelihood_without_ties():
    x, t, e = _fixture(60, 0, ties=False)
    cph = CoxPHFitter().fit(pd.DataFrame({"x": x, "T": t, "E": e}), "T", "E")
    beta = cph.params_["x"]
    eta = torch.tensor(beta * x, dtype=torch.float64)
    target = torch.tensor(np.stack([t, e], 1))
    nll_sum = CoxPHLoss(reduction="sum")(eta, target)
    np.testing.assert_allclose(nll_sum.item(), -cph.log_likelihood_, rtol=1e-6)
    np.testing.assert_allclose(CoxPHLoss()(eta, target).item(), -cph.log_likelihood_ / e.sum(), rtol=1e-6)
    # lifelines' beta is the minimiser of our loss: gradient w.r.t. beta is ~0
    b = torch.tensor(beta, dtype=torch.float64, requires_grad=True)
    CoxPHLoss()(b * torch.tensor(x), target).backward()
    assert abs(b.grad.item()) < 1e-4


def test_cox_breslow_ties_match_direct_computation():
    x, t, e = _fixture(40, 1, ties=True)
    assert len(np.unique(t[e > 0])) < int(e.sum())  # the fixture has tied event times
    eta = np.random.default_rng(2).normal(size=40)
    got = CoxPHLoss(reduction="sum")(torch.tensor(eta), torch.tensor(np.stack([t, e], 1))).item()
    np.testing.assert_allclose(got, _breslow_nll(eta, t, e), rtol=1e-10)
    risk = torch.tensor(eta, dtype=torch.float32, requires_grad=True).reshape(-1, 1)
    CoxPHLoss()(risk, torch.tensor(np.stack([t, e], 1), dtype=torch.float32)).backward()


def test_cox_no_events_gives_zero_and_warning():
    risk = torch.randn(5, requires_grad=True)
    target = torch.stack([torch.arange(5.0), torch.zeros(5)], 1)
    with pytest.warns(RuntimeWarning, match="no events"):
        loss = CoxPHLoss()(risk, target)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(risk.grad, torch.zeros(5))


def test_cox_bad_input():
    with pytest.raises(ValueError, match=r"CoxPHLoss: `target` must have shape \(B, 2\) = \(3, 2\)"):
        CoxPHLoss()(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="CoxPHLoss: `input`"):
        CoxPHLoss()(torch.zeros(3, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="event"):
        CoxPHLoss()(torch.zeros(2), torch.tensor([[1.0, 2.0], [1.0, 0.0]]))


def test_discrete_time_loss_matches_formula():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, dtype=torch.float64)
    target = torch.tensor([[2.0, 1.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    h = torch.sigmoid(logits)
    expected = -(
        (torch.log(1 - h[0, :2]).sum() + torch.log(h[0, 2]))
        + torch.log(1 - h[1, :2]).sum()
        + torch.log(h[2, 0])
    )
    loss = DiscreteTimeSurvivalLoss(reduction="sum")
    torch.testing.assert_close(loss(logits, target), expected)
    torch.testing.assert_close(DiscreteTimeSurvivalLoss()(logits, target), expected / 3)
    with pytest.raises(
        ValueError, match=r"DiscreteTimeSurvivalLoss: `target\[:, 0\]` \(bin\) must be integers"
    ):
        loss(logits, torch.tensor([[4.0, 1.0], [0.0, 0.0], [0.0, 0.0]]))


def test_discrete_time_mle_is_kaplan_meier():
    """Without covariates, the loss is minimised by h_k = d_k / n_k, whose survival curve is Kaplan-Meier."""
    rng = np.random.default_rng(3)
    t = rng.integers(1, 6, size=80).astype(float)
    e = (rng.random(80) < 0.6).astype(float)
    cuts = [1.0, 2.0, 3.0, 4.0, 5.0]
    target = discretize_survival_time(torch.tensor(t), torch.tensor(e), cuts)
    d = np.array([((t == k) & (e > 0)).sum() for k in cuts])
    n_at_risk = np.array([(t >= k).sum() for k in cuts])
    h = np.clip(d / n_at_risk, 1e-9, 1 - 1e-9)
    logits = torch.tensor(np.log(h / (1 - h)), requires_grad=True)
    DiscreteTimeSurvivalLoss(reduction="sum")(logits.expand(80, -1), target.double()).backward()
    assert logits.grad.abs().max() < 1e-6
    km = KaplanMeierFitter().fit(t, e).survival_function_at_times(cuts).to_numpy()
    np.testing.assert_allclose(np.cumprod(1 - h), km, atol=1e-6)


def test_discretize_survival_time():
    out = discretize_survival_time(
        torch.tensor([0.0, 1.0, 1.01, 7.0]), torch.tensor([1, 1, 0, 1]), [1.0, 2.0]
    )
    assert out.tolist() == [[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]
    with pytest.raises(ValueError, match="`cuts` must be 1D and strictly increasing"):
        discretize_survival_time(torch.tensor([1.0]), torch.tensor([1]), [2.0, 1.0])
