"""CPU chunk parallelism: same results as the serial loop, caller's threads untouched, errors surface."""

from __future__ import annotations

import time

import pytest
import torch

from monai_ext.transforms.functional import stain as fstain
from monai_ext.transforms.functional.cpu_parallel import map_chunks


@pytest.fixture()
def two_threads():
    keep = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(keep)


def test_map_chunks_keeps_order_and_caller_threads(two_threads):
    x = torch.arange(40.0).reshape(10, 4)
    chunks = [slice(i, i + 3) for i in range(0, 10, 3)]
    seen = []

    def fn(c):
        seen.append(torch.get_num_threads())
        return x[c] * 2

    out = map_chunks(fn, chunks, x.device)
    assert torch.equal(torch.cat(out), x * 2)
    assert seen == [1] * len(chunks)  # workers run single-threaded
    assert torch.get_num_threads() == 2  # the caller's setting is left alone

    def fail_on_last(c):
        if c.start == 9:
            raise ValueError("last chunk failed")
        return x[c]

    with pytest.raises(ValueError, match="last chunk failed"):
        map_chunks(fail_on_last, chunks, x.device)


def test_parallel_macenko_equals_single_threaded(two_threads):
    g = torch.Generator().manual_seed(0)
    base = torch.tensor([[200, 120, 170], [150, 60, 140], [230, 190, 210]], dtype=torch.float32)
    idx = torch.randint(0, 3, (24, 64, 64), generator=g)
    img = (base[idx].permute(0, 3, 1, 2) + torch.randint(-20, 20, (24, 3, 64, 64), generator=g)).clamp(0, 255)
    img = img.to(torch.uint8)
    img[5] = 255  # a background tile among them
    par, pt_par = fstain.macenko_normalize(img)
    torch.set_num_threads(1)
    ser, pt_ser = fstain.macenko_normalize(img)
    assert torch.equal(par, ser) and torch.equal(pt_par, pt_ser) and bool(pt_par[5])


def _child_sum(queue) -> None:
    torch.set_num_threads(2)
    x = torch.arange(12.0).reshape(6, 2)
    out = map_chunks(lambda c: x[c].sum(), [slice(i, i + 2) for i in range(0, 6, 2)], x.device)
    queue.put(float(sum(out)))


def test_map_chunks_after_fork_makes_a_new_pool(two_threads):
    import multiprocessing as mp

    x = torch.ones(4, 2)

    def slow(c):
        time.sleep(0.2)  # both workers busy at once, so the parent's pool starts both threads
        return x[c]

    map_chunks(slow, [slice(0, 2), slice(2, 4)], x.device)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_sum, args=(queue,))
    proc.start()
    proc.join(30)
    alive = proc.is_alive()
    if alive:
        proc.kill()
    assert not alive, "map_chunks hung in a forked child"
    assert queue.get(timeout=5) == 66.0


def test_threads_started_after_map_chunks_keep_the_default(two_threads):
    import threading

    x = torch.ones(4, 2)
    map_chunks(lambda c: x[c], [slice(0, 2), slice(2, 4)], x.device)
    seen = []
    th = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    th.start()
    th.join()
    assert seen == [2]
