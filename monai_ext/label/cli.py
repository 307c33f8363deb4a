"""``monai-ext label``: write a ready MONAI Label app folder serving the shipped bundles.

Example:
    $ monai-ext label app ./label_app
    $ monai-ext label stack studies/brain.nii.gz --seq t1=t1.nii.gz --seq t2=t2.nii.gz --seq flair=f.nii.gz
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


def _cmd_stack(args: argparse.Namespace) -> int:
    from monai_ext.label.studies import input_sequences, stack_sequences

    order = input_sequences(args.bundle)
    if not order:
        raise ValueError(f"--bundle {args.bundle!r} does not take a multi-sequence input")
    given: dict[str, str | None] = {}
    for item in args.seq:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--seq {item!r}: expected NAME=FILE with NAME one of {order}")
        given[name.strip().lower()] = path
    out = stack_sequences({**dict.fromkeys(order), **given}, args.out, order=order)
    missing = [s for s in order if s not in given]
    print(
        f"wrote {out} (channels {', '.join(order)}"
        + (f"; all zeros: {', '.join(missing)})" if missing else ")")
    )
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
    st = sub.add_parser(
        "stack",
        help="write one multi-sequence MRI study (one NIfTI, one channel per sequence)",
        description="Stack one 3D NIfTI per sequence into the 4D study NIfTI the multi-sequence bundle is "
        "served with (channels in the bundle's channel_def order; an absent sequence becomes an all-zero "
        "channel).",
    )
    st.add_argument(
        "out", metavar="OUT", help="study file to write (.nii.gz), e.g. inside the studies folder"
    )
    st.add_argument(
        "--seq",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="one sequence (repeat), e.g. t1=t1.nii.gz",
    )
    st.add_argument(
        "--bundle", default="mri_multimodal_segmentation", help="bundle whose channel order to follow"
    )
    st.set_defaults(func=_cmd_stack)
