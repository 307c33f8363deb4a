"""Benchmark: WSI patch extraction rate (patches/s), monai-ext's readers against MONAI's tifffile backend.

Writes a synthetic JPEG-tiled pyramidal slide with the generator (``--size``, default 4096), draws
``--patches`` random patch locations (seeded) and reads them with each reader in the same run:
monai-ext's tile-bounded tifffile reader (:class:`monai_ext.data.wsi.Slide`), monai-ext over OpenSlide,
and ``monai.data.WSIReader(backend="tifffile")`` (which decodes the whole level for every patch, so it
reads ``--monai-patches`` of them). One JSON line per reader: patches/s, peak traced memory of one
read (tracemalloc), and the largest difference from the monai-ext tifffile patches.

Example:
    $ python benchmarks/io_wsi.py --size 4096 --patches 200 --monai-patches 5
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

from monai_ext.data.synthetic import generate
from monai_ext.data.wsi import Slide


def _rate(read: Callable[[tuple[int, int]], np.ndarray], locs: np.ndarray) -> tuple[float, list[np.ndarray]]:
    read(tuple(locs[0]))  # warm up (file open, decoder tables)
    t = time.perf_counter()
    out = [read(tuple(loc)) for loc in locs]
    return len(locs) / (time.perf_counter() - t), out


def _peak(read: Callable[[tuple[int, int]], np.ndarray], loc: tuple[int, int]) -> float:
    tracemalloc.start()
    try:
        read(loc)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=4096, help="slide side in pixels (multiple of 1024)")
    p.add_argument("--patch", type=int, default=256)
    p.add_argument("--level", type=int, default=0)
    p.add_argument("--patches", type=int, default=200)
    p.add_argument(
        "--monai-patches", type=int, default=5, help="MONAI's tifffile reader decodes a whole level each"
    )
    p.add_argument("--slide", type=str, default=None, help="use this slide instead of generating one")
    args = p.parse_args()
    common = {
        "benchmark": "io_wsi",
        "date": datetime.date.today().isoformat(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "patch": args.patch,
        "level": args.level,
    }
    with tempfile.TemporaryDirectory() as tmp:
        if args.slide:
            path = Path(args.slide)
        else:
            path = generate("wsi", Path(tmp) / "d", n=1, seed=0, size=args.size) / "slides" / "slide_000.tif"
        rng = np.random.default_rng(0)
        with Slide(path) as s:
            ds = s.downsamples[args.level]
            h0, w0 = s.level_shapes[0]
            ext = int(args.patch * ds)
            locs = np.stack(
                [rng.integers(0, h0 - ext, args.patches), rng.integers(0, w0 - ext, args.patches)], -1
            )
            common["slide_shape"] = list(s.level_shapes[0])
        size = (args.patch, args.patch)
        results = {}
        for backend in ("tifffile", "openslide"):
            try:
                slide = Slide(path, backend=backend)
            except ImportError as e:
                print(json.dumps({**common, "reader": f"monai_ext.Slide[{backend}]", "skipped": str(e)}))
                continue
            with slide:

                def read(loc, slide=slide):
                    return slide.read_region(loc, size, args.level)

                rate, out = _rate(read, locs)
                results[backend] = out
                peak = _peak(read, tuple(locs[-1]))
            diff = max(float(np.abs(a.astype(int) - b).max()) for a, b in zip(results["tifffile"], out))
            print(
                json.dumps(
                    {
                        **common,
                        "reader": f"monai_ext.Slide[{backend}]",
                        "patches": len(locs),
                        "patches_per_s": round(rate, 2),
                        "peak_mb_one_read": round(peak, 2),
                        "max_abs_diff_vs_ours_tifffile": diff,
                    }
                )
            )
        from monai.data import WSIReader

        reader = WSIReader(backend="tifffile", level=args.level, channel_dim=-1)
        wsi = reader.read(str(path))
        try:

            def read_monai(loc):
                return np.asarray(reader.get_data(wsi, location=loc, size=size, level=args.level)[0])

            n = max(1, args.monai_patches)
            rate, out = _rate(read_monai, locs[:n])
            peak = _peak(read_monai, tuple(locs[0]))
        finally:
            wsi.close()
        diff = max(float(np.abs(a.astype(int) - b).max()) for a, b in zip(results["tifffile"][:n], out))
        print(
            json.dumps(
                {
                    **common,
                    "reader": "monai.WSIReader[tifffile]",
                    "patches": n,
                    "patches_per_s": round(rate, 2),
                    "peak_mb_one_read": round(peak, 2),
                    "max_abs_diff_vs_ours_tifffile": diff,
                }
            )
        )


if __name__ == "__main__":
    main()
