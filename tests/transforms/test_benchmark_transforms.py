"""benchmarks/transforms.py: every benchmark line, ours and MONAI in one run, at toy sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"benchmark", "monai_per_s", "ours_per_s", "ratio", "median_ratio", "device", "date", "torch", "monai"}


@pytest.mark.slow
def test_transforms_benchmark_prints_and_writes_every_line(tmp_path):
    out = tmp_path / "bench.jsonl"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "transforms.py"), "--device", "cpu", "--size", "20"]
    cmd += ["--volumes", "2", "--crop", "10", "--patches", "2", "--repeats", "1", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=True)
    printed = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert printed == written
    names = [r["benchmark"] for r in printed]
    assert names == ["radiology_3d_chain", "macenko", "hed_jitter", "training_pipeline_3d"]
    for r in printed:
        assert KEYS <= r.keys(), r
        assert r["monai_per_s"] > 0 and r["ours_per_s"] > 0
        assert r["omp_wait_policy"] == "PASSIVE" and r["threads"] == 1
    assert printed[-1]["crop"] == [10, 10, 10] and not list(tmp_path.glob("*.tmp"))
    bad = subprocess.run(cmd[:2] + ["--repeats", "0"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode != 0 and "--repeats" in bad.stderr
