"""Run the chunks of a batched CPU kernel in parallel: one single-threaded worker per intra-op thread.

Kernels made of many small passes over cache-sized chunks (Macenko: ~15 passes per chunk) spend most
of their CPU time starting and joining OpenMP regions when torch splits every pass over the intra-op
threads. Handing each of ``torch.get_num_threads()`` workers a contiguous group of chunks, run with
one intra-op thread (set in the worker only: ``torch.set_num_threads`` is per thread under OpenMP),
keeps every core busy on whole chunks instead. The caller's thread setting is left as it was, and
results come back in chunk order, so the output equals the serial one.

Example:
    >>> import torch
    >>> x = torch.arange(12.0).reshape(6, 2)
    >>> chunks = [slice(i, i + 2) for i in range(0, 6, 2)]
    >>> torch.equal(torch.cat(map_chunks(lambda c: x[c] * 2, chunks, x.device)), x * 2)
    True
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

__all__ = ["map_chunks"]

T = TypeVar("T")
_PREFIX = "monai_ext_cpu"
_POOL: ThreadPoolExecutor | None = None
_POOL_PID = -1
_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    """The shared pool, grown when needed and made anew in a forked child (its threads do not survive
    a fork, and an inherited executor would queue work that never runs)."""
    global _POOL, _POOL_PID
    with _LOCK:
        stale = _POOL is not None and _POOL_PID != os.getpid()
        if _POOL is None or stale or _POOL._max_workers < workers:
            if _POOL is not None and not stale:
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=_PREFIX)
            _POOL_PID = os.getpid()
        return _POOL


def _run_group(fn: Callable[[slice], T], group: Sequence[slice]) -> list[T]:
    torch.set_num_threads(1)  # this worker thread only
    return [fn(c) for c in group]


def map_chunks(fn: Callable[[slice], T], chunks: Sequence[slice], device: torch.device) -> list[T]:
    """``[fn(c) for c in chunks]``, on the CPU spread over single-threaded workers in contiguous groups.

    ``fn`` must treat its chunks independently (no shared mutable state). Runs serially off the CPU,
    with one intra-op thread, for a single chunk, or when called from inside a worker.
    """
    workers = min(torch.get_num_threads(), len(chunks))
    in_worker = threading.current_thread().name.startswith(_PREFIX)
    if device.type != "cpu" or workers < 2 or in_worker:
        return [fn(c) for c in chunks]
    step = -(-len(chunks) // workers)
    groups = [chunks[i : i + step] for i in range(0, len(chunks), step)]
    out: list[T] = []
    for res in _pool(len(groups)).map(lambda g: _run_group(fn, g), groups):
        out.extend(res)
    return out
