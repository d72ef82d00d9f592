"""Target `ebs`: recovery points as EBS snapshots, written with the EBS direct APIs.

Each disk of a recovery point is one EBS snapshot. The first is written whole (its
allocated blocks); later ones start from the previous point's snapshot
(`ParentSnapshotId`) and put only changed blocks, so EBS keeps the chain and a volume
made from any snapshot is the whole disk at that point. A snapshot is `pending` while
we write it and becomes usable only after `CompleteSnapshot`, which checks the count of
blocks we put and the aggregate of their SHA256s: a disk that is not complete never
looks like a recovery point. The finalize step tags the disks' snapshots with the
recovery point's id, the last write of a cycle.

Blocks are 512 KiB (the API's only block size); the engine's chunk grid is the block
grid. Every call goes through the remote-call layer (`dr_common.remote`), which maps AWS
errors to ours (`dr_common.aws`) and retries: throttling is a signal the engine's
adaptive concurrency acts on, not a failure.

`EbsSink` writes one disk of a cycle: an incremental starts from the previous point's
snapshot and puts only changed blocks (including blocks that became zero: the parent
still has their old bytes). Its checkpoint is the pending snapshot and how many blocks
below the watermark were put.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

import structlog

from dr_common.aws import AwsSettings, aws_error, client
from dr_common.errors import InvalidArgument, NotFound, TargetError
from dr_common.proto.dr.v1 import common_pb2, nodes_pb2
from dr_common.remote import Remote
from dr_common.repository import CHUNK_OVERHEAD, ZERO_ID
from dr_common.targets.base import (Checkpoint, Progress, SinkRequest, SinkResult,
                                    TargetEnv, unsupported)

log = structlog.get_logger()

BLOCK_SIZE = 512 * 1024
GiB = 1 << 30
# A pending snapshot not completed within this many minutes fails on AWS's side. A
# cycle that stalls longer restarts its disk on a new snapshot (see EbsSnapshotWriter).
SNAPSHOT_TIMEOUT_MINUTES = 24 * 60
TAG_PLAN = "hybrid-dr:plan"
TAG_DISK = "hybrid-dr:disk"
TAG_CYCLE = "hybrid-dr:cycle"
TAG_POINT = "hybrid-dr:recovery-point"


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _tags(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


@dataclass(frozen=True)
class SnapshotState:
    snapshot_id: str
    status: str  # pending | completed | error (EC2's view)
    size_bytes: int


class EbsApi:
    """An EBS-direct and EC2 client pair for one region, shared by a node's disks."""

    def __init__(self, settings: AwsSettings):
        self.settings = settings
        self._ebs: Any = None
        self._ec2: Any = None
        self._stack: Any = None
        self._ebs_calls = Remote("ebs", errors=aws_error)
        self._ec2_calls = Remote("ec2", errors=aws_error)

    async def __aenter__(self) -> EbsApi:
        import contextlib
        self._stack = contextlib.AsyncExitStack()
        # Chunks are written by many tasks at once: one connection each.
        self._ebs = await self._stack.enter_async_context(
            client(self.settings, "ebs", max_pool_connections=128))
        self._ec2 = await self._stack.enter_async_context(client(self.settings, "ec2"))
        return self

    async def __aexit__(self, *exc) -> None:
        await self._stack.aclose()

    # -- snapshots ------------------------------------------------------------------

    async def start_snapshot(self, *, size: int, parent: str, tags: dict[str, str],
                             description: str, client_token: str) -> str:
        if size % GiB:
            raise InvalidArgument(
                f"the ebs target needs disks of whole GiB; this one is {size} bytes",
                field="size_bytes")
        kwargs: dict[str, Any] = dict(
            VolumeSize=size // GiB, Tags=_tags(tags), Description=description[:255],
            ClientToken=client_token, Timeout=SNAPSHOT_TIMEOUT_MINUTES)
        if parent:
            kwargs["ParentSnapshotId"] = parent

        resp = await self._ebs_calls.call(
            "StartSnapshot", lambda: self._ebs.start_snapshot(**kwargs),
            what=f"start an EBS snapshot (parent {parent or 'none'})")
        if resp.get("BlockSize", BLOCK_SIZE) != BLOCK_SIZE:
            raise TargetError(f"EBS answered with block size {resp.get('BlockSize')}, "
                              f"expected {BLOCK_SIZE}", reason="aws-error", retryable=False)
        return resp["SnapshotId"]

    async def put_block(self, snapshot_id: str, index: int, data: bytes | memoryview,
                        digest: bytes) -> None:
        """One 512 KiB block with its SHA256 (AWS checks it). Idempotent: a retry puts
        the same bytes at the same index."""
        body = bytes(data)
        await self._ebs_calls.call(
            "PutSnapshotBlock", lambda: self._ebs.put_snapshot_block(
                SnapshotId=snapshot_id, BlockIndex=index, BlockData=body,
                DataLength=len(body), Checksum=b64(digest), ChecksumAlgorithm="SHA256"),
            what=f"put block {index} of {snapshot_id}")

    async def complete(self, snapshot_id: str, *, changed_blocks: int,
                       aggregate: bytes | None) -> None:
        kwargs: dict[str, Any] = dict(SnapshotId=snapshot_id, ChangedBlocksCount=changed_blocks)
        if aggregate is not None:
            kwargs.update(Checksum=b64(aggregate), ChecksumAlgorithm="SHA256",
                          ChecksumAggregationMethod="LINEAR")

        await self._ebs_calls.call("CompleteSnapshot",
                                   lambda: self._ebs.complete_snapshot(**kwargs),
                                   what=f"complete snapshot {snapshot_id}")

    async def describe(self, snapshot_id: str) -> SnapshotState | None:
        """EC2's view of a snapshot; None if it does not exist."""
        try:
            resp = await self._ec2_calls.call(
                "DescribeSnapshots",
                lambda: self._ec2.describe_snapshots(SnapshotIds=[snapshot_id]),
                what=f"describe snapshot {snapshot_id}")
        except NotFound:  # dr_common.aws maps InvalidSnapshot.NotFound here
            return None
        snaps = resp.get("Snapshots", [])
        if not snaps:
            return None
        s = snaps[0]
        return SnapshotState(s["SnapshotId"], s["State"], int(s.get("VolumeSize", 0)) * GiB)

    async def delete_snapshot(self, snapshot_id: str) -> bool:
        """Delete a recovery point's snapshot; False if it was already gone.

        Deleting the parent of a newer snapshot is safe: EBS keeps every block a
        remaining snapshot still needs and frees only the rest.
        """
        try:
            await self._ec2_calls.call(
                "DeleteSnapshot", lambda: self._ec2.delete_snapshot(SnapshotId=snapshot_id),
                what=f"delete snapshot {snapshot_id}")
        except NotFound:
            return False
        return True

    async def wait_completed(self, snapshot_id: str, *, timeout: float = 600) -> None:
        """EBS finishes a snapshot after CompleteSnapshot returns: wait for it, so a
        recovery point is only recorded over usable snapshots."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            state = await self.describe(snapshot_id)
            if state is None:
                raise TargetError(f"snapshot {snapshot_id} vanished while completing",
                                  reason="snapshot-missing", retryable=False)
            if state.status == "completed":
                return
            if state.status == "error":
                raise TargetError(f"EBS failed snapshot {snapshot_id} after it was written",
                                  reason="snapshot-failed", retryable=True)
            if time.monotonic() > deadline:
                raise TargetError(f"snapshot {snapshot_id} still {state.status} after "
                                  f"{timeout:.0f} s", reason="target-unavailable",
                                  retryable=True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def tag(self, snapshot_ids: list[str], tags: dict[str, str]) -> None:
        await self._ec2_calls.call(
            "CreateTags", lambda: self._ec2.create_tags(Resources=snapshot_ids,
                                                        Tags=_tags(tags)),
            what=f"tag snapshots {', '.join(snapshot_ids)}")

    async def create_volume(self, snapshot_id: str, *, availability_zone: str,
                            tags: dict[str, str]) -> str:
        """Restore: a new volume from a recovery point's snapshot; returns its id."""
        try:
            resp = await self._ec2_calls.call(
                "CreateVolume", lambda: self._ec2.create_volume(
                    SnapshotId=snapshot_id, AvailabilityZone=availability_zone,
                    VolumeType="gp3", TagSpecifications=[
                        {"ResourceType": "volume", "Tags": _tags(tags)}]),
                what=f"create a volume from {snapshot_id}")
        except NotFound:
            raise NotFound(f"snapshot {snapshot_id} of this recovery point no longer "
                           f"exists in {self.settings.region}") from None
        return resp["VolumeId"]


