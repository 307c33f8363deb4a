"""NaN/Inf loss guard and per-epoch reseeding."""

from __future__ import annotations

import pytest
import torch
from _engine_helpers import tiny_seg_items, tiny_unet
from ignite.engine import Engine, Events
from monai.engines import SupervisedTrainer

from monai_ext.engines import EpochReseed, NonFiniteLossGuard
from monai_ext.transforms.batch import BatchRandFlip


class _NanAt:
    """Loss that becomes NaN at the given (1-based) call."""

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0

    def __call__(self, pred, target):
        self.calls += 1
        loss = torch.nn.functional.mse_loss(pred[:, :1], target.float())
        return loss * float("nan") if self.calls == self.at else loss


def _trainer(loss, epochs=3):
    net = tiny_unet()
    data = [
        {"image": torch.as_tensor(d["image"])[None], "label": torch.as_tensor(d["label"])[None]}
        for d in tiny_seg_items(3)
    ]
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    return SupervisedTrainer("cpu", epochs, data, net, opt, loss), net


def test_nan_guard_stops_and_names_iteration(caplog):
    trainer, net = _trainer(_NanAt(5))
    guard = NonFiniteLossGuard()
    guard.attach(trainer)
    trainer.run()
    assert trainer.state.iteration == 5 and trainer.state.epoch == 2
    assert (
        guard.message
        == "Non-finite loss (nan) at epoch 2, iteration 5 (iteration 2 of the epoch); training stopped."
    )
    assert "iteration 5" in caplog.text


def test_nan_guard_raises_and_passes_finite():
    trainer, _ = _trainer(_NanAt(2))
    NonFiniteLossGuard(raise_error=True).attach(trainer)
    with pytest.raises(FloatingPointError, match="iteration 2"):
        trainer.run()
    trainer, _ = _trainer(_NanAt(10**6), epochs=2)
    guard = NonFiniteLossGuard()
    guard.attach(trainer)
    trainer.run()
    assert guard.message is None and trainer.state.iteration == 6


def test_nan_guard_inf_on_plain_engine():
    engine = Engine(lambda e, b: torch.tensor(b))
    guard = NonFiniteLossGuard()
    guard.attach(engine)
    engine.run([1.0, float("inf"), 2.0], max_epochs=1)
    assert "(inf) at epoch 1, iteration 2" in guard.message


def test_epoch_reseed_repeats_draws_per_epoch():
    aug = BatchRandFlip(prob=0.5, seed=None)
    seen: dict[int, list] = {}

    def step(engine, batch):
        seen.setdefault(engine.state.epoch, []).append(
            (torch.rand(3), aug(torch.arange(16.0).reshape(1, 1, 4, 4).repeat(4, 1, 1, 1)).image)
        )

    def run(max_epochs, start_state=None):
        seen.clear()
        engine = Engine(step)
        EpochReseed(5, modules=[aug]).attach(engine)
        if start_state:
            engine.add_event_handler(Events.STARTED, lambda e: e.load_state_dict(start_state))
        engine.run([0, 1], max_epochs=max_epochs)
        return {k: v for k, v in seen.items()}

    full = run(3)
    resumed = run(3, {"iteration": 4, "epoch_length": 2, "max_epochs": 3})
    assert list(resumed) == [3]
    for (r1, a1), (r2, a2) in zip(full[3], resumed[3]):
        assert torch.equal(r1, r2) and torch.equal(a1, a2)
    assert not torch.equal(full[1][0][0], full[2][0][0])  # epochs differ
