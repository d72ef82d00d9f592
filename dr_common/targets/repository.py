"""The repository target: recovery points in the repository format (docs/FORMAT.md) on
an object store. Targets `fs` and `s3` are this one target over different stores.

A disk's chunks are content-named objects; unchanged chunks keep the previous point's
id; the committed ids form the disk's manifest, whose segments are the checkpoint. A
recovery point is the point object, written last (a conditional put).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import datetime, timezone

import structlog
from google.protobuf import json_format

from dr_common.errors import AlreadyExists, InvalidArgument
from dr_common.paths import check_within_roots
from dr_common.proto.dr.v1 import common_pb2, nodes_pb2
from dr_common.repository import (CHUNK_OVERHEAD, DiskManifest, ManifestWriter, PointDisk,
                                  RecoveryPointRecord, Repository, encode_chunk_in_place, gc)
from dr_common.targets import restores
from dr_common.targets.base import (IMAGE_FORMATS, Checkpoint, Progress, SinkRequest, SinkResult,
                                    TargetEnv)
from dr_common.targets.image import convert_to_qcow2, restore_raw

log = structlog.get_logger()



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


class RepositoryTarget:
    """Recovery points in one repository (`name` labels it for limits and logs)."""

    def __init__(self, repo: Repository, *, name: str, env: TargetEnv = TargetEnv()):
        self.repository = repo
        self.name = name
        self.env = env

    async def sink(self, request: SinkRequest) -> RepositorySink:
        previous = (await self.repository.get_manifest(request.previous_root_hash)
                    if request.previous_root_hash else None)
        return RepositorySink(
            self.repository, name=self.name, disk=request.disk, size=request.size,
            chunk_size=request.chunk_size, compression=request.compression or "none",
            previous=comparable(previous, request.size, request.chunk_size))

    async def finalize(self, spec: nodes_pb2.FinalizeSpec) -> bool:
        repo = self.repository
        for d in spec.disks:  # validate: every manifest is there and intact
            await repo.get_manifest(d.root_hash)
        record = RecoveryPointRecord(
            id=spec.recovery_point_id, plan=spec.plan, cycle=spec.cycle,
            create_time=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            disks=tuple(PointDisk(disk=d.disk, size=d.size_bytes, root_hash=d.root_hash,
                                  full_sync=d.full_sync) for d in spec.disks))
        await repo.store.sync()  # chunks and manifests durable before the point shows
        written = await repo.put_recovery_point(record)
        await repo.store.sync()
        return written

    async def delete(self, spec: nodes_pb2.DeleteSpec) -> int:
        removed = await self.repository.delete_recovery_point(spec.recovery_point_id)
        await self.repository.store.sync()
        return int(removed)

    async def restore(self, spec: nodes_pb2.RestoreSpec, progress: Progress
                      ) -> common_pb2.RestoreResult:
        if spec.HasField("destination"):
            # Written at another site (recovery's prepare step), by its kind's writer.
            return await restores.restore_to(self.repository, spec, self.env, progress)
        fmt = spec.format or "raw"
        if fmt not in IMAGE_FORMATS:
            raise InvalidArgument(f"restore format {spec.format!r} is not supported; "
                                  f"supported: {', '.join(IMAGE_FORMATS)}", field="format")
        env = self.env
        dest = check_within_roots(spec.destination_path, env.roots, field="destination_path")
        if dest.exists() and not spec.overwrite:
            raise AlreadyExists(f"{dest} exists; pass overwrite to replace it")
        # qcow2: a verified raw restore next to it first, then qemu-img converts it.
        raw = dest if fmt == "raw" else dest.parent / f".{dest.name}.raw-{uuid.uuid4().hex[:8]}"
        result = await restore_raw(
            repo=self.repository, root_hash=spec.root_hash, disk=spec.disk,
            destination=str(raw), overwrite=spec.overwrite, roots=list(env.roots),
            pool=env.executor, budget=env.budget, window=env.window, progress=progress)
        if raw != dest:
            try:
                await asyncio.get_running_loop().run_in_executor(
                    env.executor, convert_to_qcow2, raw, dest, spec.overwrite)
            finally:
                raw.unlink(missing_ok=True)
            result["destination_path"] = str(dest)
        return json_format.ParseDict(result, common_pb2.RestoreResult())

    async def verify(self, spec: nodes_pb2.VerifySpec, progress: Progress
                     ) -> common_pb2.VerifyResult:
        checked, bytes_done, bad = 0, 0, []
        total = sum(d.size_bytes for d in spec.disks)
        for d in spec.disks:
            # Every disk is checked even after a bad one: the user needs the whole list.
            # Identical disks share a manifest: name the disk this point says it is.
            manifest = dataclasses.replace(await self.repository.get_manifest(d.root_hash),
                                           disk=d.disk)
            report = await self.repository.verify_disk(manifest)
            checked += report.chunks_checked
            bad += [common_pb2.BadChunk(disk=d.disk, offset=b.offset, length=b.length,
                                        reason=b.reason) for b in report.bad_chunks]
            bytes_done += d.size_bytes
            await progress(bytes_done, total)
        return common_pb2.VerifyResult(ok=not bad, chunks_checked=checked, bad_chunks=bad)

    async def gc(self, spec: nodes_pb2.GcSpec) -> common_pb2.GcResult:
        report = await gc.collect_garbage(self.repository, grace_seconds=spec.grace_seconds)
        await self.repository.store.sync()
        return common_pb2.GcResult(**report.as_dict())

    async def close(self) -> None:
        await self.repository.store.close()
