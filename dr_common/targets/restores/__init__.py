"""Restores to somewhere other than an image file on the node: recovery's *prepare* step
writing a point's disk to the recovery site (DESIGN.md 6), found by the destination's
kind, never by `if kind == ...` in a target or the node.

A destination kind is one module with `async open_writer(message, site, *, size, env)
-> DiskWriter`, where `message` is the kind's own field of `RestoreDestination`
(proto/dr/v1/nodes.proto) and `site` the destination site's settings (set when the task
is leased); and one line in `KINDS`. `restore_to` is the one copy routine over every
writer: it reads a repository point's chunks (each checked against its id by the
repository), a few in flight, and hands them to the writer strictly in disk order —
zero chunks included, as zeros, because a destination such as a flat virtual disk is a
byte stream with no holes — then asks the writer to finish and checks a sample of
what it wrote by reading it back.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import structlog

from dr_common.errors import InvalidArgument, TargetError
from dr_common.proto.dr.v1 import common_pb2, nodes_pb2
from dr_common.registry import Registry
from dr_common.repository import ZERO_ID, Repository
from dr_common.targets.base import Progress, TargetEnv

log = structlog.get_logger()

# Chunks read back after the write and compared with their ids: the first and last
# data chunks and a few chosen at random (seeded by the disk's root hash, so a retried
# restore checks the same ones), and one zero chunk. A whole read-back would double the
# restore's time on a WAN; a sample catches a writer that drops, reorders or truncates.
SAMPLED_DATA_CHUNKS = 8


@dataclass(frozen=True)
class DestinationKind:
    name: str
    module: str


# The registry. The kind is the name of its field in RestoreDestination's `kind` oneof.
KINDS: dict[str, DestinationKind] = {k.name: k for k in (
    DestinationKind("vsphere", "dr_common.targets.restores.vsphere"),
    DestinationKind("azure", "dr_common.targets.restores.azure"),
    DestinationKind("kvm", "dr_common.targets.restores.kvm"),
)}
REGISTRY = Registry("restore destination", KINDS.values())


class DiskWriter(Protocol):
    """One disk being written at a destination, front to back."""

    # Where, for logs and the result: "[LocalDS_0] hybrid-dr-1a2b/web-1/disk-0.vmdk".
    name: str
    # The volume made, for destinations that make one (azure: the managed disk's
    # resource id, which recovery attaches); "" otherwise.
    volume_id: str

    async def write(self, data: bytes | memoryview) -> None:
        """The next bytes of the disk (data chunks, in order)."""

    async def zeros(self, length: int) -> None:
        """The next `length` bytes are zeros."""

    async def finish(self) -> int:
        """Everything is written and durable at the destination (the disk made usable:
        a descriptor, a commit); returns the size the destination reports for it."""

    async def read(self, offset: int, length: int) -> bytes:
        """Reads back what was written (after finish)."""

    async def abort(self) -> None:
        """Gives up: removes what was written, as far as it can."""

    async def close(self) -> None: ...


def kind_of(dest: nodes_pb2.RestoreDestination) -> str:
    return dest.WhichOneof("kind") or ""


async def open_writer(dest: nodes_pb2.RestoreDestination, *, size: int,
                      env: TargetEnv) -> DiskWriter:
    name = kind_of(dest)
    if not name:
        raise InvalidArgument("the restore's destination names no kind "
                              "(RestoreDestination.kind is unset)", field="destination")
    module = REGISTRY.module(name, field="destination")
    return await module.open_writer(getattr(dest, name), dest.site, size=size, env=env)


async def restore_to(repo: Repository, spec: nodes_pb2.RestoreSpec, env: TargetEnv,
                     progress: Progress) -> common_pb2.RestoreResult:
    """Writes disk `spec.disk` of a repository point to `spec.destination`, then checks
    its size and a sample of its chunks read back from there."""
    manifest = await repo.get_manifest(spec.root_hash)
    writer = await open_writer(spec.destination, size=manifest.size, env=env)
    rnd = random.Random(spec.root_hash)
    samples: list[tuple[int, int, bytes]] = []  # (offset, length, id): reservoir
    first_data: tuple[int, int, bytes] | None = None
    last_data: tuple[int, int, bytes] | None = None
    zero_sample: tuple[int, int, bytes] | None = None
    seen_data = 0
    written = 0
    pending: deque[tuple[int, asyncio.Task | None]] = deque()
    budget, window = env.budget, max(1, env.window)

    async def fetch(cid: bytes, offset: int, length: int) -> bytes:
        if budget is None:
            return await repo.get_chunk(cid, disk=spec.disk, offset=offset)
        async with budget.hold(length):
            return await repo.get_chunk(cid, disk=spec.disk, offset=offset)

    async def drain_one() -> None:
        nonlocal written
        length, task = pending.popleft()
        if task is None:
            await writer.zeros(length)
        else:
            await writer.write(await task)
        written += length

    try:
        for seg in range(len(manifest.segments)):
            ids = await repo.segment_ids(manifest, seg)
            first = seg * manifest.segment_chunks
            for i, cid in enumerate(ids):
                index = first + i
                offset = index * manifest.chunk_size
                length = manifest.chunk_length(index)
                if cid == ZERO_ID:
                    zero_sample = zero_sample or (offset, length, cid)
                    pending.append((length, None))
                else:
                    entry = (offset, length, cid)
                    first_data = first_data or entry
                    last_data = entry
                    seen_data += 1
                    if len(samples) < SAMPLED_DATA_CHUNKS:
                        samples.append(entry)
                    elif (j := rnd.randrange(seen_data)) < SAMPLED_DATA_CHUNKS:
                        samples[j] = entry
                    pending.append((length, asyncio.create_task(fetch(cid, offset, length))))
                while len(pending) >= window:
                    await drain_one()
            await progress(written, manifest.size)
        while pending:
            await drain_one()
        size = await writer.finish()
        if size < manifest.size:
            raise TargetError(f"{writer.name} holds {size} bytes after the upload, the disk "
                              f"has {manifest.size}", reason="restore-verify-failed",
                              retryable=True)
        checked = {e for e in (first_data, last_data, *samples, zero_sample) if e}
        for offset, length, cid in sorted(checked):
            data = await writer.read(offset, length)
            ok = (data == bytes(length)) if cid == ZERO_ID else (repo.chunk_id(data) == cid)
            if not ok:
                raise TargetError(f"{writer.name}: the {length} bytes at {offset} read back "
                                  f"differ from the recovery point's chunk",
                                  reason="restore-verify-failed", retryable=True)
        await progress(manifest.size, manifest.size)
    except BaseException:
        for _, task in pending:
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for _, t in pending if t is not None), return_exceptions=True)
        await asyncio.shield(writer.abort())
        await writer.close()
        raise
    await writer.close()
    verified = (f"size {size} bytes and {len(checked)} chunks read back "
                f"({len(checked) - (1 if zero_sample else 0)} of data)")
    log.info("restored to destination", disk=spec.disk, destination=writer.name,
             bytes=manifest.size, verified=verified)
    return common_pb2.RestoreResult(datastore_path=writer.name, bytes_written=written,
                                    root_hash=spec.root_hash, verified=verified,
                                    volume_id=writer.volume_id)
