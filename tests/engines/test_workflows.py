"""Workflow factories: segmentation / classification / survival, handlers and options."""

from __future__ import annotations

import mlflow
import pytest
import torch
from _engine_helpers import build_tiny_seg, tiny_seg_items, tiny_unet
from ignite.engine import Events
from monai.data import DataLoader, Dataset

from monai_ext.engines import (
    MultimodalPrepareBatch,
    build_classification_workflow,
    build_segmentation_workflow,
    build_survival_workflow,
    build_workflow,
)
from monai_ext.networks.classification import ImageTabularNet


def test_segmentation_full_options(tmp_path):
    wf, *_ = build_tiny_seg(
        tmp_path, max_epochs=4, n=4, val_interval=2, progress_bar=True, tensorboard=True, accumulation_steps=2
    )
    val_epochs = []
    wf.evaluator.add_event_handler(Events.COMPLETED, lambda e: val_epochs.append(wf.trainer.state.epoch))
    wf.run()
    assert val_epochs == [2, 4]
    assert 0.0 <= wf.evaluator.state.metrics["val_dice"] <= 1.0
    assert wf.trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5**4)  # StepLR each epoch
    assert (tmp_path / "checkpoint_latest.pt").is_file() and (tmp_path / "checkpoint_best.pt").is_file()
    assert any((tmp_path / "tensorboard").glob("events.out.tfevents*"))


@pytest.mark.slow
def test_mlflow_local_store(tmp_path):
    wf, *_ = build_tiny_seg(tmp_path, max_epochs=2, n=4, mlflow=True)
    wf.run()
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    exp = client.get_experiment_by_name("monai_ext")
    runs = client.search_runs([exp.experiment_id])
    history = [client.get_metric_history(r.info.run_id, "train_loss") for r in runs]
    assert sum(len(h) for h in history) == 4  # one value per iteration (2 epochs x 2)
    assert any(client.get_metric_history(r.info.run_id, "val_dice") for r in runs)


def test_segmentation_hd95_and_early_stopping():
    data = [{k: torch.as_tensor(v)[None] for k, v in d.items()} for d in tiny_seg_items(2)]
    net = tiny_unet()
    wf = build_segmentation_workflow(
        net,
        data,
        val_loader=data,
        max_epochs=5,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.0),  # frozen -> metric never improves
        early_stop_patience=1,
    )
    wf.run()
    assert wf.trainer.state.epoch == 2  # best at 1, no improvement at 2 -> stop
    assert wf.evaluator.state.metrics["val_hd95"] >= 0.0


def test_gradient_accumulation_matches_large_batch():
    items = [{k: torch.as_tensor(v) for k, v in d.items()} for d in tiny_seg_items(2)]
    full = [{k: torch.stack([i[k] for i in items]) for k in ("image", "label")}]
    halves = [{k: i[k][None] for k in ("image", "label")} for i in items]
    nets = []
    for data, acc in ((full, 1), (halves, 2)):
        net = tiny_unet(0)
        opt = torch.optim.SGD(net.parameters(), lr=0.5)
        build_segmentation_workflow(net, data, optimizer=opt, accumulation_steps=acc, max_epochs=1).run()
        nets.append(net)
    changed = False
    for a, b, c in zip(nets[0].parameters(), nets[1].parameters(), tiny_unet(0).parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
        changed |= not torch.equal(a, c)
    assert changed


def _multimodal_items(n, survival=False):
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        label = i % 2
        img = torch.rand(2, 1, 16, 16, generator=g) + label
        target = torch.tensor([float(n - i), float(i % 3 != 0)]) if survival else label
        out.append({"t1": img[0], "t2": img[1], "tabular": torch.rand(3, generator=g), "label": target})
    return out


def test_classification_multimodal_metrics():
    net = ImageTabularNet(2, 2, 1, 3, num_classes=2, channels=(4, 8), strides=(2,))
    loader = DataLoader(Dataset(_multimodal_items(6)), batch_size=3)
    wf = build_classification_workflow(
        net, loader, val_loader=loader, prepare_batch=MultimodalPrepareBatch(["t1", "t2"]), max_epochs=1
    )
    wf.run()
    metrics = wf.evaluator.state.metrics
    assert wf.key_metric_name == "val_auc"
    for name in ("val_auc", "val_accuracy", "val_f1"):
        assert 0.0 <= float(metrics[name]) <= 1.0, name


def test_survival_cindex():
    net = ImageTabularNet(2, 2, 1, 3, num_classes=0, survival="cox", channels=(4, 8), strides=(2,))
    loader = DataLoader(Dataset(_multimodal_items(6, survival=True)), batch_size=3)
    wf = build_survival_workflow(
        net, loader, val_loader=loader, prepare_batch=MultimodalPrepareBatch(["t1", "t2"]), max_epochs=1
    )
    wf.run()
    assert 0.0 <= float(wf.evaluator.state.metrics["val_cindex"]) <= 1.0


def test_compile_option_and_unwrapped_checkpoint(tmp_path):
    data = [{k: torch.as_tensor(v)[None] for k, v in d.items()} for d in tiny_seg_items(1)]
    net = tiny_unet()
    wf = build_segmentation_workflow(
        net, data, compile=True, compile_kwargs={"backend": "eager"}, output_dir=tmp_path, max_epochs=1
    )
    wf.run()
    assert hasattr(wf.trainer.network, "_orig_mod")
    keys = torch.load(tmp_path / "checkpoint_latest.pt", weights_only=True)["model"].keys()
    assert set(keys) == set(net.state_dict().keys())


def test_bad_arguments():
    with pytest.raises(ValueError, match="`task` must be one of"):
        build_workflow("detection", tiny_unet(), [])
    with pytest.raises(ValueError, match="output_dir"):
        build_segmentation_workflow(tiny_unet(), [], resume=True)
    with pytest.raises(ValueError, match="val_interval"):
        build_segmentation_workflow(tiny_unet(), [], val_interval=0)


@pytest.mark.gpu
def test_amp_on_cuda_saves_scaler(tmp_path):
    data = [{k: torch.as_tensor(v)[None] for k, v in d.items()} for d in tiny_seg_items(2)]
    net = tiny_unet().cuda()
    wf = build_segmentation_workflow(net, data, device="cuda", amp=True, output_dir=tmp_path, max_epochs=1)
    wf.run()
    ckpt = torch.load(tmp_path / "checkpoint_latest.pt", weights_only=True)
    assert "scale" in ckpt["scaler"]
