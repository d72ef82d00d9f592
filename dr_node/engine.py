"""Replication of one disk (DESIGN section 4, stages 1-5, for one disk of a cycle).

Descriptors are chunk indices on the disk's chunk grid. Each is one of:
- zero: the chunk lies in holes or known zeros; recorded as ZERO_ID without reading
  (a target relative to a parent, like an EBS snapshot, writes zeros if it changed);
- clean: changed-block tracking says it did not change since the previous recovery
  point; it keeps that point's chunk id without reading;
- data: read, checked for zeros, hashed; if its id equals the previous recovery
  point's, it is unchanged and not sent; otherwise it is encoded and written.
What a chunk becomes at the target is the sink's business (dr_common/targets): repository
objects and a manifest, or the blocks of an EBS snapshot. The engine knows a target only
by its sink's capability flags.

At most `window` data chunks of a disk are in flight, and every read buffer is held
under the node's byte budget until its chunk is durable. Chunks finish out of order;
the committer advances the low watermark over contiguous finished chunks, feeds their
ids to the sink in order, and reports a checkpoint every `checkpoint_interval_bytes`,
from which a re-assigned task resumes.

Durability: chunk writes are not flushed one by one; the sink makes them durable before
a checkpoint is reported and before the disk is finished (a repository syncs), so the
watermark the control plane holds only ever covers durable chunks. A resumed task
re-reads from its checkpoint but asks the target before sending a chunk there (where it
can: a pending EBS snapshot cannot be listed), so it re-sends only what was in flight
when the previous holder died: at most one window.

`Engine` holds what all disks of a node share: the thread pool, the byte budget, one
adaptive limiter per target, and the node's bandwidth cap.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import structlog

from dr_common.errors import DRError
from dr_common.repository import CHUNK_OVERHEAD, ZERO_ID, DiskManifest
from dr_common.sources.base import Extent, SourceDisk
from dr_common.targets.base import Checkpoint, Sink, SinkResult, TargetEnv
from dr_node import metrics
from dr_node.adaptive import AdaptiveLimiter
from dr_node.bandwidth import TokenBucket
from dr_node.budget import ByteBudget
from dr_node.config import EngineConfig


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

    def __add__(self, other: Stats) -> Stats:
        return Stats(**{k: v + getattr(other, k) for k, v in asdict(self).items()})


@dataclass
class ReplicateResult:
    manifest: DiskManifest | None  # repository targets
    full_sync: bool
    stats: Stats = field(default_factory=Stats)
    root_hash: str = ""
    snapshot_id: str = ""  # ebs
    size: int = 0
    # Why the target had no previous point to be relative to, if it was meant to.
    full_sync_reason: str = ""


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
    """Classifies a chunk: "data" (read it), "clean" (keep the previous id), "zero".

    A chunk is clean only if every part of it is clean: one dirty byte means it changed.
    A changed chunk that is all zeros (say, a discard since the previous point) is zero
    without being read; otherwise it is read, clean parts included.
    """

    def __init__(self, extents: list[Extent], *, use_clean: bool):
        # Without a previous point, clean has no meaning: everything may have changed.
        self._dirty = _Overlap([e for e in extents if not (e.clean and use_clean)])
        self._clean = _Overlap([e for e in extents if e.clean and use_clean])
        self._nonzero = _Overlap([e for e in extents if not e.zero])

    def classify(self, start: int, end: int) -> str:
        if not self._dirty(start, end) and self._clean(start, end):
            return "clean"
        return "data" if self._nonzero(start, end) else "zero"


# Hole and clean chunks need no I/O; they are committed in runs of at most this many,
# with a yield to the loop between runs (a huge disk must not hold the loop).
_RUN = 1024


async def _no_progress(*_args) -> None:
    return None


class DiskReplication:
    def __init__(self, *, disk: str, source: SourceDisk, sink: Sink, pool: Executor,
                 budget: ByteBudget, window: int, chunk_size: int,
                 checkpoint: Checkpoint | None, checkpoint_interval: int,
                 progress: Progress = _no_progress, progress_seconds: float = 2.0,
                 limiter: AdaptiveLimiter | None = None, buckets: tuple[TokenBucket, ...] = (),
                 buffers: BufferPool | None = None, stats: Stats | None = None,
                 probe: bool = False):
        self.disk = disk
        self.source = source
        self.sink = sink
        self.pool = pool
        self.budget = budget
        self.limiter = limiter or AdaptiveLimiter(f"disk:{disk}", initial=window,
                                                  maximum=max(window, 1))
        self.buckets = buckets
        self.window = window
        self.chunk_size = chunk_size
        self.size = source.size
        self.chunk_count = -(-self.size // chunk_size)
        self.full_sync = not sink.has_previous
        self.checkpoint = checkpoint if checkpoint and self._resumable(checkpoint) else None
        self.checkpoint_interval = max(checkpoint_interval, chunk_size)
        self.progress = progress
        self.progress_seconds = progress_seconds
        self.stats = stats if stats is not None else Stats()
        # A resumed task asks the target before sending, until a run of misses shows
        # it has passed where the previous holder got to (see _stored_before).
        self._probing = False
        self._probe_misses = 0
        # Ask the target even when starting at chunk 0 (a stream resumed in place
        # before its first checkpoint: the target holds what the broken one sent).
        self._probe = probe
        # Budget bytes taken for chunks and not yet released by them: a chunk task
        # cancelled before it ever ran (the job failed) cannot release its own, so the
        # job releases what is left when it ends; otherwise a node would lose budget
        # with every failed disk until it could take no chunk at all.
        self._held = 0
        # Metric children resolved once: a labels() lookup per chunk shows in profiles.
        self._m_read = metrics.CHUNKS.labels(outcome="read")
        self._m_zero = metrics.CHUNKS.labels(outcome="zero")
        self._m_unchanged = metrics.CHUNKS.labels(outcome="unchanged")
        self._m_bytes_read = metrics.BYTES.labels(stage="read")
        self.buffers = buffers or BufferPool(budget.capacity)
        self._zeros = self.buffers.zeros(chunk_size)

    def _resumable(self, cp: Checkpoint) -> bool:
        return 0 < cp.watermark_chunk <= self.chunk_count

    async def run(self) -> ReplicateResult:
        loop = asyncio.get_running_loop()
        start = await self.sink.begin(self.checkpoint)
        self.full_sync = not self.sink.has_previous  # begin may have found it gone
        extents = await loop.run_in_executor(self.pool, self.source.extents)
        emap = _ExtentMap(extents, use_clean=self.sink.has_previous)
        if start:
            log.info("resuming from checkpoint", disk=self.disk, watermark_chunk=start)
        self._probing = self.sink.can_probe and bool(start or self._probe)
        # (first chunk, ids): a run of hole or clean chunks is one entry.
        done: asyncio.Queue[tuple[int, list[bytes] | None]] = asyncio.Queue()
        window = asyncio.Semaphore(self.window)
        metrics.WINDOW.labels(disk=self.disk).set(self.window)
        try:
            result = await self._dispatch(start, emap, window, done)
        finally:
            if self._held:
                self.budget.release(self._held)
                self._held = 0
        return ReplicateResult(manifest=result.manifest, full_sync=self.full_sync,
                               stats=self.stats, root_hash=result.root_hash,
                               snapshot_id=result.snapshot_id, size=result.size,
                               full_sync_reason=self.sink.full_sync_reason)

    async def _dispatch(self, start: int, emap: _ExtentMap, window: asyncio.Semaphore,
                        done: asyncio.Queue) -> SinkResult:
        """Starts a task per chunk to send, in order, within the window and the byte
        budget; returns the committer's result once every chunk is committed."""
        async with asyncio.TaskGroup() as tg:
            committer = tg.create_task(self._commit(done))
            run_start, run = start, []
            for index in range(start, self.chunk_count):
                offset = index * self.chunk_size
                length = min(self.chunk_size, self.size - offset)
                kind = emap.classify(offset, offset + length)
                if kind == "clean" or (kind == "zero" and not self.sink.writes_zeros):
                    if kind == "zero":
                        self._count_zero()
                        run.append(ZERO_ID)
                    else:
                        self.stats.chunks_unchanged += 1
                        self._m_unchanged.inc()
                        run.append(await self.sink.previous_id(index))
                    if len(run) >= _RUN:
                        done.put_nowait((run_start, run))
                        run_start, run = index + 1, []
                        await asyncio.sleep(0)
                    continue
                if run:
                    done.put_nowait((run_start, run))
                run_start, run = index + 1, []
                prev_id = await self.sink.previous_id(index)
                await window.acquire()
                try:
                    # The encoded chunk is what stays in memory until it is written.
                    taken = await self.budget.acquire(length + CHUNK_OVERHEAD)
                except BaseException:
                    window.release()
                    raise
                self._held += taken
                tg.create_task(self._chunk(index, offset, length, prev_id, kind == "zero",
                                           taken, window, done))
            if run:
                done.put_nowait((run_start, run))
            done.put_nowait((self.chunk_count, None))  # end marker, after all dispatches
        return committer.result()

    def _count_zero(self) -> None:
        self.stats.chunks_zero += 1
        self._m_zero.inc()

    def _read(self, offset: int, frame: bytearray, length: int, prev_id: bytes | None
              ) -> tuple[bytes, bytes | memoryview | None, int]:
        """In a worker thread: read, zero check, then the sink's hash and encoding.
        Returns (id, blob or None when unchanged or zero, bytes read).

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
        return (*self.sink.encode(frame, length, prev_id), n)

    async def _chunk(self, index: int, offset: int, length: int, prev_id: bytes | None,
                     known_zero: bool, taken: int, window: asyncio.Semaphore,
                     done: asyncio.Queue[tuple[int, list[bytes] | None]]) -> None:
        t0 = time.monotonic()
        # Held until the chunk is written: the blob may be a view of this buffer.
        frame = self.buffers.get(self.chunk_size + CHUNK_OVERHEAD)
        try:
            if known_zero:
                cid, blob = ZERO_ID, None
            else:
                cid, blob, n = await asyncio.get_running_loop().run_in_executor(
                    self.pool, self._read, offset, frame, length, prev_id)
                self.stats.bytes_read += n
                self.stats.chunks_read += 1
                self._m_bytes_read.inc(n)
                self._m_read.inc()
            if cid == ZERO_ID:
                self._count_zero()
                if self.sink.writes_zeros:  # changed to zeros: the target must hear it
                    await self._store(functools.partial(self.sink.put_zero, index, length),
                                      length)
            elif blob is None:
                self.stats.chunks_unchanged += 1
                self._m_unchanged.inc()
            elif self._probing and await self._stored_before(cid):
                # Stored by the holder that died after its last checkpoint: don't resend.
                self.stats.chunks_deduplicated += 1
                metrics.CHUNKS.labels(outcome="deduplicated").inc()
            else:
                await self._store(functools.partial(self.sink.put, index, cid, blob),
                                  len(blob))
            del blob
            done.put_nowait((index, [cid]))
            metrics.CHUNK_SECONDS.observe(time.monotonic() - t0)
            # Only a chunk that finished gives its buffer back. A cancelled one may still
            # have a worker thread reading into it or writing from it: reusing it then
            # could store another chunk's bytes under this chunk's name.
            self.buffers.put(frame)
        finally:
            self.budget.release(taken)
            self._held -= taken
            window.release()

    async def _stored_before(self, cid: bytes) -> bool:
        """Did the holder that died store this chunk after its last checkpoint?

        It may have got anywhere past the checkpoint (a checkpoint is reported only
        after a sync, which can be slow), but no further than one window past its own
        watermark. Chunks finish out of order, so probing stops only after two windows'
        worth of misses in a row.
        """
        if await self.sink.stored_before(cid):
            self._probe_misses = 0
            return True
        self._probe_misses += 1
        if self._probe_misses >= 2 * self.window:
            self._probing = False
        return False

    async def _store(self, write: Callable[[], Awaitable[bool | None]], size: int) -> None:
        for bucket in self.buckets:
            await bucket.consume(size)
        # Not retried here: a remote write is retried by the remote-call layer below the
        # sink (dr_common.remote), which also tells the limiter of throttling; a paired
        # node's stream is paced by its credits and resumed as a whole when it breaks.
        if getattr(self.sink, "paced", False):
            stored = await write()
        else:
            async with self.limiter.slot():
                stored = await write()
        self.stats.chunks_sent += 1
        self.stats.bytes_sent += size
        metrics.BYTES.labels(stage="sent").inc(size)
        metrics.CHUNKS.labels(outcome="sent").inc()
        if stored is False:
            self.stats.chunks_deduplicated += 1
            metrics.CHUNKS.labels(outcome="deduplicated").inc()
        else:
            self.stats.chunks_stored += 1
            self.stats.bytes_stored += size
            metrics.BYTES.labels(stage="stored").inc(size)
            metrics.CHUNKS.labels(outcome="stored").inc()

    async def _commit(self, done: asyncio.Queue[tuple[int, list[bytes] | None]]
                      ) -> SinkResult:
        """Advances the low watermark in order; reports checkpoints; finishes the disk."""
        sink = self.sink
        finished: dict[int, list[bytes]] = {}
        end_seen = False
        last_cp_chunk = sink.next_chunk
        last_report = time.monotonic()
        while not (end_seen and sink.next_chunk == self.chunk_count):
            index, ids = await done.get()
            if ids is None:
                end_seen = True
            else:
                finished[index] = ids
            ready: list[bytes] = []
            nxt = sink.next_chunk
            while nxt in finished:
                ids = finished.pop(nxt)
                ready.extend(ids)
                nxt += len(ids)
            if ready:
                await sink.add(ready)
                metrics.WATERMARK.labels(disk=self.disk).set(
                    min(sink.next_chunk * self.chunk_size, self.size))
            now = time.monotonic()
            due_cp = (sink.next_chunk - last_cp_chunk) * self.chunk_size >= \
                self.checkpoint_interval
            if due_cp or now - last_report >= self.progress_seconds:
                cp = None
                if due_cp:
                    cp = await sink.checkpoint()
                    last_cp_chunk = sink.next_chunk
                await self.progress(cp, min(sink.next_chunk * self.chunk_size, self.size),
                                    self.stats, self.full_sync)
                last_report = now
        return await sink.finish()


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

    async def replicate(self, *, disk: str, source: SourceDisk, sink: Sink, chunk_size: int,
                        checkpoint: Checkpoint | None = None,
                        checkpoint_interval: int = 500_000_000,
                        progress: Progress = _no_progress,
                        plan_bandwidth: TokenBucket | None = None,
                        window: int | None = None,
                        stats: Stats | None = None, probe: bool = False) -> ReplicateResult:
        """Replicates one disk into `sink` (a target's, `Target.sink`). `stats`: counted
        into as the work goes (readable even if it fails). `probe`: ask the target about
        chunks before sending them even with no checkpoint (see DiskReplication)."""
        buckets = tuple(b for b in (self.node_bandwidth, plan_bandwidth) if b is not None)
        job = DiskReplication(
            disk=disk, source=source, sink=sink, pool=self.pool, budget=self.budget,
            window=window or self.config.window_chunks, chunk_size=chunk_size,
            checkpoint=checkpoint, checkpoint_interval=checkpoint_interval, progress=progress,
            progress_seconds=self.config.progress_seconds, limiter=self.limiter(sink.name),
            buckets=buckets, buffers=self.buffers, stats=stats, probe=probe)
        return await job.run()

    def target_env(self, roots: list[str] | tuple[str, ...]) -> TargetEnv:
        """What targets opened on this node may use: its file roots, worker threads,
        byte budget, and the window a restore keeps in flight."""
        return TargetEnv(roots=tuple(roots), executor=self.pool, budget=self.budget,
                         window=self.config.window_chunks)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
