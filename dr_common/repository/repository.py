"""A block-oriented repository (format v1) over an ObjectStore.

`Repository` reads and writes the format's objects and checks every one it reads
against its name; `ManifestWriter` builds a disk's manifest as chunks become durable;
`Repository.verify_disk` checks a whole disk and reports every bad chunk it finds.
The layout and encodings are specified in docs/FORMAT.md and dr_common.repository.format.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from dr_common.errors import AlreadyExists, CorruptData, ObjectNotFound, RepositoryError
from dr_common.repository.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    ID_SIZE,
    SEGMENT_CHUNKS,
    ZERO_ID,
    check_hex_id,
    check_point_id,
    chunk_id,
    chunk_key,
    compute_root,
    decode_chunk,
    decode_segment,
    encode_segment,
    keyed_hex,
    manifest_key,
    point_key,
    segment_key,
)
from dr_common.repository.manifest import DiskManifest, RecoveryPointRecord
from dr_common.repository.store import ObjectStore

CONFIG_KEY = "config"
POINTS_PREFIX = "points/"

# Below this size, hashing or decoding on the event loop costs less than the hop to a
# worker thread (BLAKE3 runs at GB/s: 64 KiB is tens of microseconds).
_INLINE_LIMIT = 64 * 1024

R = TypeVar("R")


def _corrupt(message: str, *, disk: str = "", offset: int | None = None,
             reason: str | None = None) -> CorruptData:
    err = CorruptData(message, disk=disk, offset=offset)
    if reason is not None:
        err.reason = reason
    return err


@dataclass(frozen=True)
class BadChunk:
    """A byte range of a disk that cannot be restored from the repository.

    `reason` is "missing", "hash-mismatch", "undecodable" or "wrong-length" for one
    chunk; "segment-missing" or "segment-corrupt" when the segment listing the range's
    chunks is unusable (then the range is the whole segment).
    """

    disk: str
    offset: int
    length: int
    reason: str


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of `Repository.verify_disk`. `chunks_checked` counts stored (non-zero)
    chunks read and re-hashed; zero entries need no read."""

    disk: str
    chunks_checked: int
    bad_chunks: tuple[BadChunk, ...]

    @property
    def ok(self) -> bool:
        return not self.bad_chunks


