"""The presence checks of the multimodal convention: clear errors in eager/TorchScript, skipped in export."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from monai_ext.networks import MultiEncoderFusionUNet
from monai_ext.networks.utils import check_presence_rows, is_exporting, resolve_presence

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


class _Presence(nn.Module):
    """Scales each modality by its presence after the convention's checks (a minimal multimodal net)."""

    def forward(self, image: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
        mask = resolve_presence(image, presence, 2, 1, 2, "PresenceNet")
        return image * mask.to(image.dtype)[:, :, None, None] + 1.0


class _Explicit(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
        return self.net(image, presence=presence)


def _onnx_run(model: nn.Module, inputs: tuple[torch.Tensor, ...], path) -> list:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, inputs, str(path), dynamo=True, input_names=["image", "presence"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)}
    return session.run(None, feeds)


def test_eager_and_torchscript_keep_the_clear_error(jit_script):
    assert not is_exporting()
    with pytest.raises(
        ValueError, match=r"Net: `presence` has no modality present for batch item\(s\) \[1\]"
    ):
        check_presence_rows(torch.tensor([[True, False], [False, False]]), "Net")
    check_presence_rows(torch.tensor([[True, False], [False, True]]), "Net")
    net = MultiEncoderFusionUNet(2, 2, 1, 2, channels=(4, 8), strides=(2,)).eval()
    scripted = jit_script(net)
    bad = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    with pytest.raises(Exception, match="no modality present"):
        scripted(torch.rand(2, 2, 8, 8), bad)


def test_is_exporting_inside_torch_export():
    seen: list[bool] = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(is_exporting())
            return x + 1

    torch.export.export(Probe(), (torch.ones(2),), strict=False)
    assert seen and all(seen)


def test_dynamo_onnx_export_with_explicit_presence(tmp_path):
    model = _Presence().eval()
    image = torch.rand(2, 2, 4, 4) + 0.5
    presence = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    (actual,) = _onnx_run(model, (image, presence), tmp_path / "presence.onnx")
    torch.testing.assert_close(torch.from_numpy(actual), model(image, presence))
    # the graph holds no baked-in branch: another presence gives the eager answer too
    other = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    session = ort.InferenceSession(str(tmp_path / "presence.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    (again,) = session.run(None, dict(zip(names, [image.numpy(), other.numpy()])))
    torch.testing.assert_close(torch.from_numpy(again), model(image, other))


@pytest.mark.slow
def test_dynamo_onnx_export_of_fusion_unet(tmp_path):
    torch.manual_seed(0)
    net = _Explicit(MultiEncoderFusionUNet(3, 2, 1, 2, channels=(4, 8), strides=(2,))).eval()
    image = torch.rand(1, 2, 16, 16, 16)
    presence = torch.tensor([[1.0, 0.0]])
    (actual,) = _onnx_run(net, (image, presence), tmp_path / "fusion.onnx")
    with torch.no_grad():
        expected = net(image, presence)
    torch.testing.assert_close(torch.from_numpy(actual), expected, atol=1e-4, rtol=1e-4)
