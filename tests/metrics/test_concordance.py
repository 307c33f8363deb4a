"""Harrell's C-index against lifelines; MONAI cumulative metric and Ignite handler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from lifelines.utils import concordance_index as lifelines_cindex

from monai_ext.metrics import ConcordanceIndexHandler, ConcordanceIndexMetric, concordance_index


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_lifelines_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 120
    t = rng.integers(1, 15, size=n).astype(float)  # many tied times
    e = (rng.random(n) < 0.6).astype(float)
    risk = np.round(rng.normal(size=n) - 0.1 * t, 1)  # tied risks too
    expected = lifelines_cindex(t, -risk, e)
    got = concordance_index(torch.tensor(risk), torch.tensor(t), torch.tensor(e), chunk_size=17)
    np.testing.assert_allclose(got.item(), expected, rtol=1e-12)


def test_perfect_and_no_pairs():
    t = torch.tensor([1.0, 2.0, 3.0])
    assert concordance_index(-t, t, torch.ones(3)).item() == 1.0
    assert concordance_index(t, t, torch.ones(3)).item() == 0.0
    with pytest.warns(UserWarning, match="no comparable pairs"):
        assert torch.isnan(concordance_index(t, t, torch.zeros(3)))
    with pytest.raises(ValueError, match="same length"):
        concordance_index(t, t[:2], torch.ones(3))


def test_cumulative_metric_over_batches():
    rng = np.random.default_rng(5)
    t = rng.exponential(size=50)
    e = (rng.random(50) < 0.7).astype(float)
    risk = rng.normal(size=50)
    y = torch.tensor(np.stack([t, e], 1), dtype=torch.float32)
    r = torch.tensor(risk, dtype=torch.float32)
    metric = ConcordanceIndexMetric()
    metric(r[:20, None], y[:20])
    metric(list(r[20:, None]), list(y[20:]))  # decollated form
    expected = lifelines_cindex(t, -risk, e)
    np.testing.assert_allclose(metric.aggregate().item(), expected, rtol=1e-6)
    metric.reset()
    inverse = ConcordanceIndexMetric(higher_is_riskier=False)
    inverse(-r, y)
    np.testing.assert_allclose(inverse.aggregate().item(), expected, rtol=1e-6)
    with pytest.raises(ValueError, match=r"ConcordanceIndexMetric: `y` must have shape \(B, 2\)"):
        metric(r, y[:, :1])


def test_ignite_handler():
    rng = np.random.default_rng(6)
    batches = []
    for _ in range(3):
        t = torch.tensor(rng.exponential(size=8), dtype=torch.float32)
        batches.append({"pred": torch.randn(8, 1), "label": torch.stack([t, torch.ones(8)], 1)})
    engine = Engine(lambda eng, batch: batch)
    ConcordanceIndexHandler(output_transform=lambda out: (out["pred"], out["label"])).attach(
        engine, "c_index"
    )
    engine.run(batches, max_epochs=1)
    risk = torch.cat([b["pred"] for b in batches]).flatten()
    y = torch.cat([b["label"] for b in batches])
    expected = lifelines_cindex(y[:, 0].numpy(), -risk.numpy(), y[:, 1].numpy())
    np.testing.assert_allclose(engine.state.metrics["c_index"], expected, rtol=1e-6)
