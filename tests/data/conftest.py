"""Shared data fixtures: one 16k x 16k JPEG-tiled synthetic slide per session, generated once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

_GENERATE_16K = """
import json, sys
from monai_ext.data.synthetic import generate
out = generate("wsi", sys.argv[1], n=1, seed=1, size=16384)
# VmHWM belongs to this process image only (ru_maxrss would carry the forking parent's peak over exec)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"out": str(out), "peak_rss_mb": int(hwm.split()[1]) / 1024}))
"""


@pytest.fixture(scope="session")
def wsi_16k(tmp_path_factory) -> dict:
    """The 16k slide data set, generated once in a fresh process that reports its peak resident memory.

    Returns ``{"out": folder, "slide": slide path, "peak_rss_mb": float}``. A fresh process keeps other
    tests' memory out of the figure; tracemalloc is not used because it slows generation several-fold.
    """
    target = tmp_path_factory.mktemp("wsi_16k") / "d"
    proc = subprocess.run(
        [sys.executable, "-c", _GENERATE_16K, str(target)], capture_output=True, text=True, timeout=1200
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    info["slide"] = str(Path(info["out"]) / "slides" / "slide_000.tif")
    return info
