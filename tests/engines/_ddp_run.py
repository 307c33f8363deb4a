"""Subprocess entry for the DDP test: a 1-process reference run, then 2 gloo ranks via mp.spawn.

Usage: python _ddp_run.py OUT_DIR PORT   (writes OUT_DIR/single.pt, OUT_DIR/rank0.pt, OUT_DIR/rank1.pt)
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
torch.set_num_threads(1)

from _engine_helpers import tiny_seg_items, tiny_unet  # noqa: E402
from monai.data import DataLoader, Dataset  # noqa: E402

from monai_ext.engines import (  # noqa: E402
    build_segmentation_workflow,
    cleanup_distributed,
    distributed_loader,
    init_distributed,
    save_checkpoint,
    wrap_ddp,
)

N_TRAIN, N_VAL, PER_RANK = 8, 5, 2


def _train(net, train_loader, val_loader, out_dir):
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    wf = build_segmentation_workflow(
        net, train_loader, val_loader=val_loader, optimizer=opt, max_epochs=1, output_dir=out_dir, hd95=False
    )
    wf.run()
    return wf


def _rank(rank: int, world: int, out_dir: str, port: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    device = init_distributed()
    net = wrap_ddp(tiny_unet(0), device)
    train = distributed_loader(Dataset(tiny_seg_items(N_TRAIN)), batch_size=PER_RANK, shuffle=False)
    val = distributed_loader(
        Dataset(tiny_seg_items(N_VAL, seed=1)), batch_size=2, shuffle=False, even_divisible=False
    )
    wf = _train(net, train, val, os.path.join(out_dir, "ckpt"))
    result = {
        "dice": torch.tensor(float(wf.evaluator.state.metrics["val_dice"]), dtype=torch.float64),
        "n_val_local": torch.tensor(len(val.sampler)),
        "n_saved": torch.tensor(len(wf.checkpointer.saved)),
        "model": net.module.state_dict(),
    }
    save_checkpoint(result, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    cleanup_distributed()


def main() -> None:
    out_dir, port = sys.argv[1], sys.argv[2]
    net = tiny_unet(0)
    train = DataLoader(Dataset(tiny_seg_items(N_TRAIN)), batch_size=2 * PER_RANK, shuffle=False)
    val = DataLoader(Dataset(tiny_seg_items(N_VAL, seed=1)), batch_size=2)
    wf = _train(net, train, val, None)
    dice = torch.tensor(float(wf.evaluator.state.metrics["val_dice"]), dtype=torch.float64)
    save_checkpoint({"dice": dice, "model": net.state_dict()}, os.path.join(out_dir, "single.pt"))
    mp.spawn(_rank, args=(2, out_dir, port), nprocs=2, join=True)


if __name__ == "__main__":
    main()
