"""The ``monai-ext`` console script.

Every subcommand has ``--help``; bad arguments end with one line on stderr naming the argument and a
non-zero exit status, never a traceback (set ``MONAI_EXT_DEBUG=1`` to see one).

Example:
    $ monai-ext synth he_patches /tmp/he --n 40 --seed 1
    $ monai-ext info
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import sys
from collections.abc import Callable, Sequence

__all__ = ["main", "build_parser", "OPTIONAL_PACKAGES"]

#: distribution name -> what it enables
OPTIONAL_PACKAGES: dict[str, str] = {
    "tifffile": "wsi: tiled TIFF slides",
    "imagecodecs": "wsi: JPEG/JPEG 2000 tiles",
    "openslide-python": "wsi: OpenSlide backend",
    "openslide-bin": "wsi: OpenSlide library",
    "cucim": "wsi: cuCIM backend (GPU)",
    "highdicom": "dicom: DICOM SEG writing, enhanced CT",
    "pylibjpeg": "dicom: compressed pixel data",
    "pylibjpeg-libjpeg": "dicom: JPEG / JPEG-LS",
    "pylibjpeg-openjpeg": "dicom: JPEG 2000",
    "pylibjpeg-rle": "dicom: RLE",
    "python-gdcm": "dicom: GDCM decoders",
    "monailabel": "label: MONAI Label server",
    "tensorboard": "tracking: TensorBoard",
    "mlflow": "tracking: MLflow",
    "onnxruntime": "exports: ONNX inference",
}


class CLIError(Exception):
    """An error whose message is shown to the user as one line."""


def _positive_int(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {text!r}")
        return value

    return parse


def _non_negative_int(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a non-negative integer, got {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{name} must be a non-negative integer, got {text!r}")
        return value

    return parse


def _cmd_synth(args: argparse.Namespace) -> int:
    from monai_ext.data.synthetic import KINDS, generate

    if args.kind not in KINDS:
        raise CLIError(f"unknown KIND {args.kind!r}; expected one of: {', '.join(sorted(KINDS))}")
    out = os.path.abspath(os.path.expanduser(args.out_dir))
    parent = os.path.dirname(out)
    probe = parent
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.access(probe or ".", os.W_OK):
        raise CLIError(f"OUT_DIR {args.out_dir!r} is not writable (no write permission on {probe})")
    try:
        path = generate(args.kind, out, n=args.n, seed=args.seed)
    except FileExistsError as e:
        raise CLIError(f"OUT_DIR: {e}") from None
    except PermissionError as e:
        raise CLIError(f"OUT_DIR {args.out_dir!r} is not writable: {e}") from None
    print(f"wrote {args.kind} ({args.n or KINDS[args.kind][2]} cases, seed {args.seed}) to {path}")
    return 0


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def info() -> dict:
    """Versions, devices and optional packages found, as a dict."""
    import torch

    from monai_ext import __version__

    devices = ["cpu"] + [
        f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())
    ]
    core = {
        d: _version(d) for d in ("torch", "monai", "pytorch-ignite", "numpy", "nibabel", "pydicom", "itk")
    }
    return {
        "monai_ext": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "core": core,
        "devices": devices,
        "torch_threads": torch.get_num_threads(),
        "optional": {name: (_version(name) or "not installed") for name in OPTIONAL_PACKAGES},
    }


def _cmd_info(args: argparse.Namespace) -> int:
    data = info()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"monai-ext {data['monai_ext']}  (python {data['python']}, {data['platform']})")
    print("core:")
    for k, v in data["core"].items():
        print(f"  {k:16s} {v}")
    print("devices: " + ", ".join(data["devices"]))
    print("optional packages:")
    for k, v in data["optional"].items():
        print(f"  {k:20s} {v:16s} {OPTIONAL_PACKAGES[k]}")
    return 0


#: name -> module with ``add_parser(subparsers)``: later subcommands register here.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "monai_ext.data.dicom.cli",
    "monai_ext.bundle.cli",
    "monai_ext.registration.cli",
    "monai_ext.label.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand."""
    from monai_ext.data.synthetic import KINDS

    parser = argparse.ArgumentParser(prog="monai-ext", description="monai-ext command line tools.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "synth",
        help="generate a synthetic data set",
        description="Generate a deterministic synthetic data set of KIND into OUT_DIR (created atomically).",
        epilog="kinds:\n" + "\n".join(f"  {k:22s} {v[3]} (default n={v[2]})" for k, v in KINDS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("kind", metavar="KIND", help=f"one of: {', '.join(KINDS)}")
    p.add_argument("out_dir", metavar="OUT_DIR", help="new (or empty) output folder")
    p.add_argument("--n", type=_positive_int("--n"), default=None, help="number of cases (default per KIND)")
    p.add_argument("--seed", type=_non_negative_int("--seed"), default=0, help="random seed (default 0)")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser(
        "info",
        help="versions, devices, optional packages",
        description="Print versions, devices and which optional packages are installed.",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)

    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``monai-ext`` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "forwards_unknown", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(
            (args.func(args, extra) if getattr(args, "forwards_unknown", False) else args.func(args)) or 0
        )
    except (CLIError, ValueError, FileNotFoundError, FileExistsError, PermissionError) as e:
        if os.environ.get("MONAI_EXT_DEBUG"):
            raise
        print(f"monai-ext {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