def sha256(data: bytes | memoryview) -> bytes:
    return hashlib.sha256(data).digest()


# The id an EbsSink gives clean chunks: nothing to put, nothing to count.
_INHERITED = b""


class EbsSink:
    """A disk written as one EBS snapshot, relative to the previous point's snapshot."""

    can_probe = False  # a pending snapshot cannot be listed: a resume re-puts past the watermark

    def __init__(self, api: EbsApi, *, name: str, disk: str, size: int,
                 chunk_size: int, parent: str, tags: dict[str, str], client_token: str):
        if chunk_size != BLOCK_SIZE:
            raise TargetError(f"the ebs target writes {BLOCK_SIZE}-byte blocks; this disk "
                              f"was given {chunk_size}-byte chunks", reason="invalid-argument",
                              retryable=False)
        self.api = api
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
            state = await self.api.describe(checkpoint.snapshot_id)
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
        if self.parent and await self.api.describe(self.parent) is None:
            # Deleted outside the product: the chain is broken, so this point is written
            # whole (the recovery point that named it can no longer be restored).
            log.warning("the previous point's snapshot is gone: writing a whole snapshot",
                        parent=self.parent, disk=self.disk)
            self.parent, self.has_previous, self.writes_zeros = "", False, False
            self.full_sync_reason = "parent-snapshot-missing"
        self.snapshot_id = await self.api.start_snapshot(
            size=self.size, parent=self.parent, tags=self.tags,
            description=f"Hybrid DR {self.disk}", client_token=self.client_token)
        log.info("EBS snapshot started", snapshot=self.snapshot_id, parent=self.parent or None)
        return 0

    async def previous_id(self, index: int) -> bytes | None:
        return _INHERITED if self.has_previous else None

    def encode(self, frame, length, prev_id):
        data = memoryview(frame)[CHUNK_OVERHEAD:CHUNK_OVERHEAD + length]
        return sha256(data), data

    async def stored_before(self, cid: bytes) -> bool:
        return False

    async def put(self, index: int, cid: bytes, blob) -> bool:
        await self.api.put_block(self.snapshot_id, index, blob, cid)
        return True

    def _zero_block(self) -> tuple[bytes, bytes]:
        """One zero block and its SHA256, made once: every zero put and count uses it."""
        if not self._zero_digest:
            self._zeros = bytes(BLOCK_SIZE)
            self._zero_digest = sha256(self._zeros)
        return self._zeros, self._zero_digest

    async def put_zero(self, index: int, length: int) -> None:
        zeros, digest = self._zero_block()
        await self.api.put_block(self.snapshot_id, index, zeros, digest)

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
        await self.api.complete(
            self.snapshot_id, changed_blocks=self._changed,
            aggregate=self._aggregate.digest() if self._aggregate is not None else None)
        await self.api.wait_completed(self.snapshot_id)
        log.info("EBS snapshot completed", snapshot=self.snapshot_id,
                 changed_blocks=self._changed)
        return SinkResult(size=self.size, snapshot_id=self.snapshot_id)


