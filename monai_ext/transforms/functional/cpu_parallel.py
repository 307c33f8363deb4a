"""Run the chunks of a batched CPU kernel in parallel: one single-threaded worker per intra-op thread.

Kernels made of many small passes over cache-sized chunks (Macenko: ~15 passes per chunk) spend most
of their CPU time starting and joining OpenMP regions when torch splits every pass over the intra-op
threads. Handing each of ``torch.get_num_threads()`` workers a contiguous group of chunks, run with
one intra-op thread (OpenMP keeps that setting per thread; torch's default for threads started later,
which the worker's call also changes, is restored when the call returns), keeps every core busy on
whole chunks instead. Results come back in chunk order, so the output equals the serial one.

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
_LOCK = threading.Lock()


def _forget_pool() -> None:
    """In a forked child: the parent's worker threads do not exist there (an inherited executor would
    queue work that never runs), and a lock held by another parent thread would never be released."""
    global _POOL, _LOCK
    _POOL, _LOCK = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def _pool(workers: int) -> ThreadPoolExecutor:
    """The shared pool, grown when more workers are asked for."""
    global _POOL
    with _LOCK:
        if _POOL is None or _POOL._max_workers < workers:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=_PREFIX)
        return _POOL


def _run_group(fn: Callable[[slice], T], group: Sequence[slice]) -> list[T]:
    if torch.get_num_threads() != 1:  # once per worker thread (OpenMP keeps it per thread)
        torch.set_num_threads(1)
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
    caller = torch.get_num_threads()
    out: list[T] = []
    try:
        for res in _pool(len(groups)).map(lambda g: _run_group(fn, g), groups):
            out.extend(res)
    finally:
        # torch.set_num_threads in a worker also sets the default for threads started later: restore it
        torch.set_num_threads(caller)
    return out
