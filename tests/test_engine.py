"""The replication engine in-process, against instrumented targets: resume bounds,
memory bounds, adaptive concurrency, and an event loop that never blocks."""

from __future__ import annotations

import asyncio
import gc
import logging
import os

import pytest

from dr_common.repository import FsStore, Repository
from dr_common.sources.file import FileDisk
from dr_common.targets.base import SinkRequest
from dr_common.targets.repository import RepositoryTarget
from dr_node.adaptive import AdaptiveLimiter
from dr_node.bandwidth import TokenBucket
from dr_node.config import EngineConfig
from dr_node.engine import Checkpoint, Engine
from tests.helpers.disks import MiB, make_disk
from tests.helpers.engines import Instrumented


async def _replicate(engine: Engine, store, disk_path, *, checkpoint=None, progress=None,
                     window=None, chunk_size=MiB, interval=8 * MiB, name="d1"):
    target = RepositoryTarget(await Repository.open_or_create(store), name="t")
    with FileDisk(disk_path) as src:
        sink = await target.sink(SinkRequest(plan="plans/p", cycle="plans/p/cycles/1",
                                             disk=name, size=src.size, chunk_size=chunk_size))
        return await engine.replicate(
            disk=name, source=src, sink=sink, chunk_size=chunk_size,
            checkpoint=checkpoint, checkpoint_interval=interval, window=window,
            progress=progress or (lambda *a: asyncio.sleep(0)))


async def test_a_failed_disk_gives_back_all_its_budget(tmp_path):
    """Chunk tasks cancelled before they ever ran (the disk failed) still hand back the
    byte budget taken for them: a node must not lose budget with every failed disk."""
    disk = tmp_path / "d.img"
    make_disk(disk, 64 * MiB, [(0, 64 * MiB)])
    engine = Engine(EngineConfig(window_chunks=32, workers=2))
    for attempt in range(3):
        store = Instrumented(FsStore(tmp_path / f"repo{attempt}", durable=False), die_at=8)
        with pytest.raises(BaseException):
            await _replicate(engine, store, disk, window=32)
        assert engine.budget.used == 0, f"attempt {attempt}: {engine.budget.used} bytes held"
    engine.close()


async def test_resume_after_kill_resends_at_most_one_window(tmp_path):
    disk = tmp_path / "d.img"
    make_disk(disk, 96 * MiB, [(0, 96 * MiB)])
    window = 4
    engine = Engine(EngineConfig(window_chunks=window, workers=2))
    checkpoints: list[Checkpoint] = []

    async def progress(cp, *_):
        if cp is not None:
            checkpoints.append(cp)

    first = Instrumented(FsStore(tmp_path / "repo", durable=False), die_at=60)
    with pytest.raises(BaseException):  # checkpoints every 32 chunks; death at the 60th
        await _replicate(engine, first, disk, progress=progress, window=window,
                         interval=32 * MiB)
    cp = checkpoints[-1]
    assert 0 < cp.watermark_chunk < 60

    second = Instrumented(FsStore(tmp_path / "repo", durable=False))
    result = await _replicate(engine, second, disk, checkpoint=cp, window=window,
                              interval=32 * MiB)
    resent = set(second.chunk_puts) & set(first.chunk_puts)
    assert len(resent) <= window, f"{len(resent)} chunks re-sent, window is {window}"
    # It resumed at the checkpoint (re-reading from there), not from the start ...
    assert result.stats.chunks_read == 96 - cp.watermark_chunk
    # ... and the manifest equals an uninterrupted run's (same repository, same key).
    clean = await _replicate(engine, FsStore(tmp_path / "repo", durable=False), disk)
    assert result.manifest.root_hash == clean.manifest.root_hash
    engine.close()


async def test_byte_budget_holds_with_twenty_disks_and_a_slow_target(tmp_path):
    budget = 6 * (MiB + 1)  # six encoded chunks (1 MiB and a header byte each)
    engine = Engine(EngineConfig(window_chunks=8, budget_bytes=budget, workers=2))
    store = Instrumented(FsStore(tmp_path / "repo", durable=False), delay=0.01)
    disks = []
    for i in range(20):
        path = tmp_path / f"d{i}.img"
        make_disk(path, 4 * MiB, [(0, 4 * MiB)], seed=i)
        disks.append(path)
    results = await asyncio.gather(*(
        _replicate(engine, store, p, name=f"d{i}") for i, p in enumerate(disks)))
    assert all(r.stats.chunks_stored == 4 for r in results)
    assert engine.budget.peak <= budget
    assert store.peak_inflight <= budget
    # The budget was the bottleneck (so the test can fail): it filled up.
    assert engine.budget.peak == budget
    assert engine.budget.used == 0
    engine.close()


