"""Subprocess entry for the fault-tolerance / reproducibility tests (tiny 2D segmentation on the CPU).

Usage: python _train_run.py OUT_DIR RESULT.pt --max-epochs 3 [--resume] [--kill-at ITER] [--num-workers 2]
With ``--kill-at`` the process SIGKILLs itself right after that global iteration (mid-epoch).
Every iteration appends ``iteration loss`` (float hex) to ``RESULT.pt.losses``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
torch.set_num_threads(1)

from _engine_helpers import build_tiny_seg  # noqa: E402
from ignite.engine import Events  # noqa: E402

from monai_ext.engines import save_checkpoint  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("result")
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--kill-at", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args()
    wf, net, *_, losses = build_tiny_seg(
        a.out_dir, max_epochs=a.max_epochs, resume=a.resume, num_workers=a.num_workers, seed=a.seed, n=6
    )
    log_path = a.result + ".losses"

    @wf.trainer.on(Events.ITERATION_COMPLETED)
    def _log(engine):  # survives SIGKILL: closed after every write
        with open(log_path, "a") as f:
            f.write(f"{engine.state.iteration} {losses[-1].hex()}\n")

    if a.kill_at:

        @wf.trainer.on(Events.ITERATION_COMPLETED(once=a.kill_at))
        def _die(engine):
            os.kill(os.getpid(), signal.SIGKILL)

    wf.run()
    save_checkpoint(
        {"model": net.state_dict(), "losses": torch.tensor(losses, dtype=torch.float64)}, a.result
    )


if __name__ == "__main__":
    main()
