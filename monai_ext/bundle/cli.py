"""``monai-ext bundle``: list, path, verify and run the shipped bundles.

Example:
    $ monai-ext bundle list
    $ monai-ext bundle run he_tissue_classification train --epochs 2 --output_dir ./he_run
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

__all__ = ["add_parser", "run_command"]


def run_command(name: str, mode: str, output_dir: str, extra: list[str]) -> list[str]:
    """The ``python -m monai.bundle run`` command line for ``mode`` of bundle ``name``."""
    from monai_ext.bundle.registry import bundle_path, config_files

    files = config_files(name, mode)
    configs = "[" + ",".join(repr(f) for f in files) + "]"
    prefix = (
        ["torchrun", "--standalone", "--nproc_per_node=2"] if mode == "multi_gpu_train" else [sys.executable]
    )
    return [
        *prefix,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        configs,
        "--meta_file",
        str(bundle_path(name) / "configs" / "metadata.json"),
        "--logging_file",
        str(bundle_path(name) / "configs" / "logging.conf"),
        "--bundle_root",
        os.path.abspath(output_dir),
        *extra,
    ]


def _cmd_list(args: argparse.Namespace) -> int:
    from monai_ext.bundle.registry import bundle_info, bundle_names

    print(f"{'name':32s} {'version':8s} {'metric':24s} task")
    for name in bundle_names():
        info = bundle_info(name)
        metric = ", ".join(f"{k}={v}" for k, v in info.metrics.items()) or "-"
        print(f"{name:32s} {info.version:8s} {metric:24s} {info.task}")
    return 0


def _cmd_path(args: argparse.Namespace) -> int:
    from monai_ext.bundle.registry import bundle_path

    print(bundle_path(args.name))
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from monai_ext.bundle.registry import verify_bundle

    for check in verify_bundle(args.name):
        print(f"ok  {args.name}: {check}")
    return 0


def _cmd_run(args: argparse.Namespace, extra: list[str]) -> int:
    cmd = run_command(args.name, args.mode, args.output_dir or os.path.join(".", args.name), extra)
    print("running: " + " ".join(cmd), file=sys.stderr)
    return subprocess.call(cmd)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``bundle`` and its subcommands on the ``monai-ext`` parser."""
    p = sub.add_parser(
        "bundle", help="list, verify and run the shipped MONAI bundles", description=__doc__.split("\n")[0]
    )
    bsub = p.add_subparsers(dest="bundle_command", metavar="SUBCOMMAND")
    bsub.required = True

    q = bsub.add_parser(
        "list", help="name, version, metric and task of every bundle", description="List bundles."
    )
    q.set_defaults(func=_cmd_list)

    q = bsub.add_parser(
        "path", help="print the folder of a bundle", description="Print where bundle NAME is."
    )
    q.add_argument("name", metavar="NAME")
    q.set_defaults(func=_cmd_path)

    q = bsub.add_parser(
        "verify",
        help="layout, metadata (both schemas), configs, network in/out",
        description="Run the offline checks on bundle NAME.",
    )
    q.add_argument("name", metavar="NAME")
    q.set_defaults(func=_cmd_verify)

    q = bsub.add_parser(
        "run",
        help="forward to python -m monai.bundle run with the right config files",
        description="Run MODE of bundle NAME; unknown options (--epochs 2, --dataset_dir DIR, ...) "
        "are forwarded to monai.bundle as config overrides.",
    )
    q.add_argument("name", metavar="NAME")
    q.add_argument("mode", metavar="MODE", choices=["train", "evaluate", "inference", "multi_gpu_train"])
    q.add_argument("--output_dir", default=None, help="bundle_root for models/ and eval/ (default ./NAME)")
    q.set_defaults(func=_cmd_run, forwards_unknown=True)