async def test_adaptive_concurrency_shrinks_under_throttling_and_grows_back(tmp_path):
    disk = tmp_path / "d.img"
    make_disk(disk, 80 * MiB, [(0, 80 * MiB)])
    engine = Engine(EngineConfig(window_chunks=32, workers=2, min_concurrency=1,
                                 max_concurrency=32))
    limiter = engine.limiter("t")
    store = Instrumented(FsStore(tmp_path / "repo", durable=False), delay=0.005)
    store.throttle_every = 2  # half the writes answer SlowDown ...

    async def progress(*_):
        if store.puts > 120:
            store.throttle_every = 0  # ... until the target recovers
    result = await _replicate(engine, store, disk, chunk_size=256 << 10, progress=progress,
                              interval=1 << 20)
    assert result.stats.chunks_stored == 320
    limits = [lim for _, lim in limiter.history]
    low = min(limits)
    assert limiter.throttles > 0
    # The limit in force is its integer part: from 4 to 2 or fewer requests in flight.
    assert int(low) <= 2, f"limit never came down under throttling: {limits}"
    assert limiter.limit >= 3 * low and limiter.limit > 4, f"did not grow back: {limits}"
    engine.close()


def test_aimd_rules():
    lim = AdaptiveLimiter("x", initial=8, minimum=1, maximum=10)
    for _ in range(20):
        lim.on_success(0.010)
    assert 9 < lim.limit <= 10                       # additive increase, capped
    for _ in range(10):
        lim.on_throttle()
    assert lim.limit == pytest.approx(5)             # one x0.5 per burst, not ten
    for _ in range(20):
        lim.on_success(0.010)
    before = lim.limit
    for _ in range(int(before)):
        lim.on_success(0.100)                        # latency inflated 10x
    assert lim.limit < before


async def test_token_bucket_rate_changes_at_run_time():
    bucket = TokenBucket(0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await bucket.consume(10 << 20)                   # unlimited: no wait
    assert loop.time() - t0 < 0.05
    bucket.set_rate(4 << 20)
    t0 = loop.time()
    for _ in range(4):
        await bucket.consume(1 << 20)                # 4 MiB at 4 MiB/s
    assert loop.time() - t0 >= 0.7


def test_no_callback_blocks_the_loop_during_a_1gib_sync(tmp_path, caplog):
    disk = tmp_path / "d.img"
    with open(disk, "wb") as f:
        for _ in range(256):
            f.write(os.urandom(4 * MiB))

    def sync_once(repo_dir) -> list[str]:
        engine = Engine(EngineConfig())

        async def main():
            asyncio.get_running_loop().slow_callback_duration = 0.05
            return await _replicate(engine, FsStore(repo_dir, durable=False), disk)

        caplog.clear()
        # A full collection walks every object the test session holds (about a million
        # in the whole suite, 0.2 s), not the engine's: freeze them out of the count.
        gc.collect()
        gc.freeze()
        try:
            with caplog.at_level(logging.WARNING, logger="asyncio"):
                result = asyncio.run(main(), debug=True)
        finally:
            gc.unfreeze()
            engine.close()
        assert result.stats.chunks_stored == 1024
        return [r.getMessage() for r in caplog.records if "took" in r.getMessage()]

    # asyncio measures wall time, so a process descheduled on a busy machine looks like
    # a slow callback. Code that blocks the loop does so every time; noise does not.
    # So a second full sync must be clean for a slow callback in the first to be noise.
    slow = sync_once(tmp_path / "r1")
    if slow:
        slow_again = sync_once(tmp_path / "r2")
        assert not slow_again, (slow, slow_again)


def test_a_chunk_with_any_changed_byte_is_not_clean():
    """Chunks are clean only when wholly clean; a discard inside a clean chunk makes it
    read (not kept from the previous point), and an all-zero changed chunk is zero."""
    from dr_common.sources.base import Extent
    from dr_node.engine import _ExtentMap
    K = 64 << 10
    extents = [Extent(0, K, zero=True, clean=False),        # discarded since the last point
               Extent(K, 15 * K, zero=False, clean=True),  # unchanged data
               Extent(16 * K, 16 * K, zero=True, clean=True),  # unchanged hole
               Extent(32 * K, 16 * K, zero=True, clean=False)]  # zeroed since
    m = _ExtentMap(extents, use_clean=True)
    assert m.classify(0, 16 * K) == "data"
    assert m.classify(K, 16 * K) == "clean"
    assert m.classify(16 * K, 32 * K) == "clean"
    assert m.classify(32 * K, 48 * K) == "zero"
    assert m.classify(24 * K, 40 * K) == "zero"  # all zeros, partly changed
    # Without a previous point nothing is clean.
    m = _ExtentMap(extents, use_clean=False)
    assert [m.classify(i * 16 * K, (i + 1) * 16 * K) for i in range(3)] == \
        ["data", "zero", "zero"]
