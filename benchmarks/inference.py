"""Inference latency and throughput per bundle network and per monai_ext network (JSON lines).

Backends: PyTorch eager, TorchScript (``torch.jit.script``) and ONNX Runtime (CPU execution provider) on
the CPU; on a GPU, eager fp32, eager + AMP (``torch.autocast`` fp16), ``torch.compile`` and TorchScript.
Every exported model is first checked against eager PyTorch (``monai_ext.export``, atol 1e-4), so a
timing is never reported for a wrong export. Networks have random weights (timings do not depend on
them). One line per (target, backend)::

    {"benchmark": "inference", "target": "bundle:he_tissue_classification", "backend": "onnxruntime",
     "device": "cpu", "batch": 8, "input_shape": [8, 3, 64, 64], "latency_ms_median": ...,
     "latency_ms_p90": ..., "throughput_items_per_s": ..., ...}

Usage::

    python benchmarks/inference.py                 # full sizes, GPU backends when CUDA is present
    python benchmarks/inference.py --small         # CPU-sized: batch 2, small spatial sizes, few repeats
    python benchmarks/inference.py --targets bundle:he_tissue_classification densenet2d --device cpu
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import monai
import torch
from torch import nn

from monai_ext.export import PositionalInputs, export_onnx, export_torchscript, onnx_session
from monai_ext.networks import (
    ImageTabularNet,
    MultiEncoderFusionUNet,
    build_densenet,
    build_retinanet,
    build_unet,
    nuclei_anchor_preset,
)


def _networks(small: bool) -> dict[str, Callable[[int], tuple[nn.Module, tuple[torch.Tensor, ...]]]]:
    s3 = 32 if small else 96
    s2 = 64 if small else 224

    def retinanet(b: int):
        p = nuclei_anchor_preset(0.5)
        net = build_retinanet(
            2, 3, 1, 3, p.returned_layers, p.conv1_t_stride, block="basic", layers=(2, 2, 2, 2)
        )
        return net, (torch.rand(b, 3, s2, s2),)

    def image_tabular(b: int):
        net = ImageTabularNet(
            3, 4, 1, 8, num_classes=2, survival="cox", channels=(16, 32, 64), strides=(2, 2)
        )
        return PositionalInputs(net), (torch.rand(b, 4, s3, s3, s3), torch.randn(b, 8))

    return {
        "unet3d": lambda b: (build_unet(3, 1, 4), (torch.rand(b, 1, s3, s3, s3),)),
        "densenet2d": lambda b: (build_densenet(121, 2, 3, 4), (torch.rand(b, 3, s2, s2),)),
        "densenet3d": lambda b: (build_densenet(121, 3, 1, 2), (torch.rand(b, 1, s3, s3, s3),)),
        "multi_encoder_fusion_unet": lambda b: (
            MultiEncoderFusionUNet(3, 4, 1, 4, channels=(16, 32, 64, 128), strides=(2, 2, 2)),
            (torch.rand(b, 4, s3, s3, s3),),
        ),
        "image_tabular_net": image_tabular,
        "retinanet_network": retinanet,
    }


def _bundle_target(name: str, small: bool) -> Callable[[int], tuple[nn.Module, tuple[torch.Tensor, ...]]]:
    from monai.bundle import ConfigParser

    from monai_ext.bundle.registry import bundle_path

    folder = bundle_path(name)
    meta = json.loads((folder / "configs" / "metadata.json").read_text())
    image = meta["network_data_format"]["inputs"]["image"]

    def build(b: int):
        parser = ConfigParser()
        parser.read_config(str(folder / "configs" / "inference.json"))
        parser["bundle_root"] = str(folder)
        spatial = [int(re.match(r"\d+", str(s)).group()) for s in image["spatial_shape"]]
        if "patch_size" in parser and not small:
            spatial = list(parser["patch_size"])
        if small:
            spatial = [min(s, 64 if len(spatial) == 2 else 32) for s in spatial]
        net = parser.get_parsed_content("network_def")
        x = torch.rand(b, int(image["num_channels"]), *spatial)
        tabular = meta["network_data_format"]["inputs"].get("tabular")
        if tabular is None:
            return net, (x,)
        return PositionalInputs(net), (x, torch.randn(b, int(tabular["num_channels"])))

    return build


def _time(fn: Callable[[], object], repeats: int, device: torch.device) -> list[float]:
    for _ in range(2):  # warm-up (compilation, allocator, cudnn autotune)
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def _line(target: str, backend: str, device: torch.device, inputs, times: list[float], **extra) -> dict:
    batch = int(inputs[0].shape[0])
    med = statistics.median(times)
    return {
        "benchmark": "inference",
        "target": target,
        "backend": backend,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "batch": batch,
        "input_shape": list(inputs[0].shape),
        "latency_ms_median": round(med * 1e3, 3),
        "latency_ms_p90": round(sorted(times)[int(0.9 * (len(times) - 1))] * 1e3, 3),
        "throughput_items_per_s": round(batch / med, 2),
        "repeats": len(times),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "date": datetime.date.today().isoformat(),
        "host": platform.node(),
        **extra,
    }


def run_target(target: str, build, batch: int, repeats: int, device: torch.device, tmp: Path) -> list[dict]:
    torch.manual_seed(0)
    net, inputs = build(batch)
    net = net.eval()
    lines = []

    def emit(backend: str, fn: Callable[[], object], dev: torch.device, **extra) -> None:
        try:
            with torch.inference_mode():
                lines.append(_line(target, backend, dev, inputs, _time(fn, repeats, dev), **extra))
        except Exception as err:  # report, keep benchmarking the other backends
            lines.append(
                {"benchmark": "inference", "target": target, "backend": backend, "error": repr(err)[:300]}
            )
        print(json.dumps(lines[-1]), flush=True)

    cpu = torch.device("cpu")
    if device.type == "cpu":
        emit("eager", lambda: net(*inputs), cpu)
        try:
            ts_report = export_torchscript(net, inputs, tmp / f"{target.replace(':', '_')}.ts")
            ts = torch.jit.load(str(ts_report.path))
            emit("torchscript", lambda: ts(*inputs), cpu, max_abs_diff=ts_report.max_abs_diff)
        except Exception as err:
            print(
                json.dumps(
                    {
                        "benchmark": "inference",
                        "target": target,
                        "backend": "torchscript",
                        "error": repr(err)[:300],
                    }
                )
            )
        try:
            names = ["image", "tabular"][: len(inputs)]
            onnx_report = export_onnx(
                net, inputs, tmp / f"{target.replace(':', '_')}.onnx", input_names=names
            )
            sess = onnx_session(onnx_report.path)
            feed = {n: x.numpy() for n, x in zip(names, inputs)}
            emit("onnxruntime", lambda: sess.run(None, feed), cpu, max_abs_diff=onnx_report.max_abs_diff)
        except Exception as err:
            print(
                json.dumps(
                    {
                        "benchmark": "inference",
                        "target": target,
                        "backend": "onnxruntime",
                        "error": repr(err)[:300],
                    }
                )
            )
        return lines
    net = net.to(device)
    gpu_inputs = tuple(x.to(device) for x in inputs)
    inputs = gpu_inputs
    emit("eager", lambda: net(*gpu_inputs), device)

    def amp():
        with torch.autocast(device_type="cuda", dtype=torch.float16):
            return net(*gpu_inputs)

    emit("eager_amp", amp, device)
    compiled = torch.compile(net)
    emit("torch_compile", lambda: compiled(*gpu_inputs), device)

    def compiled_amp():
        with torch.autocast(device_type="cuda", dtype=torch.float16):
            return compiled(*gpu_inputs)

    emit("torch_compile_amp", compiled_amp, device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = torch.jit.script(net)
    emit("torchscript", lambda: ts(*gpu_inputs), device)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="CPU-sized inputs, batch 2, 5 repeats")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--targets", nargs="*", default=None, help="network names and/or bundle:<name>")
    args = parser.parse_args()
    device = torch.device(args.device)
    batch = args.batch or (2 if args.small else 8)
    repeats = args.repeats or (5 if args.small else 20)
    targets = dict(_networks(args.small))
    from monai_ext.bundle.registry import bundle_names

    for name in bundle_names():
        targets[f"bundle:{name}"] = _bundle_target(name, args.small)
    chosen = args.targets or list(targets)
    unknown = [t for t in chosen if t not in targets]
    if unknown:
        parser.error(f"unknown --targets {unknown}; expected some of {sorted(targets)}")
    with tempfile.TemporaryDirectory() as tmp:
        for target in chosen:
            try:
                run_target(target, targets[target], batch, repeats, device, Path(tmp))
            except Exception as err:  # a bundle whose network cannot be built: report and go on
                print(
                    json.dumps({"benchmark": "inference", "target": target, "error": repr(err)[:300]}),
                    flush=True,
                )


if __name__ == "__main__":
    main()
