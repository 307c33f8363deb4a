"""Benchmark: DICOM series load time, monai-ext's reader against MONAI's PydicomReader and ITKReader.

Writes a synthetic 512 x 512 x N CT series (N=300, or 32 with ``--small``) with the synthetic generator,
optionally with InstanceNumbers scrambled against position (``--scramble``), loads it with each reader in
the same run and prints one JSON line per reader: best and median wall time over ``--repeats`` loads, and
the largest absolute difference from the known HU volume (in the reader's RAS voxel order).

Example:
    $ python benchmarks/io_dicom.py --small
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import tempfile
import time
import warnings

import numpy as np
import pydicom
import torch
from monai.transforms import LoadImage

from monai_ext.data.dicom import DicomSeriesReader
from monai_ext.data.synthetic._dicom import write_ct_series


def _series(folder: str, n: int, scramble: bool) -> np.ndarray:
    rng = np.random.default_rng(0)
    z = np.linspace(-1, 1, n)[None, None, :]
    y, x = np.meshgrid(np.linspace(-1, 1, 512), np.linspace(-1, 1, 512), indexing="xy")
    body = (x.T[:, :, None] ** 2 + y.T[:, :, None] ** 2 + 0.3 * z**2) < 0.8
    hu = np.where(body, 40, -1000) + rng.integers(-20, 20, size=(512, 512, n))
    info = write_ct_series(folder, hu.astype(np.int16), spacing=(0.7, 0.7, 1.25), uid_seed=("bench", n))
    if scramble:
        for f, k in zip(info["files"], rng.permutation(n)):
            ds = pydicom.dcmread(f)
            ds.InstanceNumber = int(k) + 1
            ds.save_as(f)
    return hu[::-1, ::-1, :]  # RAS voxel order the readers return (LPS-written columns/rows flipped)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=300, help="number of slices (default 300)")
    p.add_argument("--small", action="store_true", help="32 slices, for a quick run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scramble", action="store_true", help="InstanceNumbers not following position")
    args = p.parse_args()
    n = 32 if args.small else args.n
    torch.set_num_threads(1)
    readers = {
        "monai_ext.DicomSeriesReader": DicomSeriesReader(),
        "monai.PydicomReader": "PydicomReader",
        "monai.ITKReader": "ITKReader",
    }
    with tempfile.TemporaryDirectory() as tmp:
        truth = _series(tmp, n, args.scramble)
        for name, reader in readers.items():
            load = LoadImage(reader=reader, image_only=True)
            times, img = [], None
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    img = load(tmp)
                times.append(time.perf_counter() - t0)
            arr = img.numpy()
            err = float(np.abs(arr - truth).max()) if arr.shape == truth.shape else float("nan")
            print(
                json.dumps(
                    {
                        "benchmark": "dicom_series_load",
                        "reader": name,
                        "shape": list(arr.shape),
                        "scrambled_instance_numbers": args.scramble,
                        "best_s": round(min(times), 4),
                        "median_s": round(float(np.median(times)), 4),
                        "max_abs_err_hu": err,
                        "device": "cpu",
                        "machine": platform.processor() or platform.machine(),
                        "date": datetime.date.today().isoformat(),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