class Repository:
    """An open repository: its store, its id, and the key that names its chunks."""

    def __init__(self, store: ObjectStore, id: str, key: bytes) -> None:  # noqa: A002
        self.store = store
        self.id = id
        self._key = key

    def __repr__(self) -> str:
        # Never show the key: reprs end up in logs.
        return f"Repository(id={self.id!r}, store={self.store!r})"

    # -- opening -----------------------------------------------------------------------

    @classmethod
    async def open_or_create(cls, store: ObjectStore) -> Repository:
        """Open the repository in `store`, creating it if there is none.

        Creation is a conditional put of `config`, so when several callers race, one
        config wins and every caller ends up with it (and with the same chunk key).
        """
        config = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "id": uuid.uuid4().hex,
            "chunk_key": secrets.token_bytes(32).hex(),
        }
        data = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        if await store.put(CONFIG_KEY, data, if_absent=True):
            return cls._from_config(store, data)
        return await cls.open(store)

    @classmethod
    async def open(cls, store: ObjectStore) -> Repository:
        try:
            data = await store.get(CONFIG_KEY)
        except ObjectNotFound:
            raise RepositoryError(
                f"no repository at {store!r}: its {CONFIG_KEY!r} object is missing. "
                "Check the target's location, or initialize a repository there."
            ) from None
        return cls._from_config(store, data)

    @classmethod
    def _from_config(cls, store: ObjectStore, data: bytes) -> Repository:
        try:
            config = json.loads(data)
            fmt, version = config["format"], config["version"]
        except (ValueError, TypeError, KeyError):
            raise _corrupt(
                f"repository config at {store!r} is unreadable; restore it from a copy",
                reason="corrupt-config",
            ) from None
        if fmt != FORMAT_NAME:
            raise RepositoryError(
                f"{store!r} holds a {fmt!r} repository, not a {FORMAT_NAME!r} one; "
                "point the target at another location"
            )
        if version != FORMAT_VERSION:
            raise RepositoryError(
                f"repository at {store!r} has format version {version!r}; this software "
                f"reads version {FORMAT_VERSION}. Upgrade to use it."
            )
        try:
            repo_id = config["id"]
            key = bytes.fromhex(config["chunk_key"])
            if not isinstance(repo_id, str) or len(key) != 32:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise _corrupt(
                f"repository config at {store!r} lacks a valid id or chunk key; "
                "restore it from a copy",
                reason="corrupt-config",
            ) from None
        return cls(store, repo_id, key)

    # -- helpers -----------------------------------------------------------------------

    async def _offload(self, fn: Callable[[bytes], R], blob: bytes) -> R:
        if len(blob) < _INLINE_LIMIT:
            return fn(blob)
        return await asyncio.to_thread(fn, blob)

    def _decode_and_hash(self, blob: bytes) -> tuple[bytes, bytes]:
        data = decode_chunk(blob)
        return data, chunk_id(self._key, data)

    def _root(self, size: int, chunk_size: int, segment_chunks: int,
              segments: Sequence[str]) -> str:
        return compute_root(self._key, size, chunk_size, segment_chunks, segments)

    async def _put_content(self, key: str, blob: bytes | memoryview) -> bool:
        """Store a content-addressed object once. True if this call stored it.

        When it exists already (dedup), touch it: garbage collection keeps objects
        younger than its grace period, and this one is about to be referenced again by
        a point not yet written. If it vanished between the two calls (GC removed it),
        put it again: the same name always holds the same bytes.
        """
        if await self.store.put(key, blob, if_absent=True):
            return True
        if await self.store.touch(key):
            return False
        await self.store.put(key, blob)
        return True

    # -- chunks ------------------------------------------------------------------------

    def chunk_id(self, data: bytes | bytearray | memoryview) -> bytes:
        return chunk_id(self._key, data)

    def chunk_id_key(self) -> bytes:
        """The key chunks are named with, for a paired source node (dr_node.transfer):
        it names chunks as the repository does, so unchanged chunks are never sent and
        every chunk it sends can be checked here. The key names; it does not encrypt."""
        return self._key

    def check_chunk(self, cid: bytes, blob: bytes | memoryview) -> bool:
        """Does the encoded chunk `blob` decode to content named `cid`? (CPU-bound: call
        it from a worker thread.) False also for a blob that does not decode."""
        try:
            return self._decode_and_hash(blob)[1] == cid
        except CorruptData:
            return False

    async def has_chunk(self, cid: bytes) -> bool:
        # The zero id is never stored, yet always "present": readers fill zeros.
        if cid == ZERO_ID:
            return True
        return await self.store.exists(chunk_key(cid))

    async def put_chunk(self, cid: bytes, blob: bytes | memoryview) -> bool:
        """Store an encoded chunk (`format.encode_chunk`) unless its id is present.

        The caller computed `cid` from the data; a dedup store trusts that. Returns
        True if this call stored it. A zero id is never stored (returns False).
        """
        if cid == ZERO_ID:
            return False
        return await self._put_content(chunk_key(cid), blob)

    async def _load_chunk(self, cid: bytes) -> tuple[bytes | None, str, str]:
        """(data, "", "") for a good chunk, else (None, reason, detail)."""
        try:
            blob = await self.store.get(chunk_key(cid))
        except ObjectNotFound:
            return None, "missing", ""
        except CorruptData as e:  # the store's own checksum (S3) refused the object
            return None, "hash-mismatch", e.message
        try:
            data, actual = await self._offload(self._decode_and_hash, blob)
        except CorruptData as e:
            return None, "undecodable", e.message
        if actual != cid:
            return None, "hash-mismatch", ""
        return data, "", ""

    async def get_chunk(
        self, cid: bytes, *, disk: str = "", offset: int | None = None
    ) -> bytes:
        """The chunk's data, checked against its id. CorruptData if it is missing
        (reason "missing"), undecodable or does not match its hash."""
        if cid == ZERO_ID:
            raise RepositoryError(
                "the zero chunk id names no stored chunk: a reader fills the chunk's "
                "length with zeros instead"
            )
        data, reason, detail = await self._load_chunk(cid)
        if data is not None:
            return data
        if offset is not None:
            where = f"chunk at offset {offset}" + (f" of disk {disk}" if disk else "")
        else:
            where = f"chunk {cid.hex()}" + (f" of disk {disk}" if disk else "")
        what = {
            "missing": "is missing",
            "hash-mismatch": "is corrupt: hash mismatch",
            "undecodable": f"is corrupt: cannot be decoded ({detail})",
        }[reason]
        raise _corrupt(
            f"{where} {what} (chunk id {cid.hex()}); recovery points sharing it are "
            "damaged: run a consistency check of the disk to rewrite it",
            disk=disk,
            offset=offset,
            reason="missing" if reason == "missing" else None,
        )

    # -- segments ----------------------------------------------------------------------

    async def put_segment(self, first_chunk: int, ids: Sequence[bytes]) -> str:
        blob = encode_segment(first_chunk, ids)
        seg_id = keyed_hex(self._key, blob)
        await self._put_content(segment_key(seg_id), blob)
        return seg_id

    async def get_segment(self, seg_id: str) -> tuple[int, list[bytes]]:
        """(first_chunk, ids) of a segment, checked against its id."""
        key = segment_key(seg_id)
        try:
            blob = await self.store.get(key)
        except ObjectNotFound:
            raise _corrupt(f"segment {seg_id} is missing", reason="missing") from None
        if keyed_hex(self._key, blob) != seg_id:
            raise _corrupt(f"segment {seg_id} is corrupt: hash mismatch",
                           reason="corrupt-segment")
        try:
            return decode_segment(blob)
        except CorruptData as e:
            raise _corrupt(f"segment {seg_id} is corrupt: {e.message}",
                           reason="corrupt-segment") from None

    async def segment_ids(self, m: DiskManifest, segment_index: int) -> list[bytes]:
        """The chunk ids of segment `segment_index` of `m`, checked to be the ones
        that segment must hold (its first chunk and its count)."""
        if not 0 <= segment_index < len(m.segments):
            raise IndexError(f"disk {m.disk} has no segment {segment_index}")
        first = segment_index * m.segment_chunks
        count = min(m.segment_chunks, m.chunk_count - first)
        offset = first * m.chunk_size
        try:
            got_first, ids = await self.get_segment(m.segments[segment_index])
        except CorruptData as e:
            raise _corrupt(
                f"segment {segment_index} (from offset {offset}) of disk {m.disk}: "
                f"{e.message}; run a full sync of the disk to rewrite it",
                disk=m.disk, offset=offset, reason=e.reason,
            ) from None
        if got_first != first or len(ids) != count:
            raise _corrupt(
                f"segment {segment_index} (from offset {offset}) of disk {m.disk} is "
                f"corrupt: it lists chunks {got_first}..+{len(ids)}, expected "
                f"{first}..+{count}",
                disk=m.disk, offset=offset, reason="corrupt-segment",
            )
        return ids

    # -- manifests ---------------------------------------------------------------------

    async def put_manifest(self, m: DiskManifest) -> None:
        if self._root(m.size, m.chunk_size, m.segment_chunks, m.segments) != m.root_hash:
            raise RepositoryError(
                f"refusing to store the manifest of disk {m.disk}: its root hash does not "
                "match its contents (a bug in the writer)"
            )
        # Content-addressed: an existing object with this root already holds it.
        await self._put_content(manifest_key(m.root_hash), m.to_json())

    async def get_manifest(self, root_hash: str) -> DiskManifest:
        """The manifest named `root_hash`, checked: its fields must hash to its name.
        (Its `disk` field is informative, see DiskManifest.)"""
        key = manifest_key(root_hash)
        try:
            data = await self.store.get(key)
        except ObjectNotFound:
            raise ObjectNotFound(
                f"manifest {root_hash} is not in repository {self.id}; the recovery point "
                "naming it is unusable"
            ) from None
        try:
            m = DiskManifest.from_json(data)
        except CorruptData as e:
            raise _corrupt(f"manifest {root_hash} is corrupt: {e.message}",
                           reason="corrupt-manifest") from None
        actual = self._root(m.size, m.chunk_size, m.segment_chunks, m.segments)
        if m.root_hash != root_hash or actual != root_hash:
            raise _corrupt(
                f"manifest {root_hash} (disk {m.disk}) is corrupt: root hash mismatch",
                disk=m.disk, reason="corrupt-manifest",
            )
        return m

    # -- recovery points ---------------------------------------------------------------

    async def put_recovery_point(self, rec: RecoveryPointRecord) -> bool:
        """Publish a recovery point; the last write of a cycle.

        Every disk's manifest must already be stored. The conditional put makes the
        point appear whole and at most once: a retry with identical content returns
        False, different content raises AlreadyExists.
        """
        key = point_key(rec.id)
        for d in rec.disks:
            try:
                m = await self.get_manifest(d.root_hash)
            except ObjectNotFound:
                raise RepositoryError(
                    f"cannot write recovery point {rec.id}: the manifest of disk {d.disk} "
                    f"({d.root_hash}) is not stored; finish the disk's manifest first"
                ) from None
            if m.size != d.size:
                raise RepositoryError(
                    f"cannot write recovery point {rec.id}: disk {d.disk} has size "
                    f"{d.size} but its manifest says {m.size}"
                )
        if await self.store.put(key, rec.to_json(), if_absent=True):
            return True
        existing = await self.get_recovery_point(rec.id)
        if existing == rec:
            return False
        raise AlreadyExists(
            f"recovery point {rec.id} already exists with different content; recovery "
            "points are immutable: write the new one under another id"
        )

    async def get_recovery_point(self, point_id: str) -> RecoveryPointRecord:
        key = point_key(point_id)
        try:
            data = await self.store.get(key)
        except ObjectNotFound:
            raise ObjectNotFound(
                f"recovery point {point_id} is not in repository {self.id}"
            ) from None
        try:
            rec = RecoveryPointRecord.from_json(data)
        except CorruptData as e:
            raise _corrupt(f"recovery point {point_id} is corrupt: {e.message}",
                           reason="corrupt-point") from None
        if rec.id != point_id:
            raise _corrupt(f"recovery point {point_id} is corrupt: it names itself {rec.id}",
                           reason="corrupt-point")
        return rec

    async def delete_recovery_point(self, point_id: str) -> bool:
        """Remove a point's object (retention, or a user's delete); False if it was not
        there. Its manifests, segments and chunks stay until garbage collection finds
        no other point referencing them (dr_common/repository/gc.py)."""
        key = point_key(check_point_id(point_id))
        if not await self.store.exists(key):
            return False
        await self.store.delete(key)
        return True

    async def list_recovery_points(self) -> list[str]:
        ids = []
        async for key in self.store.list(POINTS_PREFIX):
            name = key[len(POINTS_PREFIX):]
            if "/" in name or not name.endswith(".json"):
                continue  # not a point object; a newer version may add such
            point_id = name[: -len(".json")]
            try:
                ids.append(check_point_id(point_id))
            except RepositoryError:
                continue
        return sorted(ids)

    # -- verification ------------------------------------------------------------------

    async def verify_disk(
        self,
        m: DiskManifest,
        *,
        concurrency: int = 8,
        on_progress: Callable[[int], None] | None = None,
    ) -> VerifyReport:
        """Check the root, every segment and every stored chunk of `m`.

        Reads at most `concurrency` chunks at once and collects every bad range rather
        than stopping at the first. `on_progress(n)` gets the number of chunks covered
        so far (0 < n <= m.chunk_count, increasing), zero and bad ones included.
        Errors other than bad data (e.g. the target being unreachable) propagate.
        """
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self._root(m.size, m.chunk_size, m.segment_chunks, m.segments) != m.root_hash:
            raise _corrupt(
                f"manifest of disk {m.disk} does not match its root hash {m.root_hash}",
                disk=m.disk, reason="corrupt-manifest",
            )
        bad: list[BadChunk] = []
        checked = 0
        covered = 0
        # Bounded so the producer reads segments only as fast as workers use them.
        queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue(concurrency * 2)

        def advance(n: int) -> None:
            nonlocal covered
            covered += n
            if on_progress is not None:
                on_progress(covered)

        async def produce() -> None:
            for s in range(len(m.segments)):
                first = s * m.segment_chunks
                try:
                    ids = await self.segment_ids(m, s)
                except CorruptData as e:
                    count = min(m.segment_chunks, m.chunk_count - first)
                    start = first * m.chunk_size
                    end = min(m.size, (first + count) * m.chunk_size)
                    reason = "segment-missing" if e.reason == "missing" else "segment-corrupt"
                    bad.append(BadChunk(m.disk, start, end - start, reason))
                    advance(count)
                    continue
                for j, cid in enumerate(ids):
                    if cid == ZERO_ID:
                        advance(1)
                    else:
                        await queue.put((first + j, cid))
            for _ in range(concurrency):
                await queue.put(None)

        async def work() -> None:
            nonlocal checked
            while (item := await queue.get()) is not None:
                index, cid = item
                data, reason, _ = await self._load_chunk(cid)
                length = m.chunk_length(index)
                if data is not None and len(data) != length:
                    reason = "wrong-length"
                checked += 1
                if reason:
                    bad.append(BadChunk(m.disk, index * m.chunk_size, length, reason))
                advance(1)

        await _run_all([produce(), *(work() for _ in range(concurrency))])
        bad.sort(key=lambda b: b.offset)
        return VerifyReport(disk=m.disk, chunks_checked=checked, bad_chunks=tuple(bad))


