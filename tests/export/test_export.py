"""Every network of monai_ext.networks exports to TorchScript and ONNX with matching outputs; bundles too."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_ext.export import (
    ExportMismatchError,
    PositionalInputs,
    compare_outputs,
    export_bundle,
    export_onnx,
    export_torchscript,
    onnx_session,
)
from monai_ext.networks import (
    ImageTabularNet,
    MultiEncoderFusionUNet,
    build_densenet,
    build_retinanet,
    build_unet,
    nuclei_anchor_preset,
)

pytest.importorskip("onnxruntime")
REPO = Path(__file__).resolve().parents[2]


def _retinanet():
    preset = nuclei_anchor_preset(0.5)
    net = build_retinanet(
        2,
        3,
        1,
        3,
        preset.returned_layers,
        preset.conv1_t_stride,
        layers=(1, 1, 1, 1),
        block="basic",
        block_inplanes=(8, 16, 32, 64),
    )
    return net, (torch.rand(1, 3, 32, 32),)


def _image_tabular():
    net = ImageTabularNet(3, 2, 1, 3, num_classes=2, survival="cox", channels=(4, 8), strides=(2,))
    return PositionalInputs(net), (
        torch.rand(2, 2, 16, 16, 16),
        torch.tensor([[1.0, float("nan"), 0.0], [0.5, 1.0, -1.0]]),
    )


NETWORKS = {
    "unet3d": lambda: (
        build_unet(3, 1, 3, channels=(4, 8, 16), strides=(2, 2), num_res_units=1),
        (torch.rand(1, 1, 16, 16, 16),),
    ),
    "densenet2d": lambda: (
        build_densenet(121, 2, 3, 4, init_features=8, growth_rate=4),
        (torch.rand(2, 3, 32, 32),),
    ),
    "densenet3d": lambda: (
        build_densenet(121, 3, 1, 2, init_features=4, growth_rate=4),
        (torch.rand(1, 1, 32, 32, 32),),
    ),
    "multi_encoder_fusion_unet": lambda: (
        MultiEncoderFusionUNet(3, 2, 1, 2, channels=(4, 8), strides=(2,)),
        (torch.cat([torch.rand(1, 1, 16, 16, 16), torch.zeros(1, 1, 16, 16, 16)], dim=1),),
    ),
    "image_tabular_net": _image_tabular,
    "retinanet": _retinanet,
}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_network_exports_match_eager(name, tmp_path):
    torch.manual_seed(0)
    net, inputs = NETWORKS[name]()
    ts = export_torchscript(net, inputs, tmp_path / "net.ts")
    onnx = export_onnx(net, inputs, tmp_path / "net.onnx")
    assert ts.max_abs_diff <= 1e-4 and onnx.max_abs_diff <= 1e-4
    assert ts.num_outputs == onnx.num_outputs >= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx", "net.ts"]  # no partial files


def test_onnx_batch_axis_is_dynamic(tmp_path):
    torch.manual_seed(0)
    net, _ = _image_tabular()
    export_onnx(net, (torch.rand(1, 2, 16, 16, 16), torch.zeros(1, 3)), tmp_path / "n.onnx")
    image, tab = torch.rand(3, 2, 16, 16, 16), torch.tensor([[1.0, float("nan"), 0.0]] * 3)
    out = onnx_session(tmp_path / "n.onnx").run(None, {"input0": image.numpy(), "input1": tab.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(out, net.eval()(image, tab).numpy(), atol=1e-4, rtol=1e-4)


def test_mismatch_raises_and_leaves_no_file(tmp_path):
    with pytest.raises(ExportMismatchError, match="output 0"):
        compare_outputs([torch.zeros(2)], [np.ones(2, dtype=np.float32)], 1e-4, 1e-4, "x")
    with pytest.raises(ExportMismatchError, match="shape"):
        compare_outputs([torch.zeros(2)], [np.zeros(3, dtype=np.float32)], 1e-4, 1e-4, "x")

    class Noisy(torch.nn.Module):  # traced random noise differs between runs
        def forward(self, x):
            return x + torch.rand_like(x)

    with pytest.raises(ExportMismatchError):
        export_torchscript(Noisy(), torch.zeros(1, 4), tmp_path / "n.ts")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match=".onnx"):
        export_onnx(Noisy(), torch.zeros(1, 4), tmp_path / "n.bin")


@pytest.fixture(scope="module")
def he_bundle(tmp_path_factory):
    """A copy of he_tissue_classification with a checkpoint of a freshly initialised network."""
    from monai.networks.nets import DenseNet121

    folder = tmp_path_factory.mktemp("bundle") / "he_tissue_classification"
    shutil.copytree(REPO / "bundles" / "he_tissue_classification", folder)
    torch.manual_seed(0)
    net = DenseNet121(spatial_dims=2, in_channels=3, out_channels=4)
    torch.save({"model": net.state_dict()}, folder / "models" / "model.pt")
    return folder


def test_export_bundle_torchscript_and_onnx(he_bundle, tmp_path):
    reports = export_bundle(he_bundle, tmp_path / "out")
    assert set(reports) == {"torchscript", "onnx"}
    assert all(r.max_abs_diff <= 1e-4 for r in reports.values())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.onnx", "model.ts"]
    # the ONNX model takes any batch size
    x = torch.rand(3, 3, 64, 64)
    ts = torch.jit.load(str(tmp_path / "out" / "model.ts"))
    out = onnx_session(tmp_path / "out" / "model.onnx").run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(out, ts(x).numpy(), atol=1e-4, rtol=1e-4)
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        export_bundle(he_bundle, tmp_path / "x", ckpt_file=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="formats"):
        export_bundle(he_bundle, tmp_path / "x", formats=("tflite",))


@pytest.mark.slow
def test_monai_bundle_ckpt_export_cli(he_bundle, tmp_path):
    """``python -m monai.bundle ckpt_export`` on the bundle; the TorchScript output matches eager PyTorch."""
    from monai.networks.nets import DenseNet121

    out = tmp_path / "model.ts"
    cfg = he_bundle / "configs"
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "ckpt_export",
        "network_def",
        "--filepath",
        str(out),
        "--ckpt_file",
        str(he_bundle / "models" / "model.pt"),
        "--meta_file",
        str(cfg / "metadata.json"),
        "--config_file",
        str(cfg / "inference.json"),
        "--key_in_ckpt",
        "model",
    ]
    subprocess.run(cmd, check=True, capture_output=True, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    net = DenseNet121(spatial_dims=2, in_channels=3, out_channels=4).eval()
    net.load_state_dict(torch.load(he_bundle / "models" / "model.pt", weights_only=True)["model"])
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(out))(x), net(x), atol=1e-4, rtol=1e-4)


def _shipped_bundles() -> list[str]:
    from monai_ext.bundle.registry import bundle_names

    return bundle_names()


@pytest.mark.slow
@pytest.mark.parametrize("name", _shipped_bundles())
def test_every_shipped_bundle_exports(name, tmp_path):
    """Each shipped bundle's network (fresh weights) exports to TorchScript and ONNX and matches eager."""
    from monai.bundle import ConfigParser

    from monai_ext.bundle.registry import bundle_path
    from monai_ext.export import bundle_input_shape

    folder = tmp_path / name
    shutil.copytree(bundle_path(name), folder)
    parser = ConfigParser()
    parser.read_config(str(folder / "configs" / "inference.json"))
    parser["bundle_root"] = str(folder)
    torch.manual_seed(0)
    (folder / "models").mkdir(exist_ok=True)
    torch.save(
        {"model": parser.get_parsed_content("network_def").state_dict()}, folder / "models" / "model.pt"
    )
    shape = bundle_input_shape(folder)
    shape = shape[:2] + [min(s, 64 if len(shape) == 4 else 32) for s in shape[2:]]  # CPU-sized
    reports = export_bundle(folder, tmp_path / "out", input_shape=shape)
    assert all(r.max_abs_diff <= 1e-4 for r in reports.values())
