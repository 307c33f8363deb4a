"""Atomic checkpoints: weights_only loading, clear errors, best/latest, in-process resume."""

from __future__ import annotations

import os

import pytest
import torch
from _engine_helpers import build_tiny_seg, tiny_unet
from ignite.engine import Engine, Events

from monai_ext.engines import CheckpointHandler, load_checkpoint, save_checkpoint


def _objects():
    net = tiny_unet(0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    net(torch.rand(1, 1, 32, 32)).sum().backward()
    opt.step()
    sched.step()
    scaler = torch.amp.GradScaler("cpu", init_scale=128.0)
    return net, opt, sched, scaler


def test_roundtrip_weights_only(tmp_path):
    net, opt, sched, scaler = _objects()
    engine = Engine(lambda e, b: None)
    engine.run([0, 1, 2], max_epochs=2)
    path = save_checkpoint(
        {"model": net, "optimizer": opt, "lr_scheduler": sched, "scaler": scaler, "engine": engine},
        tmp_path / "c.pt",
    )
    raw = torch.load(path, weights_only=True)  # must not need pickled classes
    assert raw["engine"]["iteration"] == 6 and raw["scaler"]["scale"] == 128.0
    net2, opt2, sched2, scaler2 = tiny_unet(1), None, None, torch.amp.GradScaler("cpu")
    opt2 = torch.optim.Adam(net2.parameters(), lr=1e-2)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5)
    engine2 = Engine(lambda e, b: None)
    engine2.state.max_epochs = 5
    load_checkpoint(
        path, {"model": net2, "optimizer": opt2, "lr_scheduler": sched2, "scaler": scaler2, "engine": engine2}
    )
    for a, b in zip(net.state_dict().values(), net2.state_dict().values()):
        assert torch.equal(a, b)
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    assert sched2.last_epoch == 1 and scaler2.get_scale() == 128.0
    assert (engine2.state.epoch, engine2.state.iteration, engine2.state.max_epochs) == (2, 6, 5)
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp files left


def test_not_a_checkpoint_errors(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a zip archive")
    with pytest.raises(ValueError, match="junk.pt is not a readable checkpoint"):
        load_checkpoint(junk, {"model": tiny_unet()})
    pickled = tmp_path / "obj.pt"
    torch.save({"model": torch.optim.lr_scheduler.StepLR}, pickled)  # a class: refused by weights_only
    with pytest.raises(ValueError, match="weights_only"):
        load_checkpoint(pickled)
    listing = tmp_path / "list.pt"
    torch.save([1, 2], listing)
    with pytest.raises(ValueError, match="expected a dict"):
        load_checkpoint(listing)
    other = save_checkpoint({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"missing \['model'\]"):
        load_checkpoint(other, {"model": tiny_unet()})
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        load_checkpoint(tmp_path / "nothere.pt")


def test_mismatched_keys_listed(tmp_path):
    state = tiny_unet().state_dict()
    state["extra.weight"] = torch.zeros(1)
    first = next(iter(state))
    del state[first]
    last = [k for k in state if k.endswith("weight") and k != "extra.weight"][-1]
    state[last] = torch.zeros(3)
    path = save_checkpoint({"model": state}, tmp_path / "bad.pt")
    with pytest.raises(KeyError) as err:
        load_checkpoint(path, {"model": tiny_unet()})
    msg = str(err.value)
    assert first in msg and "extra.weight" in msg and last in msg and "missing" in msg and "unexpected" in msg


def test_write_failure_keeps_previous_latest(tmp_path, monkeypatch):
    net = tiny_unet(0)
    good = save_checkpoint({"model": net}, tmp_path / "checkpoint_latest.pt")
    real_save = torch.save

    def crash(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half written")
        raise OSError("killed during write")

    monkeypatch.setattr(torch, "save", crash)
    with torch.no_grad():
        net2 = tiny_unet(1)
    with pytest.raises(OSError, match="killed"):
        save_checkpoint({"model": net2}, good)
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_latest.pt"]
    restored = tiny_unet(2)
    load_checkpoint(good, {"model": restored})
    for a, b in zip(net.state_dict().values(), restored.state_dict().values()):
        assert torch.equal(a, b)


def test_handler_best_and_latest(tmp_path):
    net = torch.nn.Linear(2, 1)
    scores = iter([0.5, 0.9, 0.7])
    trainer = Engine(lambda e, b: None)
    evaluator = Engine(lambda e, b: None)
    evaluator.add_event_handler(
        Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(val_dice=next(scores))
    )
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run([0]))

    handler = CheckpointHandler(tmp_path, {"model": net}, key_metric_name="val_dice", metric_engine=evaluator)
    handler.attach(trainer)
    trainer.run([0, 1], max_epochs=3)
    best = torch.load(tmp_path / "checkpoint_best.pt", weights_only=True)
    latest = torch.load(tmp_path / "checkpoint_latest.pt", weights_only=True)
    assert best["_meta"]["best_metric"] == 0.9 and best["engine"]["iteration"] == 4
    assert latest["engine"]["iteration"] == 6 and latest["_meta"]["best_metric_epoch"] == 2
    with pytest.raises(ValueError, match="mode"):
        CheckpointHandler(tmp_path, {"model": net}, mode="best")
    with pytest.raises(ValueError, match="state_dict"):
        CheckpointHandler(tmp_path, {"model": 3})


def test_resume_matches_uninterrupted(tmp_path):
    """4 epochs straight == 2 epochs, new objects resumed from latest, 2 more (exact on CPU)."""
    ref, ref_net, *_ = build_tiny_seg(tmp_path / "ref", max_epochs=4, n=4)
    ref.run()
    part, *_ = build_tiny_seg(tmp_path / "run", max_epochs=2, n=4)
    part.run()
    resumed, net, opt, sched, losses = build_tiny_seg(
        tmp_path / "run", max_epochs=4, resume=True, n=4, init_seed=7
    )
    resumed.run()
    assert resumed.checkpointer.resumed_from is not None
    assert len(losses) == 4  # only epochs 3 and 4 ran (2 iterations each)
    assert resumed.trainer.state.epoch == 4 and resumed.trainer.state.iteration == 8
    assert sched.last_epoch == 4
    for a, b in zip(ref_net.state_dict().values(), net.state_dict().values()):
        assert torch.equal(a, b)
    best = torch.load(tmp_path / "run" / "checkpoint_best.pt", weights_only=True)
    assert best["_meta"]["key_metric_name"] == "val_dice"
