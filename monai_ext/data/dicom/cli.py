"""``monai-ext dicom2nifti IN_DIR OUT_DIR [--series ID] [--anonymize] [--strict] [--list]``.

Example:
    $ monai-ext dicom2nifti /data/export /data/nifti --anonymize
    $ monai-ext dicom2nifti /data/export /data/nifti --list
"""

from __future__ import annotations

import argparse
import json
import warnings
from typing import Any

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    from monai_ext.data.dicom.convert import dicom2nifti
    from monai_ext.data.dicom.series import scan

    if args.list:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = scan(args.in_dir)
        for d in report.series:
            print(json.dumps(d.to_dict()))
        return 0
    report = dicom2nifti(
        args.in_dir, args.out_dir, series=args.series, anonymize=args.anonymize, strict=args.strict
    )
    for c in report["converted"]:
        extra = f"  warning: {'; '.join(c['warnings'])}" if c["warnings"] else ""
        print(
            f"converted {c['id']} ({c['modality']} {c['kind']}, shape {tuple(c['shape'])})"
            f" -> {c['file']}{extra}"
        )
    for s in report["skipped"]:
        what = s.get("id") or f"{s['files']} file(s) like {s['example']}"
        print(f"skipped {what}: {s['reason']}")
    print(
        f"{len(report['converted'])} converted, {len(report['skipped'])} skipped, "
        f"{report['non_dicom']} non-DICOM file(s) ignored; report: {args.out_dir}/dicom2nifti_report.json"
    )
    if not report["converted"]:
        raise ValueError(f"IN_DIR {args.in_dir!r}: no series could be converted (see the skipped list above)")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``dicom2nifti`` on the ``monai-ext`` subparsers."""
    p = subparsers.add_parser(
        "dicom2nifti",
        help="convert DICOM series to NIfTI + JSON sidecars",
        description="Convert every DICOM series part found under IN_DIR (or the --series ones) to NIfTI "
        "(RAS affine, CT in HU) with a JSON sidecar of non-identifying metadata. Series that cannot be an "
        "image in patient space are reported and skipped; outputs are written atomically.",
    )
    p.add_argument("in_dir", metavar="IN_DIR", help="folder tree of DICOM files")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder (created)")
    p.add_argument(
        "--series", action="append", metavar="ID", help="series part id (from --list) or UID; repeatable"
    )
    p.add_argument(
        "--anonymize", action="store_true", help="no patient IDs, UIDs or dates in file names and sidecars"
    )
    p.add_argument(
        "--strict", action="store_true", help="skip series with gaps, duplicates or non-uniform spacing"
    )
    p.add_argument("--list", action="store_true", help="only list the series parts found (JSON lines)")
    p.set_defaults(func=_run)
    return p
