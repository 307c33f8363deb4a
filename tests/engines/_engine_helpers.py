"""Tiny 2D segmentation setup shared by the engine tests and their subprocess scripts."""

from __future__ import annotations

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.networks.nets import UNet
from monai.transforms import Compose, RandFlipd, RandGaussianNoised

from monai_ext.engines import build_segmentation_workflow
from monai_ext.transforms.batch import BatchRandFlip


def tiny_seg_items(n: int = 8, size: int = 32, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``n`` images with a bright disc and its mask (channel-first, float32 / int64)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    items = []
    for _ in range(n):
        cy, cx, r = rng.integers(8, size - 8), rng.integers(8, size - 8), rng.integers(3, 7)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.int64)
        img = (mask + 0.3 * rng.standard_normal((size, size))).astype(np.float32)
        items.append({"image": img[None], "label": mask[None]})
    return items


def tiny_unet(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return UNet(2, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0)


def build_tiny_seg(
    out_dir=None,
    max_epochs: int = 2,
    resume: bool = False,
    num_workers: int = 0,
    seed: int = 0,
    n: int = 8,
    init_seed: int = 0,
    **kwargs,
):
    """Seg workflow with random CPU transforms, a GPU-style batch flip, Adam + StepLR; val on 3 items."""
    items = tiny_seg_items(n)
    train_tf = Compose(
        [RandFlipd(["image", "label"], prob=0.5, spatial_axis=0), RandGaussianNoised("image", 0.5)]
    )
    loader = DataLoader(Dataset(items, train_tf), batch_size=2, shuffle=True, num_workers=num_workers)
    val_loader = DataLoader(Dataset(tiny_seg_items(3, seed=1)), batch_size=2)
    net = tiny_unet(init_seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    wf = build_segmentation_workflow(
        net,
        loader,
        val_loader=val_loader,
        max_epochs=max_epochs,
        optimizer=opt,
        lr_scheduler=sched,
        gpu_augment=BatchRandFlip(prob=0.5, spatial_axes=(1,)),
        output_dir=out_dir,
        resume=resume,
        seed=seed,
        hd95=False,
        **kwargs,
    )
    losses: list[float] = []
    from ignite.engine import Events

    wf.trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output[0]["loss"]))
    )
    return wf, net, opt, sched, losses