async def _run_all(coros: list[Any]) -> None:
    """Run coroutines together; on the first failure (or our cancellation) cancel the
    rest and wait for them, so nothing is left running, then re-raise."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class ManifestWriter:
    """Builds one disk's manifest while chunks become durable in order (the low watermark).

    The caller adds the ids of chunks next_chunk, next_chunk+1, ... once they are
    stored (ZERO_ID for holes and zero chunks); each full segment is written as soon as
    it fills. `checkpoint()` is the state to persist to resume after a crash: pass its
    segments and tail back to a new writer and the result is the same manifest.
    """

    def __init__(
        self,
        repo: Repository,
        disk: str,
        size: int,
        chunk_size: int,
        *,
        segments: Sequence[str] = (),
        tail: bytes = b"",
    ) -> None:
        if size < 0 or chunk_size < 1:
            raise ValueError(f"invalid disk geometry: size {size}, chunk size {chunk_size}")
        if len(tail) % ID_SIZE:
            raise RepositoryError(
                f"resume state of disk {disk} is damaged: its tail is not whole chunk ids"
            )
        self._repo = repo
        self.disk = disk
        self.size = size
        self.chunk_size = chunk_size
        self._segments = [check_hex_id(s, "segment id") for s in segments]
        # Ids not yet in a written segment. Usually less than one segment; more only
        # if a segment write failed, in which case the next add/finish retries it.
        self._tail = bytearray(tail)
        # One add/finish at a time: two interleaved flushes would write a segment twice.
        self._lock = asyncio.Lock()
        needed = -(-self.chunk_count // SEGMENT_CHUNKS)
        if len(self._segments) > needed or self.next_chunk > self.chunk_count:
            raise RepositoryError(
                f"resume state of disk {disk} is past its end "
                f"(chunk {self.next_chunk} of {self.chunk_count})"
            )

    @property
    def chunk_count(self) -> int:
        return -(-self.size // self.chunk_size)

    @property
    def next_chunk(self) -> int:
        # Only the disk's last segment may be short, so segments cover this many chunks.
        in_segments = min(len(self._segments) * SEGMENT_CHUNKS, self.chunk_count)
        return in_segments + len(self._tail) // ID_SIZE

    async def add(self, ids: Sequence[bytes]) -> None:
        async with self._lock:
            for cid in ids:
                if len(cid) != ID_SIZE:
                    raise ValueError(f"chunk id must be {ID_SIZE} bytes, got {len(cid)}")
            if self.next_chunk + len(ids) > self.chunk_count:
                raise RepositoryError(
                    f"disk {self.disk} has {self.chunk_count} chunks; adding {len(ids)} "
                    f"at chunk {self.next_chunk} goes past its end"
                )
            self._tail += b"".join(ids)
            await self._flush_full()

    async def _flush_full(self) -> None:
        seg_bytes = SEGMENT_CHUNKS * ID_SIZE
        pos = 0
        try:
            while len(self._tail) - pos >= seg_bytes:
                await self._write_segment(bytes(self._tail[pos : pos + seg_bytes]))
                pos += seg_bytes
        finally:
            # Keep state consistent even if a write failed or we were cancelled.
            del self._tail[:pos]

    async def _write_segment(self, body: bytes) -> None:
        first = len(self._segments) * SEGMENT_CHUNKS
        ids = [body[i : i + ID_SIZE] for i in range(0, len(body), ID_SIZE)]
        self._segments.append(await self._repo.put_segment(first, ids))

    def checkpoint(self) -> tuple[int, list[str], bytes]:
        """(watermark chunk, segments written, tail ids) — the resume state."""
        return self.next_chunk, list(self._segments), bytes(self._tail)

    async def finish(self) -> DiskManifest:
        """Write the last partial segment and the manifest; return the manifest.

        Requires every chunk to have been added. Calling it again is harmless.
        """
        async with self._lock:
            if self.next_chunk != self.chunk_count:
                raise RepositoryError(
                    f"cannot finish the manifest of disk {self.disk}: {self.next_chunk} of "
                    f"{self.chunk_count} chunks are in"
                )
            await self._flush_full()
            if self._tail:
                await self._write_segment(bytes(self._tail))
                self._tail.clear()
            root = self._repo._root(self.size, self.chunk_size, SEGMENT_CHUNKS, self._segments)
            m = DiskManifest(
                disk=self.disk,
                size=self.size,
                chunk_size=self.chunk_size,
                segment_chunks=SEGMENT_CHUNKS,
                segments=tuple(self._segments),
                root_hash=root,
            )
            await self._repo.put_manifest(m)
            return m