def locate(path: str) -> nodes_pb2.EbsTarget:
    return nodes_pb2.EbsTarget()


async def open_target(locator: nodes_pb2.EbsTarget, site: common_pb2.SiteSettings,
                      env: TargetEnv) -> EbsTarget:
    settings = AwsSettings.from_site(site, field="target.site")
    api = EbsApi(settings)
    await api.__aenter__()
    return EbsTarget(api)


class EbsTarget:
    """Recovery points as EBS snapshots in one region: one snapshot per disk, chained
    to the previous point's, tagged with the point's id when the cycle is finalized."""

    repository = None

    def __init__(self, api: EbsApi):
        self.api = api
        self.name = f"ebs:{api.settings.region}"

    async def sink(self, request: SinkRequest) -> EbsSink:
        return EbsSink(
            self.api, name=self.name, disk=request.disk, size=request.size,
            chunk_size=request.chunk_size,
            parent=request.previous_snapshot_id if request.source_tracked else "",
            client_token=_token(request),
            tags={TAG_PLAN: request.plan, TAG_DISK: request.disk, TAG_CYCLE: request.cycle})

    async def finalize(self, spec: nodes_pb2.FinalizeSpec) -> bool:
        # The snapshots are complete; naming them the point is the last write.
        await self.api.tag([d.snapshot_id for d in spec.disks],
                           {TAG_POINT: spec.recovery_point_id})
        return True

    async def delete(self, spec: nodes_pb2.DeleteSpec) -> int:
        deleted = 0
        for snapshot_id in spec.snapshot_ids:
            deleted += await self.api.delete_snapshot(snapshot_id)
        return deleted

    async def restore(self, spec: nodes_pb2.RestoreSpec, progress: Progress
                      ) -> common_pb2.RestoreResult:
        volume = await self.api.create_volume(
            spec.snapshot_id, availability_zone=spec.availability_zone,
            tags={TAG_POINT: spec.recovery_point.rsplit("/", 1)[-1], TAG_DISK: spec.disk})
        log.info("volume restored", volume=volume, snapshot=spec.snapshot_id)
        return common_pb2.RestoreResult(volume_id=volume)

    async def verify(self, spec: nodes_pb2.VerifySpec, progress: Progress
                     ) -> common_pb2.VerifyResult:
        raise unsupported(self.name, "verify a recovery point",
                          "EBS checks its snapshots itself (every block was put with its "
                          "SHA256)")

    async def gc(self, spec: nodes_pb2.GcSpec) -> common_pb2.GcResult:
        raise unsupported(self.name, "collect garbage",
                          "EBS frees a deleted snapshot's blocks itself")

    async def close(self) -> None:
        await self.api.__aexit__(None, None, None)


def _token(request: SinkRequest) -> str:
    """StartSnapshot's idempotency token: the same for retries of one start, new for
    every attempt that starts over (a reused token would return the old snapshot)."""
    return f"{request.cycle}/{request.disk}/{uuid.uuid4().hex}"[-64:]
