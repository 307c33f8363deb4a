"""DDP on CPU (gloo, 2 ranks): matches a 1-process run on the combined batch; Dice reduced across ranks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _engine_helpers import tiny_unet

from monai_ext.engines import distributed_loader, init_distributed, is_rank0, world_size, wrap_ddp

SCRIPT = Path(__file__).with_name("_ddp_run.py")
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_single_process_fallbacks(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_distributed() == torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    assert world_size() == 1 and is_rank0()
    net = torch.nn.Linear(2, 1)
    assert wrap_ddp(net, "cpu") is net
    loader = distributed_loader(list(range(5)), batch_size=2, shuffle=True, seed=3)
    assert sorted(i for b in loader for i in b.tolist()) == [0, 1, 2, 3, 4]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        init_distributed()


@pytest.mark.slow
def test_two_ranks_match_single_process(tmp_path):
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), _free_port()],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    single = torch.load(tmp_path / "single.pt", weights_only=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for key, value in single["model"].items():
        for r in ranks:
            torch.testing.assert_close(r["model"][key], value, atol=1e-5, rtol=0)
    init = tiny_unet(0).state_dict()
    assert any(not torch.equal(init[k], v) for k, v in single["model"].items())  # training moved weights
    # odd-sized validation set split 3 + 2 across ranks, Dice gathered over all 5 samples
    assert [int(r["n_val_local"]) for r in ranks] == [3, 2]
    for r in ranks:
        assert abs(float(r["dice"]) - float(single["dice"])) < 1e-6
    # only rank 0 writes checkpoints
    assert [int(r["n_saved"]) for r in ranks] == [2, 0]  # latest + best on rank 0
    assert (tmp_path / "ckpt" / "checkpoint_latest.pt").is_file()
