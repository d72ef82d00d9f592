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
grid. Every call maps AWS errors to ours (`dr_common.aws`): throttling is a signal the
engine's adaptive concurrency acts on, not a failure.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from dataclasses import dataclass
from typing import Any

from dr_common.aws import AwsSettings, calling, client
from dr_common.errors import InvalidArgument, NotFound, TargetError
from dr_common.targets.metrics import call

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


class EbsTarget:
    """An EBS-direct and EC2 client pair for one region, shared by a node's disks."""

    def __init__(self, settings: AwsSettings):
        self.settings = settings
        self._ebs: Any = None
        self._ec2: Any = None
        self._stack: Any = None

    async def __aenter__(self) -> EbsTarget:
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

        async def start() -> dict:
            async with calling(f"start an EBS snapshot (parent {parent or 'none'})"):
                return await self._ebs.start_snapshot(**kwargs)
        resp = await call("ebs", "StartSnapshot", start)
        if resp.get("BlockSize", BLOCK_SIZE) != BLOCK_SIZE:
            raise TargetError(f"EBS answered with block size {resp.get('BlockSize')}, "
                              f"expected {BLOCK_SIZE}", reason="aws-error", retryable=False)
        return resp["SnapshotId"]

    async def put_block(self, snapshot_id: str, index: int, data: bytes | memoryview,
                        digest: bytes) -> None:
        """One 512 KiB block with its SHA256 (AWS checks it). Idempotent: a retry puts
        the same bytes at the same index."""
        async with calling(f"put block {index} of {snapshot_id}"):
            await self._ebs.put_snapshot_block(
                SnapshotId=snapshot_id, BlockIndex=index, BlockData=bytes(data),
                DataLength=len(data), Checksum=b64(digest), ChecksumAlgorithm="SHA256")

    async def complete(self, snapshot_id: str, *, changed_blocks: int,
                       aggregate: bytes | None) -> None:
        kwargs: dict[str, Any] = dict(SnapshotId=snapshot_id, ChangedBlocksCount=changed_blocks)
        if aggregate is not None:
            kwargs.update(Checksum=b64(aggregate), ChecksumAlgorithm="SHA256",
                          ChecksumAggregationMethod="LINEAR")

        async def complete() -> None:
            async with calling(f"complete snapshot {snapshot_id}"):
                await self._ebs.complete_snapshot(**kwargs)
        await call("ebs", "CompleteSnapshot", complete)

    async def describe(self, snapshot_id: str) -> SnapshotState | None:
        """EC2's view of a snapshot; None if it does not exist."""
        async def describe() -> dict:
            async with calling(f"describe snapshot {snapshot_id}"):
                return await self._ec2.describe_snapshots(SnapshotIds=[snapshot_id])
        try:
            resp = await call("ec2", "DescribeSnapshots", describe)
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
        async def delete() -> None:
            async with calling(f"delete snapshot {snapshot_id}"):
                await self._ec2.delete_snapshot(SnapshotId=snapshot_id)
        try:
            await call("ec2", "DeleteSnapshot", delete)
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
        async def create_tags() -> None:
            async with calling(f"tag snapshots {', '.join(snapshot_ids)}"):
                await self._ec2.create_tags(Resources=snapshot_ids, Tags=_tags(tags))
        await call("ec2", "CreateTags", create_tags)

    async def create_volume(self, snapshot_id: str, *, availability_zone: str,
                            tags: dict[str, str]) -> str:
        """Restore: a new volume from a recovery point's snapshot; returns its id."""
        async def create_volume() -> dict:
            async with calling(f"create a volume from {snapshot_id}"):
                return await self._ec2.create_volume(
                    SnapshotId=snapshot_id, AvailabilityZone=availability_zone,
                    VolumeType="gp3", TagSpecifications=[
                        {"ResourceType": "volume", "Tags": _tags(tags)}])
        try:
            resp = await call("ec2", "CreateVolume", create_volume)
        except NotFound:
            raise NotFound(f"snapshot {snapshot_id} of this recovery point no longer "
                           f"exists in {self.settings.region}") from None
        return resp["VolumeId"]


def sha256(data: bytes | memoryview) -> bytes:
    return hashlib.sha256(data).digest()
