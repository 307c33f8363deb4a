"""SIGKILL mid-epoch + resume == uninterrupted run; separate processes (2 workers, random aug) repeat."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("_train_run.py")
ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300
    )


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _losses(path: Path) -> dict[int, float]:
    rows = [line.split() for line in path.read_text().splitlines()]
    return {int(i): float.fromhex(v) for i, v in rows}


@pytest.mark.slow
def test_sigkill_resume_and_reproducibility(tmp_path):
    ref_proc = _run(str(tmp_path / "a"), str(tmp_path / "a.pt"))
    assert ref_proc.returncode == 0, ref_proc.stderr[-3000:]
    ref = _load(tmp_path / "a.pt")
    assert ref["losses"].numel() == 9  # 3 epochs x 3 iterations, workers + random augmentation

    # a second process, SIGKILLed in the middle of epoch 3 (after iteration 8 of 9)
    killed = _run(str(tmp_path / "k"), str(tmp_path / "k.pt"), "--kill-at", "8")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (tmp_path / "k.pt").exists()
    # reproducibility: the two separate processes have identical loss histories
    assert _losses(tmp_path / "k.pt.losses") == {i + 1: float(v) for i, v in enumerate(ref["losses"][:8])}
    latest = _load(tmp_path / "k" / "checkpoint_latest.pt")
    assert latest["engine"]["iteration"] == 6 and latest["_meta"]["epoch"] == 2

    # a third process resumes from the latest checkpoint and repeats epoch 3 exactly
    resumed = _run(str(tmp_path / "k"), str(tmp_path / "k.pt"), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    out = _load(tmp_path / "k.pt")
    assert torch.equal(out["losses"], ref["losses"][6:])
    for key, value in ref["model"].items():
        assert torch.equal(value, out["model"][key]), key
