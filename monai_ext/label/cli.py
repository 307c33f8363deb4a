"""``monai-ext label``: write a ready MONAI Label app folder serving the shipped bundles.

Example:
    $ monai-ext label app ./label_app
    $ monailabel start_server --app ./label_app --studies ./studies
"""

from __future__ import annotations

import argparse

__all__ = ["add_parser"]


def _cmd_app(args: argparse.Namespace) -> int:
    from monai_ext.label.bundles import write_app

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    out = write_app(args.out_dir, models=models, init_weights=args.init_weights)
    print(f"wrote MONAI Label app to {out}")
    print(f"start it with: monailabel start_server --app {out} --studies STUDIES_DIR")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``label`` and its subcommand ``app OUT_DIR``."""
    p = subparsers.add_parser(
        "label",
        help="MONAI Label app serving the bundles",
        description="MONAI Label integration: write an app folder that serves the shipped bundles.",
    )
    sub = p.add_subparsers(dest="label_command", metavar="SUBCOMMAND")
    sub.required = True
    a = sub.add_parser(
        "app",
        help="write a ready MONAI Label app folder",
        description="Write OUT_DIR with main.py, README.md and a copy of every servable bundle under model/.",
    )
    a.add_argument("out_dir", metavar="OUT_DIR", help="new (or empty) output folder")
    a.add_argument(
        "--models", default="", help="comma-separated bundle names (default: all servable bundles)"
    )
    a.add_argument(
        "--init-weights",
        action="store_true",
        help="write untrained, randomly initialised models/model.pt files (smoke tests and demos only)",
    )
    a.set_defaults(func=_cmd_app)
