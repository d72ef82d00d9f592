"""Where the engine puts one disk's chunks: the target side of a replication (stage 5-6).

The engine (dr_node.engine) classifies, reads and schedules chunks the same way for
every target; a sink says what a chunk becomes there and what "durable up to the
watermark" means:

- `RepositorySink` (targets `fs`, `s3`): chunks are content-named objects; unchanged
  chunks keep the previous point's id; the committed ids form the disk's manifest,
  whose segments are the checkpoint.
- `EbsSink` (target `ebs`): chunks are the 512 KiB blocks of an EBS snapshot written
  with the EBS direct APIs; an incremental starts from the previous point's snapshot
  and puts only changed blocks (including blocks that became zero: the parent still
  has their old bytes). The checkpoint is the pending snapshot and how many blocks
  below the watermark were put.

Ids: the engine hands the sink, in disk order, one id per chunk — `ZERO_ID` for zeros,
the previous id (`previous_id`) for clean chunks, and whatever `encode` returned for
chunks it read.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from dr_common.errors import TargetError
from dr_common.repository import (CHUNK_OVERHEAD, ZERO_ID, DiskManifest, ManifestWriter,
                                  Repository, encode_chunk_in_place)
from dr_common.targets import ebs

log = structlog.get_logger()

# The id an EbsSink gives clean chunks: nothing to put, nothing to count.
_INHERITED = b""


@dataclass(frozen=True)
class Checkpoint:
    """Resume state of a disk: everything below `watermark_chunk` is durable.

    Repository targets: the manifest segments and tail ids so far. EBS: the pending
    snapshot and the number of blocks put below the watermark."""

    watermark_chunk: int
    segments: list[str] = field(default_factory=list)
    tail: bytes = b""
    snapshot_id: str = ""
    changed_blocks: int = 0


@dataclass(frozen=True)
class SinkResult:
    size: int
    root_hash: str = ""  # repository targets: the manifest's root
    snapshot_id: str = ""  # ebs: the completed snapshot
    manifest: DiskManifest | None = None


class Sink(Protocol):
    name: str  # the target, for the adaptive limiter ("fs:/path", "ebs:us-east-1")
    # Is there a previous point this one is relative to? (Clean chunks need one.)
    has_previous: bool
    # Must chunks that are zero now, but were not proven unchanged, be written?
    writes_zeros: bool
    # May a resumed task ask the target whether a chunk is stored (`stored_before`)?
    can_probe: bool
    # Set by `begin` when the previous point turned out unusable at the target.
    full_sync_reason: str
    # Does the target pace writes itself (credits of a paired node)? Then the engine's
    # adaptive limiter and per-chunk retries stay out of the way (optional; False when
    # absent). The bandwidth caps still apply: they count the chunk bytes sent.
    paced: bool

    async def begin(self, checkpoint: Checkpoint | None) -> int:
        """Opens the disk at the target; returns the first chunk to replicate."""

    async def previous_id(self, index: int) -> bytes | None: ...

    def encode(self, frame: bytearray, length: int, prev_id: bytes | None
               ) -> tuple[bytes, bytes | memoryview | None]:
        """In a worker thread: (id, blob to write, or None when it is unchanged). The
        data is frame[CHUNK_OVERHEAD:CHUNK_OVERHEAD + length] and is not all zeros."""

    async def stored_before(self, cid: bytes) -> bool: ...

    async def put(self, index: int, cid: bytes, blob: bytes | memoryview) -> bool:
        """Writes one chunk; False if it was already stored (deduplicated)."""

    async def put_zero(self, index: int, length: int) -> None:
        """Writes zeros over a chunk (only called when `writes_zeros`)."""

    async def add(self, ids: list[bytes]) -> None:
        """The next chunks, in order, are durable."""

    @property
    def next_chunk(self) -> int: ...

    async def checkpoint(self) -> Checkpoint: ...

    async def finish(self) -> SinkResult: ...


def comparable(previous: DiskManifest | None, size: int, chunk_size: int
               ) -> DiskManifest | None:
    """The previous point's manifest if this point can be relative to it (same disk
    size and chunk grid), else None: a full sync."""
    if previous is not None and (previous.size != size or previous.chunk_size != chunk_size):
        log.info("previous recovery point not comparable: full sync", disk=previous.disk,
                 previous_size=previous.size, size=size)
        return None
    return previous


def encode_for_repository(chunk_id, frame: bytearray, length: int, prev_id: bytes | None,
                          compression: str) -> tuple[bytes, bytes | memoryview | None]:
    """Sink.encode of a repository, local or across a pair: name the data with the
    repository's `chunk_id`; unchanged since the previous point means nothing to send."""
    data = memoryview(frame)[CHUNK_OVERHEAD:CHUNK_OVERHEAD + length]
    cid = chunk_id(data)
    if cid == prev_id:
        return cid, None
    return cid, encode_chunk_in_place(frame, length, compression)


