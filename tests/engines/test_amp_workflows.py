"""AMP in the workflow factories: bfloat16 autocast on the CPU, float16 + GradScaler on CUDA."""

from __future__ import annotations

import math

import pytest
import torch
from _engine_helpers import tiny_seg_items, tiny_unet
from test_retinanet_workflow import samples, tiny_detector

from monai_ext.engines import build_detection_workflow, build_segmentation_workflow


def _seg_data():
    return [{k: torch.as_tensor(v)[None] for k, v in d.items()} for d in tiny_seg_items(2)]


def _record_conv_dtypes(net):
    dtypes = []
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Conv3d))
    conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    return dtypes


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_segmentation_amp_on_cpu_runs_bfloat16_forward(tmp_path):
    net = tiny_unet()
    dtypes = _record_conv_dtypes(net)
    data = _seg_data()
    wf = build_segmentation_workflow(net, data, val_loader=data, amp=True, output_dir=tmp_path)
    wf.run()
    assert dtypes and set(dtypes) == {torch.bfloat16}  # training and validation forward passes
    assert wf.trainer.state.output[0]["pred"].dtype == torch.float32
    assert math.isfinite(float(wf.trainer.state.output[0]["loss"]))
    assert 0.0 <= wf.evaluator.state.metrics["val_dice"] <= 1.0
    ckpt = torch.load(tmp_path / "checkpoint_latest.pt", weights_only=True)
    assert "scaler" not in ckpt  # MONAI's GradScaler is disabled on the CPU: nothing to store


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_detection_amp_on_cpu_runs_bfloat16():
    net, det = tiny_detector(2)
    dtypes = _record_conv_dtypes(net)
    data = samples(2)
    wf = build_detection_workflow(det, [data], val_loader=[data], amp=True)
    wf.run()
    assert set(dtypes) == {torch.bfloat16}
    out = wf.trainer.state.output
    assert out["loss_cls"].dtype == torch.bfloat16 and math.isfinite(float(out["loss"]))
    assert 0.0 <= wf.evaluator.state.metrics["val_map"] <= 1.0


@pytest.mark.gpu
def test_detection_amp_on_cuda_saves_scaler(tmp_path):
    net, det = tiny_detector(3)
    net.cuda()
    data = samples(3)
    wf = build_detection_workflow(
        det, [data], val_loader=[data], amp=True, device="cuda", output_dir=tmp_path
    )
    wf.run()
    assert wf.trainer.state.output["loss_cls"].dtype == torch.float16
    ckpt = torch.load(tmp_path / "checkpoint_latest.pt", weights_only=True)
    assert ckpt["scaler"]["scale"] > 0


@pytest.mark.gpu
def test_segmentation_amp_on_cuda_resumes_scaler(tmp_path):
    data = _seg_data()
    wf = build_segmentation_workflow(tiny_unet().cuda(), data, device="cuda", amp=True, output_dir=tmp_path)
    wf.run()
    saved = torch.load(tmp_path / "checkpoint_latest.pt", weights_only=True)["scaler"]
    wf2 = build_segmentation_workflow(
        tiny_unet().cuda(), data, device="cuda", amp=True, output_dir=tmp_path, resume=True, max_epochs=2
    )
    wf2.run()
    assert wf2.checkpointer.resumed_from is not None
    assert saved["scale"] > 0 and "scale" in wf2.trainer.scaler.state_dict()
