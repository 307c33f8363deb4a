"""Export a network to TorchScript or ONNX and check the exported outputs against eager PyTorch.

- :func:`export_torchscript`: ``torch.jit.script`` (what ``monai.bundle ckpt_export`` uses) or
  ``torch.jit.trace``; saved, reloaded and compared.
- :func:`export_onnx`: ``torch.onnx.export`` with the TorchScript-based exporter (``dynamo=False``, the
  default here: fast and offline) or the dynamo exporter (the multimodal networks skip their
  data-dependent presence checks while exporting, so both work); a dynamic batch axis; loaded in
  onnxruntime (CPU) and compared.

Networks with keyword inputs (``ImageTabularNet(image, tabular=...)``) are wrapped by
:class:`PositionalInputs` so every input is positional (and named in the ONNX graph). Outputs that are
dicts or lists of tensors (RetinaNet) are flattened in a fixed order for the comparison.

Both write to a temporary name and ``os.replace`` it; a failed verification raises
:class:`ExportMismatchError` and leaves no file behind.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from monai_ext.networks import build_unet
    >>> net = build_unet(2, 1, 2, channels=(4, 8), strides=(2,), num_res_units=1)
    >>> report = export_torchscript(net, (torch.rand(1, 1, 16, 16),), Path(tempfile.mkdtemp()) / "n.ts")
    >>> report.max_abs_diff < 1e-4
    True
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = [
    "ExportMismatchError",
    "ExportReport",
    "PositionalInputs",
    "compare_outputs",
    "export_onnx",
    "export_torchscript",
    "flatten_outputs",
    "onnx_session",
]


class ExportMismatchError(AssertionError):
    """The exported model's outputs differ from eager PyTorch beyond the tolerance."""


@dataclass(frozen=True)
class ExportReport:
    """Where a model was written and how far its outputs are from eager PyTorch."""

    path: Path
    format: str
    max_abs_diff: float
    num_outputs: int


