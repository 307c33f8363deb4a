"""Export a bundle's network with ``monai.bundle ckpt_export`` / ``onnx_export`` and verify the results.

:func:`export_bundle` runs MONAI's own bundle exporters (the same code as ``python -m monai.bundle
ckpt_export`` and ``onnx_export``) on a shipped bundle name or a bundle folder, then loads the exported
files and checks them against the eager network (built from the same config and checkpoint) on a random
input of the shape declared in ``metadata.json``. The ONNX export uses the TorchScript-based exporter
(``use_trace=True, dynamo=False``): MONAI's default on torch >= 2.9 is the ``torch.export`` exporter,
which is slow and rejects the multimodal networks' data-dependent input checks.

Command-line equivalents (what the test runs, from the bundle folder)::

    python -m monai.bundle ckpt_export network_def --filepath models/model.ts \\
        --ckpt_file models/model.pt --meta_file configs/metadata.json \\
        --config_file configs/inference.json --key_in_ckpt model
    python -m monai.bundle onnx_export network_def --filepath models/model.onnx \\
        --ckpt_file models/model.pt --meta_file configs/metadata.json \\
        --config_file configs/inference.json --key_in_ckpt model --use_trace True \\
        --converter_kwargs "{'dynamo': False}"

Bundles whose network also takes ``tabular`` (an ``inputs.tabular`` entry in ``network_data_format``, e.g.
``multimodal_outcome``): TorchScript still goes through ``ckpt_export`` (the scripted network is called as
``model(image, tabular=t)``); ONNX goes through :func:`monai_ext.export.export_onnx` on
``PositionalInputs(network)`` with graph inputs ``image`` and ``tabular`` (MONAI's ``onnx_export``
feeds a single random input).

Example:
    >>> bundle_input_shape("he_tissue_classification")
    [1, 3, 64, 64]
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from monai_ext.export.network import (
    ExportReport,
    PositionalInputs,
    compare_outputs,
    export_onnx,
    flatten_outputs,
    onnx_session,
)

__all__ = ["bundle_folder", "bundle_input_shape", "bundle_tabular_features", "export_bundle"]

FORMATS = ("torchscript", "onnx")


def bundle_folder(name_or_path: str | os.PathLike) -> Path:
    """A bundle folder: an existing path with ``configs/metadata.json``, or a shipped bundle's name.

    Example:
        >>> bundle_folder("he_tissue_classification").name
        'he_tissue_classification'
    """
    path = Path(name_or_path)
    if (path / "configs" / "metadata.json").is_file():
        return path.resolve()
    from monai_ext.bundle.registry import bundle_path

    return bundle_path(str(name_or_path))


def bundle_input_shape(name_or_path: str | os.PathLike, batch: int = 1) -> list[int]:
    """``[batch, channels, *spatial]`` of the bundle's ``image`` input, from its ``network_data_format``.

    Example:
        >>> bundle_input_shape("he_tissue_classification", batch=2)
        [2, 3, 64, 64]
    """
    meta_file = bundle_folder(name_or_path) / "configs" / "metadata.json"
    inputs = json.loads(meta_file.read_text())["network_data_format"]["inputs"]
    if "image" not in inputs:
        raise KeyError(
            f"{meta_file}: network_data_format.inputs has no 'image' entry (found {sorted(inputs)})."
        )
    image = inputs["image"]
    spatial = [int(s) if isinstance(s, int) or str(s).isdigit() else 32 for s in image["spatial_shape"]]
    return [batch, int(image["num_channels"]), *spatial]


def bundle_tabular_features(name_or_path: str | os.PathLike) -> int:
    """Width of the bundle's ``tabular`` input (0 when the network takes only the image).

    Example:
        >>> bundle_tabular_features("he_tissue_classification")
        0
    """
    meta_file = bundle_folder(name_or_path) / "configs" / "metadata.json"
    inputs = json.loads(meta_file.read_text())["network_data_format"]["inputs"]
    return int(inputs["tabular"]["num_channels"]) if "tabular" in inputs else 0


def _key_in_ckpt(ckpt_file: Path) -> str:
    ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=True)
    if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict):
        return "model"
    return ""


def export_bundle(
    name_or_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    formats: Sequence[str] = FORMATS,
    ckpt_file: str | os.PathLike | None = None,
    config: str = "inference",
    net_id: str = "network_def",
    input_shape: Sequence[int] | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-4,
) -> dict[str, ExportReport]:
    """Export bundle ``name_or_path``'s network to ``out_dir/model.ts`` / ``model.onnx`` and verify them.

    Args:
        name_or_path: shipped bundle name or bundle folder.
        out_dir: output folder (created).
        formats: any of ``"torchscript"``, ``"onnx"``.
        ckpt_file: checkpoint (``{"model": state_dict}`` or a raw state dict); default
            ``<bundle>/models/model.pt``.
        config: config file (without ``.json``) holding ``net_id``.
        net_id: the network's config id.
        input_shape: verification input shape; default from ``metadata.json`` (batch 1).
        atol, rtol: tolerances of the comparison with eager PyTorch.

    Returns ``{format: ExportReport}``. Raises ``FileNotFoundError`` for a missing checkpoint or config and
    :class:`~monai_ext.export.network.ExportMismatchError` when outputs differ (the file is then removed).

    Example:
        >>> export_bundle("he_tissue_classification", "out", formats=("tflite",))
        Traceback (most recent call last):
        ...
        ValueError: export_bundle: `formats` must be a subset of ('torchscript', 'onnx'), got ('tflite',).
    """
    formats = tuple(formats)
    if not formats or any(f not in FORMATS for f in formats):
        raise ValueError(f"export_bundle: `formats` must be a subset of {FORMATS}, got {formats}.")
    from monai.bundle import ConfigParser, ckpt_export, onnx_export

    folder = bundle_folder(name_or_path)
    meta_file = folder / "configs" / "metadata.json"
    config_file = folder / "configs" / f"{config}.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"export_bundle: bundle {folder.name!r} has no config {config_file.name}.")
    ckpt = Path(ckpt_file) if ckpt_file is not None else folder / "models" / "model.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(
            f"export_bundle: checkpoint {ckpt} not found; train the bundle first or pass `ckpt_file`."
        )
    key = _key_in_ckpt(ckpt)
    shape = list(input_shape) if input_shape is not None else bundle_input_shape(folder)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.mkdir(exist_ok=True)

    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser.read_meta(str(meta_file))
    parser["bundle_root"] = str(folder)
    net = parser.get_parsed_content(net_id).cpu().eval()
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    net.load_state_dict(state[key] if key else state)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=gen)
    width = bundle_tabular_features(folder)
    extra: dict[str, torch.Tensor] = {}
    if width:
        tab = torch.randn(shape[0], width, generator=gen)
        tab[0, -1] = float("nan")  # exercise the missingness path
        extra["tabular"] = tab
    with torch.no_grad():
        expected = flatten_outputs(net(x, **extra))

    common = {
        "net_id": net_id,
        "ckpt_file": str(ckpt),
        "meta_file": str(meta_file),
        "config_file": str(config_file),
        "key_in_ckpt": key,
        "bundle_root": str(folder),
    }
    reports: dict[str, ExportReport] = {}
    quiet = logging.getLogger("monai.bundle.scripts")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # tracing warns about the input checks' Python branches (evaluated once, by design)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            for fmt in formats:
                final = out / ("model.ts" if fmt == "torchscript" else "model.onnx")
                tmp = out / (f".{final.stem}.{os.getpid()}.partial" + final.suffix)
                try:
                    if fmt == "torchscript":
                        ckpt_export(filepath=str(tmp), **common)
                        with torch.no_grad():
                            actual = flatten_outputs(torch.jit.load(str(tmp), map_location="cpu")(x, **extra))
                    elif extra:
                        export_onnx(
                            PositionalInputs(net),
                            (x, extra["tabular"]),
                            tmp,
                            input_names=["image", "tabular"],
                            atol=atol,
                        )
                        actual = onnx_session(tmp).run(
                            None, {"image": x.numpy(), "tabular": extra["tabular"].numpy()}
                        )
                    else:
                        onnx_export(
                            filepath=str(tmp),
                            use_trace=True,
                            input_shape=shape,
                            converter_kwargs={
                                "dynamo": False,
                                "input_names": ["image"],
                                "dynamic_axes": {"image": {0: "batch"}},
                                "verify": False,
                            },
                            **common,
                        )
                        actual = onnx_session(tmp).run(None, {"image": x.numpy()})
                    worst = compare_outputs(
                        expected, actual, atol, rtol, f"export_bundle({folder.name}, {fmt})"
                    )
                    os.replace(tmp, final)
                finally:
                    if tmp.exists():
                        tmp.unlink()
                reports[fmt] = ExportReport(final, fmt, worst, len(expected))
    finally:
        quiet.setLevel(level)
    return reports
