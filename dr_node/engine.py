"""Replication of one disk (DESIGN section 4, stages 1-5, for one disk of a cycle).

Descriptors are chunk indices on the disk's chunk grid. Each is one of:
- zero: the chunk lies in holes or known zeros; recorded as ZERO_ID without reading;
- clean: changed-block tracking says it did not change since the previous recovery
  point; it keeps that point's chunk id without reading;
- data: read, checked for zeros, hashed; if its id equals the previous recovery
  point's, it is unchanged and not sent; otherwise it is encoded and written.

At most `window` data chunks of a disk are in flight, and every read buffer is held
under the node's byte budget until its chunk is durable. Chunks finish out of order;
the committer advances the low watermark over contiguous finished chunks, feeds their
ids to the manifest writer in order, and reports a checkpoint every
`checkpoint_interval_bytes`, from which a re-assigned task resumes.

Durability: chunk writes are not flushed one by one; the repository is synced before a
checkpoint is reported and before the disk's manifest is, so the watermark the control
plane holds only ever covers durable chunks. A resumed task re-reads from its
checkpoint but asks the repository before sending a chunk there, so it re-sends only
what was in flight when the previous holder died: at most one window.

`Engine` holds what all disks of a node share: the thread pool, the byte budget, one
adaptive limiter per target, and the node's bandwidth cap.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import structlog

from dr_common.errors import DRError
from dr_common.repository import (CHUNK_OVERHEAD, ZERO_ID, DiskManifest, ManifestWriter,
                                  Repository, encode_chunk_in_place)
from dr_common.retry import retry
from dr_common.sources.base import Extent, SourceDisk
from dr_node import metrics
from dr_node.adaptive import AdaptiveLimiter
from dr_node.bandwidth import TokenBucket
from dr_node.budget import ByteBudget
from dr_node.config import EngineConfig
from dr_node.restore import restore_raw


log = structlog.get_logger()


@dataclass
class Stats:
    bytes_read: int = 0
    bytes_sent: int = 0
    bytes_stored: int = 0
    chunks_read: int = 0
    chunks_sent: int = 0
    chunks_unchanged: int = 0
    chunks_zero: int = 0
    chunks_stored: int = 0
    chunks_deduplicated: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class Checkpoint:
    watermark_chunk: int
    segments: list[str]
    tail: bytes


@dataclass
class ReplicateResult:
    manifest: DiskManifest
    full_sync: bool
    stats: Stats = field(default_factory=Stats)


Progress = Callable[[Checkpoint | None, int, Stats, bool], Awaitable[None]]


class BufferPool:
    """Reusable read buffers, shared by all disks of a node.

    Buffers are taken only while their bytes are held under the byte budget, so those
    in use never exceed it; the free list is capped at the budget too. Memory is thus
    bounded by configuration whatever the number of disks (per-disk pools would grow
    with the disk count).
    """

    def __init__(self, max_free_bytes: int):
        self.max_free_bytes = max_free_bytes
        self._free: dict[int, list[bytearray]] = {}
        self._free_bytes = 0
        self._zeros: dict[int, memoryview] = {}

    def get(self, size: int) -> bytearray:
        free = self._free.get(size)
        if free:
            self._free_bytes -= size
            return free.pop()
        return bytearray(size)

    def put(self, buf: bytearray) -> None:
        if self._free_bytes + len(buf) <= self.max_free_bytes:
            self._free.setdefault(len(buf), []).append(buf)
            self._free_bytes += len(buf)

    def zeros(self, size: int) -> memoryview:
        """A read-only zero buffer to compare chunks with (one per chunk size)."""
        z = self._zeros.get(size)
        if z is None:
            z = self._zeros[size] = memoryview(bytes(size))
        return z


class _Overlap:
    """Answers "does [start, end) overlap any of these extents?" in O(log n)."""

    def __init__(self, extents: list[Extent]):
        self._starts = [e.start for e in extents]
        self._ends = [e.end for e in extents]

    def __call__(self, start: int, end: int) -> bool:
        i = bisect.bisect_right(self._ends, start)
        return i < len(self._starts) and self._starts[i] < end


class _ExtentMap:
    """Classifies a chunk: "data" (read it), "clean" (keep the previous id), "zero"."""

    def __init__(self, extents: list[Extent], *, use_clean: bool):
        # Without a previous point, clean has no meaning: read it like data.
        self._data = _Overlap([e for e in extents if not e.zero and
                               (not e.clean or not use_clean)])
        self._clean = _Overlap([e for e in extents if e.clean and use_clean])

    def classify(self, start: int, end: int) -> str:
        if self._data(start, end):
            return "data"
        return "clean" if self._clean(start, end) else "zero"


# Hole and clean chunks need no I/O; they are committed in runs of at most this many,
# with a yield to the loop between runs (a huge disk must not hold the loop).
_RUN = 1024


async def _no_progress(*_args) -> None:
    return None


class DiskReplication:
    def __init__(self, *, disk: str, source: SourceDisk, repo: Repository, pool: Executor,
                 budget: ByteBudget, window: int, chunk_size: int, compression: str,
                 previous: DiskManifest | None, checkpoint: Checkpoint | None,
                 checkpoint_interval: int, progress: Progress = _no_progress,
                 progress_seconds: float = 2.0, limiter: AdaptiveLimiter | None = None,
                 buckets: tuple[TokenBucket, ...] = (), buffers: BufferPool | None = None):
        self.disk = disk
        self.source = source
        self.repo = repo
        self.pool = pool
        self.budget = budget
        self.limiter = limiter or AdaptiveLimiter(f"disk:{disk}", initial=window,
                                                  maximum=max(window, 1))
        self.buckets = buckets
        self.window = window
        self.chunk_size = chunk_size
        self.compression = compression
        self.size = source.size
        self.chunk_count = -(-self.size // chunk_size)
        self.previous = previous if self._compatible(previous) else None
        self.full_sync = self.previous is None
        self.checkpoint = checkpoint if checkpoint and self._resumable(checkpoint) else None
        self.checkpoint_interval = max(checkpoint_interval, chunk_size)
        self.progress = progress
        self.progress_seconds = progress_seconds
        self.stats = Stats()
        # A resumed task asks the repository before sending, until a run of misses shows
        # it has passed where the previous holder got to (see _stored_before).
        self._probing = False
        self._probe_misses = 0
        # Metric children resolved once: a labels() lookup per chunk shows in profiles.
        self._m_read = metrics.CHUNKS.labels(outcome="read")
        self._m_zero = metrics.CHUNKS.labels(outcome="zero")
        self._m_unchanged = metrics.CHUNKS.labels(outcome="unchanged")
        self._m_bytes_read = metrics.BYTES.labels(stage="read")
        self.buffers = buffers or BufferPool(budget.capacity)
        self._zeros = self.buffers.zeros(chunk_size)
        self._prev_segments: dict[int, list[bytes]] = {}

    def _compatible(self, prev: DiskManifest | None) -> bool:
        if prev is None:
            return False
        if prev.size != self.size or prev.chunk_size != self.chunk_size:
            log.info("previous recovery point not comparable: full sync", disk=self.disk,
                     previous_size=prev.size, size=self.size)
            return False
        return True

    def _resumable(self, cp: Checkpoint) -> bool:
        return 0 < cp.watermark_chunk <= self.chunk_count

    async def run(self) -> ReplicateResult:
        loop = asyncio.get_running_loop()
        extents = await loop.run_in_executor(self.pool, self.source.extents)
        emap = _ExtentMap(extents, use_clean=self.previous is not None)
        cp = self.checkpoint
        writer = ManifestWriter(self.repo, self.disk, self.size, self.chunk_size,
                                segments=cp.segments if cp else (), tail=cp.tail if cp else b"")
        start = writer.next_chunk
        if start:
            log.info("resuming from checkpoint", disk=self.disk, watermark_chunk=start)
            self._probing = True
        # (first chunk, ids): a run of hole or clean chunks is one entry.
        done: asyncio.Queue[tuple[int, list[bytes] | None]] = asyncio.Queue()
        window = asyncio.Semaphore(self.window)
        metrics.WINDOW.labels(disk=self.disk).set(self.window)
        async with asyncio.TaskGroup() as tg:
            committer = tg.create_task(self._commit(writer, done))
            run_start, run = start, []
            for index in range(start, self.chunk_count):
                offset = index * self.chunk_size
                length = min(self.chunk_size, self.size - offset)
                kind = emap.classify(offset, offset + length)
                if kind != "data":
                    if kind == "zero":
                        self.stats.chunks_zero += 1
                        self._m_zero.inc()
                        run.append(ZERO_ID)
                    else:
                        self.stats.chunks_unchanged += 1
                        self._m_unchanged.inc()
                        run.append(await self._previous_id(index))
                    if len(run) >= _RUN:
                        done.put_nowait((run_start, run))
                        run_start, run = index + 1, []
                        await asyncio.sleep(0)
                    continue
                if run:
                    done.put_nowait((run_start, run))
                run_start, run = index + 1, []
                prev_id = await self._previous_id(index)
                await window.acquire()
                try:
                    # The encoded chunk is what stays in memory until it is written.
                    taken = await self.budget.acquire(length + CHUNK_OVERHEAD)
                except BaseException:
                    window.release()
                    raise
                tg.create_task(self._chunk(index, offset, length, prev_id, taken, window, done))
            if run:
                done.put_nowait((run_start, run))
            done.put_nowait((self.chunk_count, None))  # end marker, after all dispatches
        manifest = committer.result()
        return ReplicateResult(manifest=manifest, full_sync=self.full_sync, stats=self.stats)

    async def _previous_id(self, index: int) -> bytes | None:
        if self.previous is None:
            return None
        seg = index // self.previous.segment_chunks
        ids = self._prev_segments.get(seg)
        if ids is None:
            # Only the current segment is kept: memory stays bounded on huge disks.
            self._prev_segments = {seg: await self.repo.segment_ids(self.previous, seg)}
            ids = self._prev_segments[seg]
        return ids[index - seg * self.previous.segment_chunks]

    def _read(self, offset: int, frame: bytearray, length: int, prev_id: bytes | None
              ) -> tuple[bytes, bytes | memoryview | None, int]:
        """In a worker thread: read, zero check, hash, encode. Returns (id, blob, bytes read).

        The data is read into `frame` after room for the chunk header, so an uncompressed
        blob is a view of the same buffer (see encode_chunk_in_place).
        """
        data = memoryview(frame)[CHUNK_OVERHEAD:CHUNK_OVERHEAD + length]
        n = self.source.readinto(offset, data)
        if n != length:
            raise DRError(f"source disk {self.disk} ended at {offset + n}, expected "
                          f"{offset + length}: was it truncated during the cycle?",
                          reason="source-changed", retryable=True)
        if data == self._zeros[:n]:  # memcmp against a shared zero buffer: no allocation
            return ZERO_ID, None, n
        cid = self.repo.chunk_id(data)
        if cid == prev_id:
            return cid, None, n
        return cid, encode_chunk_in_place(frame, length, self.compression), n

    async def _chunk(self, index: int, offset: int, length: int, prev_id: bytes | None,
                     taken: int, window: asyncio.Semaphore,
                     done: asyncio.Queue[tuple[int, list[bytes] | None]]) -> None:
        t0 = time.monotonic()
        # Held until the chunk is written: the blob may be a view of this buffer.
        frame = self.buffers.get(self.chunk_size + CHUNK_OVERHEAD)
        try:
            cid, blob, n = await asyncio.get_running_loop().run_in_executor(
                self.pool, self._read, offset, frame, length, prev_id)
            self.stats.bytes_read += n
            self.stats.chunks_read += 1
            self._m_bytes_read.inc(n)
            self._m_read.inc()
            if cid == ZERO_ID:
                self.stats.chunks_zero += 1
                self._m_zero.inc()
            elif blob is None:
                self.stats.chunks_unchanged += 1
                self._m_unchanged.inc()
            elif self._probing and await self._stored_before(cid):
                # Stored by the holder that died after its last checkpoint: don't resend.
                self.stats.chunks_deduplicated += 1
                metrics.CHUNKS.labels(outcome="deduplicated").inc()
            else:
                await self._store(cid, blob)
            del blob
            done.put_nowait((index, [cid]))
            metrics.CHUNK_SECONDS.observe(time.monotonic() - t0)
            # Only a chunk that finished gives its buffer back. A cancelled one may still
            # have a worker thread reading into it or writing from it: reusing it then
            # could store another chunk's bytes under this chunk's name.
            self.buffers.put(frame)
        finally:
            self.budget.release(taken)
            window.release()

    async def _stored_before(self, cid: bytes) -> bool:
        """Did the holder that died store this chunk after its last checkpoint?

        It may have got anywhere past the checkpoint (a checkpoint is reported only
        after a sync, which can be slow), but no further than one window past its own
        watermark. Chunks finish out of order, so probing stops only after two windows'
        worth of misses in a row.
        """
        if await self.repo.has_chunk(cid):
            self._probe_misses = 0
            return True
        self._probe_misses += 1
        if self._probe_misses >= 2 * self.window:
            self._probing = False
        return False

    async def _store(self, cid: bytes, blob: bytes | memoryview) -> None:
        for bucket in self.buckets:
            await bucket.consume(len(blob))

        async def put() -> bool:
            async with self.limiter.slot():
                return await self.repo.put_chunk(cid, blob)

        stored = await retry(put, on_retry=lambda e, n: metrics.RETRIES.labels(
            op="put_chunk").inc())
        self.stats.chunks_sent += 1
        self.stats.bytes_sent += len(blob)
        metrics.BYTES.labels(stage="sent").inc(len(blob))
        metrics.CHUNKS.labels(outcome="sent").inc()
        if stored:
            self.stats.chunks_stored += 1
            self.stats.bytes_stored += len(blob)
            metrics.BYTES.labels(stage="stored").inc(len(blob))
            metrics.CHUNKS.labels(outcome="stored").inc()
        else:
            self.stats.chunks_deduplicated += 1
            metrics.CHUNKS.labels(outcome="deduplicated").inc()

    async def _commit(self, writer: ManifestWriter,
                      done: asyncio.Queue[tuple[int, list[bytes] | None]]) -> DiskManifest:
        """Advances the low watermark in order; reports checkpoints; ends the manifest."""
        finished: dict[int, list[bytes]] = {}
        end_seen = False
        last_cp_chunk = writer.next_chunk
        last_report = time.monotonic()
        while not (end_seen and writer.next_chunk == self.chunk_count):
            index, ids = await done.get()
            if ids is None:
                end_seen = True
            else:
                finished[index] = ids
            ready: list[bytes] = []
            nxt = writer.next_chunk
            while nxt in finished:
                ids = finished.pop(nxt)
                ready.extend(ids)
                nxt += len(ids)
            if ready:
                await writer.add(ready)
                metrics.WATERMARK.labels(disk=self.disk).set(
                    min(writer.next_chunk * self.chunk_size, self.size))
            now = time.monotonic()
            due_cp = (writer.next_chunk - last_cp_chunk) * self.chunk_size >= \
                self.checkpoint_interval
            if due_cp or now - last_report >= self.progress_seconds:
                cp = None
                if due_cp:
                    wm, segments, tail = writer.checkpoint()
                    await self.repo.store.sync()  # the checkpoint may only cover durable chunks
                    cp = Checkpoint(wm, segments, tail)
                    last_cp_chunk = writer.next_chunk
                await self.progress(cp, min(writer.next_chunk * self.chunk_size, self.size),
                                    self.stats, self.full_sync)
                last_report = now
        manifest = await writer.finish()
        await self.repo.store.sync()
        return manifest


class Engine:
    """What every disk task of a node shares."""

    def __init__(self, config: EngineConfig):
        self.config = config
        self.pool = ThreadPoolExecutor(config.workers, thread_name_prefix="dr-io")
        self.budget = ByteBudget(config.budget_bytes)
        self.node_bandwidth = TokenBucket(config.bandwidth_bytes_per_second)
        self.buffers = BufferPool(config.budget_bytes)
        self._limiters: dict[str, AdaptiveLimiter] = {}

    def limiter(self, target: str) -> AdaptiveLimiter:
        """The adaptive limiter of one target (e.g. a repository location)."""
        lim = self._limiters.get(target)
        if lim is None:
            c = self.config
            lim = AdaptiveLimiter(target, initial=min(c.window_chunks, 4),
                                  minimum=c.min_concurrency, maximum=c.max_concurrency)
            self._limiters[target] = lim
        return lim

    async def replicate(self, *, disk: str, source: SourceDisk, repo: Repository, target: str,
                        chunk_size: int, compression: str = "none",
                        previous: DiskManifest | None = None,
                        checkpoint: Checkpoint | None = None,
                        checkpoint_interval: int = 500_000_000,
                        progress: Progress = _no_progress,
                        plan_bandwidth: TokenBucket | None = None,
                        window: int | None = None) -> ReplicateResult:
        buckets = tuple(b for b in (self.node_bandwidth, plan_bandwidth) if b is not None)
        job = DiskReplication(
            disk=disk, source=source, repo=repo, pool=self.pool, budget=self.budget,
            window=window or self.config.window_chunks, chunk_size=chunk_size,
            compression=compression, previous=previous, checkpoint=checkpoint,
            checkpoint_interval=checkpoint_interval, progress=progress,
            progress_seconds=self.config.progress_seconds, limiter=self.limiter(target),
            buckets=buckets, buffers=self.buffers)
        return await job.run()

    async def restore_raw(self, *, repo: Repository, root_hash: str, disk: str,
                          destination: str, overwrite: bool, roots: list[str],
                          progress=_no_progress) -> dict:
        return await restore_raw(repo=repo, root_hash=root_hash, disk=disk,
                                 destination=destination, overwrite=overwrite, roots=roots,
                                 pool=self.pool, budget=self.budget,
                                 window=self.config.window_chunks, progress=progress)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
