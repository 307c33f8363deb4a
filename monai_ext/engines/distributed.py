"""Distributed data parallel (torchrun) helpers: process group, device, DDP wrapper, sampled loaders.

Under ``torchrun --nproc_per_node N`` the environment carries ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`init_distributed` starts the process group (NCCL on CUDA, gloo on the CPU) and
returns this process's device. Training data goes through MONAI's ``DistributedSampler`` (shuffled,
evenly divisible); validation uses ``even_divisible=False`` so every sample is seen exactly once and
MONAI's metric handlers gather the per-rank results before reducing. Only rank 0 writes checkpoints
(:class:`~monai_ext.engines.checkpoint.CheckpointHandler`) and logs (:func:`is_rank0`).

Example:
    >>> world_size(), is_rank0()
    (1, True)
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from monai.data import DataLoader, Dataset
from monai.data import DistributedSampler as MonaiDistributedSampler
from torch import nn

__all__ = [
    "cleanup_distributed",
    "distributed_loader",
    "init_distributed",
    "is_distributed",
    "is_rank0",
    "wrap_ddp",
    "world_size",
]


def is_distributed() -> bool:
    """True when a ``torch.distributed`` process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_rank0() -> bool:
    """True on rank 0 or without a process group: the process that writes files and logs."""
    return not is_distributed() or dist.get_rank() == 0


def init_distributed(backend: str | None = None) -> torch.device:
    """Initialise the process group from torchrun's environment and return this rank's device.

    Without ``WORLD_SIZE`` (> 1) nothing is initialised and ``cuda:0`` or ``cpu`` is returned. The backend
    defaults to ``nccl`` when CUDA is available, else ``gloo``.

    Example:
        >>> init_distributed().type in ("cpu", "cuda")
        True
    """
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if ws <= 1 or is_distributed():
        if is_distributed() and cuda:
            return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
        return torch.device("cuda:0" if cuda else "cpu")
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise RuntimeError(
                f"init_distributed: WORLD_SIZE={ws} but environment variable {key} is not set."
            )
    backend = backend or ("nccl" if cuda else "gloo")
    dist.init_process_group(backend=backend)
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device(f"cuda:{local}")
    return torch.device("cpu")


def cleanup_distributed() -> None:
    """Destroy the process group if one is initialised."""
    if is_distributed():
        dist.destroy_process_group()


def wrap_ddp(network: nn.Module, device: torch.device | str) -> nn.Module:
    """Move ``network`` to ``device`` and wrap it in ``DistributedDataParallel`` when distributed.

    Example:
        >>> isinstance(wrap_ddp(torch.nn.Linear(2, 1), "cpu"), torch.nn.Linear)
        True
    """
    device = torch.device(device)
    network = network.to(device)
    if not is_distributed():
        return network
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(network, device_ids=ids)


def distributed_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    even_divisible: bool = True,
    num_workers: int = 0,
    **kwargs: Any,
) -> DataLoader:
    """A MONAI ``DataLoader`` that splits ``dataset`` across ranks (MONAI ``DistributedSampler``).

    Works without a process group too (one replica), so the same code runs in 1 and N processes.
    MONAI engines call ``sampler.set_epoch(epoch)`` at every epoch start.

    Example:
        >>> loader = distributed_loader(Dataset(list(range(5))), batch_size=2, shuffle=False)
        >>> len(loader)
        3
    """
    sampler = MonaiDistributedSampler(
        dataset,
        even_divisible=even_divisible,
        num_replicas=world_size(),
        rank=dist.get_rank() if is_distributed() else 0,
        shuffle=shuffle,
        seed=seed,
    )
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, **kwargs)