class RepositorySink:
    """A disk's chunks and manifest in a repository (format v1)."""

    can_probe = True
    writes_zeros = False
    full_sync_reason = ""

    def __init__(self, repo: Repository, *, name: str, disk: str, size: int, chunk_size: int,
                 compression: str, previous: DiskManifest | None):
        self.repo = repo
        self.name = name
        self.disk = disk
        self.size = size
        self.chunk_size = chunk_size
        self.compression = compression
        self.previous = previous
        self.has_previous = previous is not None
        self._writer: ManifestWriter | None = None
        self._prev_segments: dict[int, list[bytes]] = {}

    async def begin(self, checkpoint: Checkpoint | None) -> int:
        cp = checkpoint
        self._writer = ManifestWriter(self.repo, self.disk, self.size, self.chunk_size,
                                      segments=cp.segments if cp else (),
                                      tail=cp.tail if cp else b"")
        return self._writer.next_chunk

    async def previous_id(self, index: int) -> bytes | None:
        if self.previous is None:
            return None
        seg = index // self.previous.segment_chunks
        ids = self._prev_segments.get(seg)
        if ids is None:
            # Only the current segment is kept: memory stays bounded on huge disks.
            self._prev_segments = {seg: await self.repo.segment_ids(self.previous, seg)}
            ids = self._prev_segments[seg]
        return ids[index - seg * self.previous.segment_chunks]

    def encode(self, frame, length, prev_id):
        return encode_for_repository(self.repo.chunk_id, frame, length, prev_id,
                                     self.compression)

    async def stored_before(self, cid: bytes) -> bool:
        return await self.repo.has_chunk(cid)

    async def put(self, index: int, cid: bytes, blob) -> bool:
        return await self.repo.put_chunk(cid, blob)

    async def put_zero(self, index: int, length: int) -> None:
        raise AssertionError("a repository records zeros, it never writes them")

    async def add(self, ids: list[bytes]) -> None:
        await self._writer.add(ids)

    @property
    def next_chunk(self) -> int:
        return self._writer.next_chunk

    async def checkpoint(self) -> Checkpoint:
        wm, segments, tail = self._writer.checkpoint()
        await self.repo.store.sync()  # the checkpoint may only cover durable chunks
        return Checkpoint(wm, segments, tail)

    async def finish(self) -> SinkResult:
        manifest = await self._writer.finish()
        await self.repo.store.sync()
        return SinkResult(size=manifest.size, root_hash=manifest.root_hash, manifest=manifest)


