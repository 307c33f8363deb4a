"""build_detection_workflow: RetinaNet trainer / evaluator in 2D and 3D, options, box-aware augmentation."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Events
from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape

from monai_ext.engines import BoxBatchAugment, build_detection_workflow, flip_boxes
from monai_ext.networks.detection import build_retinanet, build_retinanet_detector
from monai_ext.transforms.batch import (
    BatchAugChain,
    BatchRandAffine,
    BatchRandFlip,
    BatchRandGaussianNoise,
)


def tiny_detector(dims: int, seed: int = 0):
    torch.manual_seed(seed)
    anchors = AnchorGeneratorWithAnchorShape(
        feature_map_scales=(1, 2), base_anchor_shapes=((4,) * dims, (6,) * dims), indexing="ij"
    )
    net = build_retinanet(
        dims,
        1,
        1,
        2,
        returned_layers=(1,),
        conv1_t_stride=(2,) * dims,
        block="basic",
        layers=(1, 1, 1, 1),
        block_inplanes=(4, 8, 16, 32),
        fpn_channels=8,
    )
    det = build_retinanet_detector(
        net, anchors, batch_size_per_image=16, detections_per_img=10, score_thresh=0.001
    )
    return net, det


def samples(dims: int, n: int = 2, size: int = 16) -> list[dict[str, torch.Tensor]]:
    """``n`` images with one bright cube / square and its box (MONAI StandardMode)."""
    out = []
    for i in range(n):
        lo = 3 + 2 * i
        img = torch.zeros((1,) + (size,) * dims)
        img[(slice(None),) + (slice(lo, lo + 6),) * dims] = 1.0
        box = torch.tensor([[float(lo)] * dims + [float(lo + 6)] * dims])
        out.append({"image": img, "box": box, "label": torch.tensor([0])})
    return out


@pytest.mark.parametrize("dims", [2, 3])
def test_detection_workflow_trains_and_reports_map_and_cpm(tmp_path, dims):
    net, det = tiny_detector(dims)
    data = samples(dims)
    loader = [[d] for d in data]  # 2 iterations of one image (no_collation lists)
    wf = build_detection_workflow(
        det, loader, val_loader=[data], classes=["lesion"], output_dir=tmp_path, key_metric="cpm"
    )
    losses = []
    wf.trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["loss"]))
    )
    wf.run()
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    metrics = wf.evaluator.state.metrics
    assert wf.key_metric_name == "val_cpm"
    assert 0.0 <= metrics["val_map"] <= 1.0 and 0.0 <= metrics["val_cpm"] <= 1.0
    out = wf.evaluator.state.output
    assert len(out) == 2 and out[0]["pred_box"].shape[1] == 2 * dims and len(out[0]["pred_box"]) > 0
    ckpt = torch.load(tmp_path / "checkpoint_latest.pt", weights_only=True)
    assert set(ckpt["model"]) == set(net.state_dict()) and ckpt["_meta"]["key_metric_name"] == "val_cpm"
    assert (tmp_path / "checkpoint_best.pt").is_file()


@pytest.mark.slow
def test_validation_interval_resume_and_accumulation(tmp_path):
    net, det = tiny_detector(2)
    data = samples(2, n=2)
    loader = [[d] for d in data]
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    wf = build_detection_workflow(
        det,
        loader,
        val_loader=[data],
        optimizer=opt,
        max_epochs=2,
        val_interval=2,
        accumulation_steps=2,
        output_dir=tmp_path,
    )
    snapshots, val_epochs = [], []
    wf.trainer.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda e: snapshots.append([p.detach().clone() for p in net.parameters()]),
    )
    wf.evaluator.add_event_handler(Events.COMPLETED, lambda e: val_epochs.append(wf.trainer.state.epoch))
    before = [p.detach().clone() for p in net.parameters()]
    wf.run()
    assert val_epochs == [2]
    # accumulation over 2 iterations: no step after iteration 1, a step after iteration 2
    assert all(torch.equal(a, b) for a, b in zip(before, snapshots[0]))
    assert any(not torch.equal(a, b) for a, b in zip(before, snapshots[1]))

    net2, det2 = tiny_detector(2, seed=1)
    opt2 = torch.optim.SGD(net2.parameters(), lr=0.05)
    wf2 = build_detection_workflow(
        det2, loader, val_loader=[data], optimizer=opt2, max_epochs=3, output_dir=tmp_path, resume=True
    )
    epochs = []
    wf2.trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs.append(e.state.epoch))
    wf2.run()
    assert wf2.checkpointer.resumed_from is not None and epochs == [3]
    resumed = torch.load(tmp_path / "checkpoint_latest.pt", weights_only=True)["_meta"]
    assert resumed["epoch"] == 3 and resumed["iteration"] == 6


def test_compile_option_keeps_plain_checkpoint_keys(tmp_path):
    net, det = tiny_detector(2)
    data = samples(2, n=1)
    wf = build_detection_workflow(
        det, [data], compile=True, compile_kwargs={"backend": "eager"}, output_dir=tmp_path
    )
    wf.run()
    assert hasattr(det.network, "_orig_mod") and hasattr(wf.trainer.network, "_orig_mod")
    keys = torch.load(tmp_path / "checkpoint_latest.pt", weights_only=True)["model"].keys()
    assert set(keys) == set(net.state_dict())


def test_gpu_augment_flips_boxes_with_the_image():
    img = torch.zeros(2, 1, 12, 10)
    img[:, :, 1:4, 2:7] = 1.0
    boxes = [torch.tensor([[1.0, 2.0, 4.0, 7.0]])] * 2
    aug = BoxBatchAugment(
        BatchAugChain([BatchRandFlip(prob=1.0, seed=3), BatchRandGaussianNoise(prob=1.0, std=0.0)])
    )
    images, out = aug(list(img), boxes)
    for im, b in zip(images, out):
        r0, c0, r1, c1 = (int(v) for v in b[0].tolist())
        assert im[0, r0:r1, c0:c1].min() == 1.0 and im.sum() == (r1 - r0) * (c1 - c0)
    assert flip_boxes(boxes[0], torch.tensor([True, True]), torch.tensor([12, 10])).tolist() == [
        [8.0, 3.0, 11.0, 8.0]
    ]
    with pytest.raises(ValueError, match="BatchRandAffine moves voxels"):
        BoxBatchAugment(BatchAugChain([BatchRandAffine(prob=1.0, rotate_range=0.1)]))


def test_gpu_augment_runs_in_the_training_step():
    _, det = tiny_detector(2)
    aug = BatchRandFlip(prob=1.0, seed=0)
    wf = build_detection_workflow(det, [samples(2, n=2)], gpu_augment=aug, seed=0)
    wf.run()
    assert aug._gen is not None  # drawn inside the step
    assert math.isfinite(float(wf.trainer.state.output["loss"]))


def test_bad_arguments():
    _, det = tiny_detector(2)
    with pytest.raises(TypeError, match="RetinaNetDetector"):
        build_detection_workflow(torch.nn.Linear(1, 1), [])
    with pytest.raises(ValueError, match="key_metric"):
        build_detection_workflow(det, [], key_metric="auc")
    with pytest.raises(ValueError, match="output_dir"):
        build_detection_workflow(det, [], resume=True)
    with pytest.raises(TypeError, match="BatchAugmentation"):
        build_detection_workflow(det, [], gpu_augment=torch.nn.Identity())
