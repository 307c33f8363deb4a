"""How studies are stored in a MONAI Label datastore for the bundles: multi-sequence MRI as one NIfTI.

MONAI Label's local datastore holds one file per study. A multi-sequence bundle (input ``num_channels``
> 1 that are named image sequences, such as ``mri_multimodal_segmentation``: ``t1, t1c, t2, flair``)
therefore gets **one 4D NIfTI per study whose last axis holds the sequences in the order of the
bundle's input** ``channel_def``. All sequences share one grid (shape and affine); a sequence that
was not acquired is an all-zero channel (the fusion network treats all-zero channels as missing).
:func:`stack_sequences` writes such a file from one file per sequence (``monai-ext label stack``).

Example:
    >>> from monai_ext.label.studies import input_sequences
    >>> input_sequences("mri_multimodal_segmentation")
    ['t1', 't1c', 't2', 'flair']
    >>> # stack_sequences({"t1": "t1.nii.gz", "t1c": "t1c.nii.gz", "t2": "t2.nii.gz", "flair": None},
    >>> #                 "studies/brain_001.nii.gz")
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["input_sequences", "stack_sequences"]


def _input_format(name_or_path: str | os.PathLike) -> dict:
    from monai_ext.label.bundles import _resolve

    meta = _resolve(name_or_path) / "configs" / "metadata.json"
    if not meta.is_file():
        raise ValueError(f"bundle {str(name_or_path)!r} is not a bundle: {meta} does not exist")
    inputs = json.loads(meta.read_text()).get("network_data_format", {}).get("inputs", {})
    if not inputs:
        raise ValueError(f"bundle {str(name_or_path)!r}: metadata.json has no network_data_format.inputs")
    return next(iter(inputs.values()))


def input_sequences(name_or_path: str | os.PathLike) -> list[str]:
    """Sequence names of a multi-sequence bundle's input channels, in channel order; ``[]`` otherwise.

    A bundle is multi-sequence when its input has more than one channel and is not a colour image
    (RGB histology): each channel is one acquisition stored as one channel of the study's NIfTI.
    """
    fmt = _input_format(name_or_path)
    channel_def = fmt.get("channel_def", {})
    if int(fmt.get("num_channels", len(channel_def) or 1)) < 2 or len(channel_def) < 2:
        return []
    names = [str(channel_def[k]).lower() for k in sorted(channel_def, key=int)]
    if str(fmt.get("format", "")).upper() in ("RGB", "RGBA") or set(names) <= {"r", "g", "b", "a"}:
        return []
    return names


def stack_sequences(
    sequences: Mapping[str, str | os.PathLike | None],
    out_path: str | os.PathLike,
    order: list[str] | None = None,
) -> Path:
    """Write one multi-channel NIfTI (``X, Y, Z, C``) from one 3D file per sequence; return its path.

    Args:
        sequences: sequence name -> NIfTI file, or None for a sequence that was not acquired (all zeros).
        out_path: the study file to write (``.nii.gz``); written to a temporary name, then renamed.
        order: channel order (default: the keys of ``sequences``); use
            ``input_sequences("mri_multimodal_segmentation")`` for the bundle's order.

    Raises:
        ValueError: a name outside ``order``, no sequence at all, or files on different grids.
        FileNotFoundError: a listed file does not exist.

    Example:
        >>> # stack_sequences({"t1": "a_t1.nii.gz", "t1c": None, "t2": "a_t2.nii.gz", "flair": "a_fl.nii.gz"},
        >>> #                 "studies/a.nii.gz", order=["t1", "t1c", "t2", "flair"])
    """
    import nibabel as nib

    order = list(sequences) if order is None else [str(s).lower() for s in order]
    given = {str(k).lower(): v for k, v in sequences.items()}
    unknown = sorted(set(given) - set(order))
    if unknown:
        raise ValueError(f"sequences: unknown name(s) {unknown}; expected some of {order}")
    present = {k: Path(v) for k, v in given.items() if v is not None}
    if not present:
        raise ValueError(f"sequences: no file given; expected files for some of {order}")
    for name, path in present.items():
        if not path.is_file():
            raise FileNotFoundError(f"sequence {name!r}: file {str(path)!r} does not exist")
    ref_name = next(n for n in order if n in present)
    ref = nib.load(present[ref_name])
    if len(ref.shape) != 3:
        raise ValueError(
            f"sequence {ref_name!r}: {present[ref_name]} has shape {ref.shape}; expected a 3D volume"
        )
    channels = []
    for name in order:
        if name not in present:
            channels.append(np.zeros(ref.shape, dtype=np.float32))
            continue
        img = nib.load(present[name])
        if img.shape != ref.shape or not np.allclose(img.affine, ref.affine, atol=1e-3):
            raise ValueError(
                f"sequence {name!r}: {present[name]} is on grid {img.shape} / affine {img.affine.tolist()}, "
                f"but {ref_name!r} is on {ref.shape} / {ref.affine.tolist()}; resample all sequences onto "
                "one grid first"
            )
        channels.append(np.asarray(img.dataobj, dtype=np.float32))
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    stacked = nib.Nifti1Image(np.stack(channels, axis=-1), ref.affine)
    stacked.header.set_xyzt_units(*ref.header.get_xyzt_units())
    suffix = ".nii.gz" if out.name.endswith(".nii.gz") else out.suffix
    tmp = out.with_name(f".{out.name}.tmp{suffix}")
    nib.save(stacked, tmp)
    os.replace(tmp, out)
    return out
