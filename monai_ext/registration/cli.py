"""``monai-ext register FIXED MOVING OUT [--labels L] [--type rigid|affine|bspline]``.

Writes, all atomically and only when every check passed:

* ``OUT`` (``.nii``/``.nii.gz``): MOVING resampled (linear) onto FIXED's grid, with FIXED's affine;
* ``<OUT stem>_labels.nii.gz``: the ``--labels`` map resampled with nearest neighbour (same dtype);
* ``<OUT stem>_transform.tfm``: the ITK transform (fixed -> moving points, LPS);
* ``<OUT stem>_registration.json``: type, 4x4 RAS matrix (fixed -> moving), metric before/after.

Example:
    $ monai-ext register t1c.nii.gz flair.nii.gz flair_on_t1c.nii.gz --type rigid
    $ monai-ext register ct.nii.gz pet.nii.gz pet_on_ct.nii.gz --labels pet_seg.nii.gz --type affine
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from typing import Any

import numpy as np

__all__ = ["add_parser", "output_paths", "write_nifti_atomic"]

_SUFFIXES = (".nii.gz", ".nii")


def _stem(path: str) -> str:
    for suffix in _SUFFIXES:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    raise ValueError(f"OUT {path!r} must end in .nii or .nii.gz")


def output_paths(out: str) -> dict[str, str]:
    """The files ``register`` writes for the image path ``out``.

    Example:
        >>> output_paths("/tmp/a.nii.gz")["labels"]
        '/tmp/a_labels.nii.gz'
    """
    stem = _stem(out)
    return {
        "image": out,
        "labels": stem + "_labels.nii.gz",
        "transform": stem + "_transform.tfm",
        "report": stem + "_registration.json",
    }


def _temp_path(final: str, suffix: str) -> str:
    fd, tmp = tempfile.mkstemp(
        prefix=f".{os.path.basename(final)}.", suffix=suffix, dir=os.path.dirname(final)
    )
    os.close(fd)
    return tmp


def write_nifti_atomic(image: Any, path: str) -> None:
    """Write a channel-first MetaTensor (RAS affine) as NIfTI via a temp file and ``os.replace``.

    Example:
        >>> # write_nifti_atomic(result.image, "/tmp/moved.nii.gz")
    """
    import nibabel as nib

    arr = np.asarray(image.detach().cpu().numpy())
    arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    affine = np.asarray(image.affine, dtype=np.float64)
    nii = nib.Nifti1Image(arr, affine)
    nii.set_qform(affine, code=1)
    nii.set_sform(affine, code=1)
    tmp = _temp_path(path, ".nii.gz" if path.endswith(".gz") else ".nii")
    try:
        nib.save(nii, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _run(args: argparse.Namespace) -> int:
    import itk

    from monai_ext.registration.itk_registration import register_images

    out = os.path.abspath(os.path.expanduser(args.out))
    paths = output_paths(out)
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"OUT folder {parent!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"OUT folder {parent!r} is not writable")
    for name, value in (("FIXED", args.fixed), ("MOVING", args.moving), ("--labels", args.labels)):
        if value is not None and not os.path.isfile(value):
            raise FileNotFoundError(f"{name} {value!r} does not exist")
    wanted = [paths["image"], paths["transform"], paths["report"]] + (
        [paths["labels"]] if args.labels else []
    )
    existing = [p for p in wanted if os.path.exists(p)]
    if existing and not args.overwrite:
        raise FileExistsError(f"{existing[0]!r} exists; pass --overwrite to replace it")

    result = register_images(
        args.fixed,
        args.moving,
        args.labels,
        args.type,
        shrink_factors=tuple(args.shrink),
        smoothing_sigmas=tuple(args.sigmas),
        iterations=args.iterations,
        initializer=args.initializer,
        seed=args.seed,
        names=(os.path.basename(args.fixed), os.path.basename(args.moving)),
    )
    # everything below runs only after all checks passed; each file appears complete or not at all
    write_nifti_atomic(result.image, paths["image"])
    if result.label is not None:
        write_nifti_atomic(result.label, paths["labels"])
    tmp = _temp_path(paths["transform"], ".tfm")
    try:
        itk.transformwrite([result.transform], tmp)
        os.replace(tmp, paths["transform"])
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    report = {
        "fixed": os.path.basename(args.fixed),
        "moving": os.path.basename(args.moving),
        "transform_type": result.transform_type,
        "matrix_ras_fixed_to_moving": None if result.matrix is None else result.matrix.tolist(),
        "metric": "mattes_mutual_information (ITK sign, lower is better)",
        "metric_initial": result.metric_initial,
        "metric_final": result.metric_final,
        "overlap": result.overlap,
        "outputs": {k: os.path.basename(v) for k, v in paths.items() if k != "labels" or args.labels},
    }
    tmp = _temp_path(paths["report"], ".json")
    try:
        with open(tmp, "w") as f:
            json.dump(report, f, indent=2)
        os.replace(tmp, paths["report"])
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(
        f"registered {report['moving']} to {report['fixed']} ({args.type}): Mattes MI "
        f"{result.metric_initial:.4f} -> {result.metric_final:.4f}, overlap {result.overlap:.0%}; wrote {out}"
    )
    return 0


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected non-negative numbers, got {text!r}")
    return values


def _int_list(text: str) -> list[int]:
    values = _float_list(text)
    if any(v < 1 or v != int(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return [int(v) for v in values]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``register`` on the ``monai-ext`` subparsers."""
    from monai_ext.registration.itk_registration import TRANSFORM_TYPES

    p = subparsers.add_parser(
        "register",
        help="register MOVING to FIXED (ITK, Mattes mutual information)",
        description="Register MOVING to FIXED with ITK (Mattes mutual information, so contrasts may differ: "
        "T1 to T2, PET to CT) and write MOVING resampled onto FIXED's grid to OUT, plus "
        "<OUT stem>_labels.nii.gz (with --labels), <OUT stem>_transform.tfm and "
        "<OUT stem>_registration.json. "
        "Nothing is written when the images do not overlap, differ in dimension, or the metric did not "
        "improve.",
    )
    p.add_argument("fixed", metavar="FIXED", help="reference image (NIfTI)")
    p.add_argument("moving", metavar="MOVING", help="image to align (NIfTI)")
    p.add_argument("out", metavar="OUT", help="output image path (.nii or .nii.gz)")
    p.add_argument(
        "--labels", metavar="L", default=None, help="label map on MOVING's grid (resampled nearest)"
    )
    p.add_argument("--type", choices=TRANSFORM_TYPES, default="rigid", help="transform (default rigid)")
    p.add_argument("--initializer", choices=("moments", "geometry", "none"), default="moments")
    p.add_argument("--shrink", type=_int_list, default=[4, 2, 1], help="shrink factors per level (4,2,1)")
    p.add_argument("--sigmas", type=_float_list, default=[2.0, 1.0, 0.0], help="smoothing sigmas (2,1,0)")
    p.add_argument("--iterations", type=_positive, default=200, help="iterations per level (200)")
    p.add_argument("--seed", type=int, default=0, help="metric sampling seed (0)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=_run)
    return p