class PositionalInputs(nn.Module):
    """``forward(image, tabular=None, presence=None)`` -> ``model(image, presence=..., tabular=...)``.

    Makes the keyword inputs of the multimodal networks positional for ONNX (graph inputs ``image``,
    ``tabular``, in that order); scriptable.

    Example:
        >>> from monai_ext.networks import ImageTabularNet
        >>> net = ImageTabularNet(2, 1, 1, 3, channels=(4, 8), strides=(2,))
        >>> PositionalInputs(net)(torch.rand(1, 1, 8, 8), torch.zeros(1, 3)).shape
        torch.Size([1, 2])
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, image: torch.Tensor, tabular: torch.Tensor | None = None, presence: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.model(image, presence=presence, tabular=tabular)


def flatten_outputs(out: object) -> list[torch.Tensor]:
    """Tensors of a (nested) output in the order ONNX flattens them: dict insertion order, then lists.

    Example:
        >>> [t.item() for t in flatten_outputs({"b": [torch.tensor(2)], "a": torch.tensor(1)})]
        [2, 1]
    """
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        return [t for v in out.values() for t in flatten_outputs(v)]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in flatten_outputs(o)]
    raise TypeError(f"flatten_outputs: unsupported output type {type(out).__name__}; expected tensors.")


def compare_outputs(
    expected: Sequence[torch.Tensor], actual: Sequence[object], atol: float, rtol: float, what: str
) -> float:
    """Max absolute difference; raises :class:`ExportMismatchError` beyond ``atol + rtol * |expected|``.

    Example:
        >>> compare_outputs([torch.ones(2)], [np.ones(2, dtype=np.float32)], 1e-4, 1e-4, "x")
        0.0
    """
    if len(expected) != len(actual):
        raise ExportMismatchError(f"{what}: {len(actual)} outputs, expected {len(expected)} (eager PyTorch).")
    worst = 0.0
    for i, (e, a) in enumerate(zip(expected, actual)):
        e = e.detach().cpu().float()
        a = torch.as_tensor(np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a)).float()
        if tuple(e.shape) != tuple(a.shape):
            raise ExportMismatchError(
                f"{what}: output {i} has shape {tuple(a.shape)}, expected {tuple(e.shape)}."
            )
        diff = (e - a).abs()
        worst = max(worst, float(diff.max()) if diff.numel() else 0.0)
        if diff.numel() and bool((diff > atol + rtol * e.abs()).any()):
            raise ExportMismatchError(
                f"{what}: output {i} differs from eager PyTorch by up to {float(diff.max()):.3g} "
                f"(atol={atol}, rtol={rtol})."
            )
    return worst


def _temp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


def _inputs(example_inputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    if not inputs or not all(isinstance(x, torch.Tensor) for x in inputs):
        raise ValueError("export: `example_inputs` must be a tensor or a non-empty sequence of tensors.")
    return inputs


def export_torchscript(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    path: str | os.PathLike,
    method: str = "script",
    atol: float = 1e-4,
    rtol: float = 1e-4,
) -> ExportReport:
    """Script (or trace) ``model`` in eval mode, save it to ``path``, reload it and compare outputs.

    Example:
        >>> import tempfile
        >>> from monai_ext.networks import build_densenet
        >>> net = build_densenet(121, 2, 1, 2, init_features=4, growth_rate=4)
        >>> export_torchscript(net, torch.rand(1, 1, 32, 32), Path(tempfile.mkdtemp()) / "d.ts").format
        'torchscript'
    """
    if method not in ("script", "trace"):
        raise ValueError(f"export_torchscript: `method` must be 'script' or 'trace', got {method!r}.")
    inputs = _inputs(example_inputs)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    tmp = _temp(out)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning
            )
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            ts = torch.jit.script(model) if method == "script" else torch.jit.trace(model, inputs)
            torch.jit.save(ts, str(tmp))
            loaded = torch.jit.load(str(tmp), map_location="cpu")
            expected = flatten_outputs(model(*inputs))
            actual = flatten_outputs(loaded(*[x.cpu() for x in inputs]))
        worst = compare_outputs(expected, actual, atol, rtol, f"export_torchscript({type(model).__name__})")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return ExportReport(out, "torchscript", worst, len(expected))


def onnx_session(path: str | os.PathLike, providers: Sequence[str] = ("CPUExecutionProvider",)):
    """An onnxruntime ``InferenceSession`` (onnxruntime is the optional ``export`` extra).

    Example:
        >>> onnx_session  # doctest: +ELLIPSIS
        <function onnx_session at ...>
    """
    try:
        import onnxruntime
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("ONNX export needs onnx and onnxruntime: pip install 'monai-ext[export]'") from err
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=list(providers))


def export_onnx(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    path: str | os.PathLike,
    input_names: Sequence[str] | None = None,
    dynamic_batch: bool = True,
    opset_version: int = 18,
    dynamo: bool = False,
    atol: float = 1e-4,
    rtol: float = 1e-4,
) -> ExportReport:
    """Export ``model`` to ONNX at ``path`` and compare onnxruntime (CPU) outputs with eager PyTorch.

    Args:
        model: network taking positional tensors (wrap keyword inputs with :class:`PositionalInputs`).
        example_inputs: one tensor or a sequence, on the CPU.
        path: output ``.onnx`` file.
        input_names: graph input names (default ``input0``, ``input1``, ...).
        dynamic_batch: mark axis 0 of every input and output dynamic (TorchScript-based exporter).
        opset_version: ONNX opset.
        dynamo: use the ``torch.export``-based exporter instead of the TorchScript-based one.
        atol, rtol: comparison tolerances.

    Example:
        >>> import tempfile
        >>> from monai_ext.networks import build_unet
        >>> net = build_unet(3, 1, 2, channels=(4, 8), strides=(2,), num_res_units=1)
        >>> out = Path(tempfile.mkdtemp()) / "u.onnx"
        >>> export_onnx(net, torch.rand(1, 1, 8, 8, 8), out).max_abs_diff < 1e-4
        True
    """
    inputs = tuple(x.cpu() for x in _inputs(example_inputs))
    names = list(input_names or [f"input{i}" for i in range(len(inputs))])
    if len(names) != len(inputs):
        raise ValueError(f"export_onnx: `input_names` has {len(names)} names for {len(inputs)} inputs.")
    out = Path(path)
    if out.suffix != ".onnx":
        raise ValueError(f"export_onnx: `path` must end with .onnx, got {out.name!r}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    with torch.no_grad():
        expected = flatten_outputs(model(*inputs))
    output_names = [f"output{i}" for i in range(len(expected))]
    kwargs: dict = {"input_names": names, "output_names": output_names, "opset_version": opset_version}
    if dynamic_batch and not dynamo:
        kwargs["dynamic_axes"] = {n: {0: "batch"} for n in names + output_names}
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.partial.onnx")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, inputs, str(tmp), dynamo=dynamo, **kwargs)
        session = onnx_session(tmp)
        actual = session.run(None, {n: x.numpy() for n, x in zip(names, inputs)})
        worst = compare_outputs(expected, actual, atol, rtol, f"export_onnx({type(model).__name__})")
        os.replace(tmp, out)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".data")):
            if leftover.exists():
                leftover.unlink()
    return ExportReport(out, "onnx", worst, len(expected))
