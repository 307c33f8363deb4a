"""benchmarks/training.py: its core runs every pipeline on a tiny config and reports the JSON fields."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "training.py"
_spec = importlib.util.spec_from_file_location("monai_ext_bench_training", _PATH)
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench  # dataclasses resolve annotations through sys.modules
_spec.loader.exec_module(bench)

TINY = dict(
    patch=16,
    batch=4,
    num_samples=2,
    volume=(24, 24, 20),
    num_volumes=4,
    iterations=1,
    warmup=0,
    rounds=2,
    channels=(4, 8),
    num_res_units=0,
)


def test_core_runs_all_pipelines_and_reports_json_fields():
    cfg = bench.TrainingBenchConfig(**TINY)
    records = bench.run_training_benchmark(cfg, "cpu")
    assert [r["pipeline"] for r in records] == list(bench.PIPELINES)
    lines = bench._json_records(records, cfg, torch.device("cpu"), threads=1)
    parsed = [json.loads(json.dumps(r)) for r in lines]
    for r in parsed[:-1]:
        assert r["benchmark"] == "training_ct_unet" and r["device"].startswith("cpu")
        assert r["patch"] == [16, 16, 16] and r["batch"] == 4 and r["amp"] is False
        assert r["samples_per_s"] > 0 and r["ratio_to_bare"] > 0 and math.isfinite(r["final_loss"])
        assert r["samples_per_s"] >= r["samples_per_s_median"] > 0  # best of 2 rounds
        assert {"date", "torch", "monai", "iterations", "rounds", "seconds"} <= set(r)
    assert parsed[0]["pipeline"] == "bare_step" and parsed[0]["ratio_to_bare"] == 1.0
    summary = parsed[-1]
    assert summary["pipeline"] == "summary" and set(summary["ratio_to_bare"]) == set(bench.PIPELINES)


def test_config_checks():
    with pytest.raises(ValueError, match="multiple of num_samples"):
        bench.TrainingBenchConfig(batch=6, num_samples=4)
    with pytest.raises(ValueError, match="bare_step"):
        bench.run_training_benchmark(bench.TrainingBenchConfig(**TINY), "cpu", ["ours"])