class EbsSink:
    """A disk written as one EBS snapshot, relative to the previous point's snapshot."""

    can_probe = False  # a pending snapshot cannot be listed: a resume re-puts past the watermark

    def __init__(self, target: ebs.EbsTarget, *, name: str, disk: str, size: int,
                 chunk_size: int, parent: str, tags: dict[str, str], client_token: str):
        if chunk_size != ebs.BLOCK_SIZE:
            raise TargetError(f"the ebs target writes {ebs.BLOCK_SIZE}-byte blocks; this disk "
                              f"was given {chunk_size}-byte chunks", reason="invalid-argument",
                              retryable=False)
        self.target = target
        self.name = name
        self.disk = disk
        self.size = size
        self.parent = parent
        self.has_previous = bool(parent)
        # In an incremental, a block that is zero now but may not have been in the parent
        # must be written: EBS direct has no "trim", unwritten blocks inherit the parent.
        self.writes_zeros = bool(parent)
        self.tags = tags
        self.client_token = client_token
        self.full_sync_reason = ""
        self.snapshot_id = ""
        self._next = 0
        self._changed = 0
        # LINEAR aggregate: SHA256 over the blocks' SHA256s in index order. Its state
        # cannot be persisted, so a resumed disk completes without it (blocks are still
        # checked one by one).
        self._aggregate: hashlib._Hash | None = hashlib.sha256()
        self._zeros, self._zero_digest = b"", b""

    async def begin(self, checkpoint: Checkpoint | None) -> int:
        if checkpoint and checkpoint.snapshot_id:
            state = await self.target.describe(checkpoint.snapshot_id)
            if state is not None and state.status == "pending":
                self.snapshot_id = checkpoint.snapshot_id
                self._next = checkpoint.watermark_chunk
                self._changed = checkpoint.changed_blocks
                self._aggregate = None
                log.info("resuming EBS snapshot", snapshot=self.snapshot_id,
                         watermark_chunk=self._next)
                return self._next
            log.warning("the interrupted snapshot is no longer pending: writing the disk "
                        "again on a new one", snapshot=checkpoint.snapshot_id,
                        status=state.status if state else "missing")
        if self.parent and await self.target.describe(self.parent) is None:
            # Deleted outside the product: the chain is broken, so this point is written
            # whole (the recovery point that named it can no longer be restored).
            log.warning("the previous point's snapshot is gone: writing a whole snapshot",
                        parent=self.parent, disk=self.disk)
            self.parent, self.has_previous, self.writes_zeros = "", False, False
            self.full_sync_reason = "parent-snapshot-missing"
        self.snapshot_id = await self.target.start_snapshot(
            size=self.size, parent=self.parent, tags=self.tags,
            description=f"Hybrid DR {self.disk}", client_token=self.client_token)
        log.info("EBS snapshot started", snapshot=self.snapshot_id, parent=self.parent or None)
        return 0

    async def previous_id(self, index: int) -> bytes | None:
        return _INHERITED if self.has_previous else None

    def encode(self, frame, length, prev_id):
        data = memoryview(frame)[CHUNK_OVERHEAD:CHUNK_OVERHEAD + length]
        return ebs.sha256(data), data

    async def stored_before(self, cid: bytes) -> bool:
        return False

    async def put(self, index: int, cid: bytes, blob) -> bool:
        await self.target.put_block(self.snapshot_id, index, blob, cid)
        return True

    def _zero_block(self) -> tuple[bytes, bytes]:
        """One zero block and its SHA256, made once: every zero put and count uses it."""
        if not self._zero_digest:
            self._zeros = bytes(ebs.BLOCK_SIZE)
            self._zero_digest = ebs.sha256(self._zeros)
        return self._zeros, self._zero_digest

    async def put_zero(self, index: int, length: int) -> None:
        zeros, digest = self._zero_block()
        await self.target.put_block(self.snapshot_id, index, zeros, digest)

    async def add(self, ids: list[bytes]) -> None:
        for cid in ids:
            if cid == _INHERITED or cid is None:
                continue
            if cid == ZERO_ID:
                if not self.writes_zeros:
                    continue
                cid = self._zero_block()[1]
            self._changed += 1
            if self._aggregate is not None:
                self._aggregate.update(cid)
        self._next += len(ids)

    @property
    def next_chunk(self) -> int:
        return self._next

    async def checkpoint(self) -> Checkpoint:
        # Puts are durable when they return: nothing to flush.
        return Checkpoint(self._next, snapshot_id=self.snapshot_id,
                          changed_blocks=self._changed)

    async def finish(self) -> SinkResult:
        await self.target.complete(
            self.snapshot_id, changed_blocks=self._changed,
            aggregate=self._aggregate.digest() if self._aggregate is not None else None)
        await self.target.wait_completed(self.snapshot_id)
        log.info("EBS snapshot completed", snapshot=self.snapshot_id,
                 changed_blocks=self._changed)
        return SinkResult(size=self.size, snapshot_id=self.snapshot_id)
