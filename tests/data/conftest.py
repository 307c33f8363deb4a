"""Shared data fixtures: one 16k x 16k JPEG-tiled synthetic slide per session, generated once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

_GENERATE_16K = """
import json, sys, tracemalloc
from monai_ext.data.synthetic import generate
tracemalloc.start()
out = generate("wsi", sys.argv[1], n=1, seed=1, size=16384)
peak = tracemalloc.get_traced_memory()[1] / 2**20
print(json.dumps({"out": str(out), "peak_traced_mb": peak}))
"""


@pytest.fixture(scope="session")
def wsi_16k(tmp_path_factory) -> dict:
    """The 16k slide data set, generated once in a fresh process that reports its peak allocations.

    Returns ``{"out": folder, "slide": slide path, "peak_traced_mb": float}`` (tracemalloc peak of the
    generation, numpy buffers included; a fresh process keeps other tests' allocations out of it).
    """
    target = tmp_path_factory.mktemp("wsi_16k") / "d"
    proc = subprocess.run(
        [sys.executable, "-c", _GENERATE_16K, str(target)], capture_output=True, text=True, timeout=1200
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    info["slide"] = str(Path(info["out"]) / "slides" / "slide_000.tif")
    return info
