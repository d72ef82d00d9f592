"""Target `azure-disk`: recovery points as incremental snapshots of managed disks.

Each protected disk has a *replica*: a managed disk in the recovery site's first
resource group, made with `createOption=Upload` (a fixed VHD: the data, then a
512-byte footer, `dr_common.vhd`). A cycle writes it through Azure's direct upload:
`beginGetAccess {access: Write}` gives a SAS to the disk's page blob, changed chunks
are Put Page calls (at most 4 MiB each, 512-byte aligned), chunks that became zero are
Clear Pages, and `endGetAccess` ends the upload. Then an incremental snapshot of the
replica, tagged with the plan, the disk and the cycle, is that disk's part of the
point; the finalize step tags the snapshots with the recovery point's id, the last
write of a cycle. A restore is a new managed disk copied from a point's snapshot.

The replica must hold exactly the previous point for an incremental to be right (clean
chunks are not written: they are whatever the replica holds). The replica's tag
`hybrid-dr:at-snapshot` says which snapshot it equals; it is cleared when a cycle
starts writing and set when its snapshot is taken. A replica that does not equal the
previous point (a cycle failed midway; the tag is missing or another) is written in
full, zeros included, and says so (`replica-diverged`).

Every call goes through the remote-call layer: ARM calls through one `Remote`, Storage
through another; throttling (429, ServerBusy) is a signal for the engine's adaptive
concurrency, not a failure.
"""

from __future__ import annotations

import hashlib
from typing import Any

import structlog

from dr_common import vhd
from dr_common.azure import Arm, AzureSettings, errors, resource_group_of, resource_name, wait
from dr_common.errors import InvalidArgument, NotFound, TargetError
from dr_common.proto.dr.v1 import common_pb2, nodes_pb2
from dr_common.remote import Remote
from dr_common.repository import CHUNK_OVERHEAD
from dr_common.targets.base import (Checkpoint, Progress, SinkRequest, SinkResult,
                                    TargetEnv, unsupported)

log = structlog.get_logger()

# Put Page takes at most 4 MiB, 512-byte aligned.
MAX_PAGE_WRITE = 4 << 20
PAGE = 512
TAG_PLAN = "hybrid-dr:plan"
TAG_DISK = "hybrid-dr:disk"
TAG_CYCLE = "hybrid-dr:cycle"
TAG_POINT = "hybrid-dr:recovery-point"
TAG_AT = "hybrid-dr:at-snapshot"
_NAME_MAX = 80
# A write grant for a whole cycle; a longer one is renewed on 403.
GRANT_SECONDS = 6 * 3600
# The id a sink gives chunks it wrote (the engine needs one; nothing compares them).
_WRITTEN = b"\x01"


def azure_name(*parts: str) -> str:
    """An Azure resource name from `parts`: letters, digits, hyphens, at most 80
    characters, with a hash of the whole that keeps it unique when shortened."""
    text = "-".join(parts)
    clean = "".join(c if c.isalnum() or c == "-" else "-" for c in text).strip("-")
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{clean[:_NAME_MAX - 9]}-{digest}"


class ManagedDisks:
    """One site's managed disks and snapshots, through Resource Manager and Storage.
    Shared by the target's sinks and by restores into Azure (targets/restores/azure)."""

    def __init__(self, settings: AzureSettings, *, service: str = "azure-disk"):
        self.settings = settings
        self.group = settings.resource_group
        self.arm = Arm(settings)
        self._arm_calls = Remote(f"{service}-arm", concurrency=8, errors=errors())
        self.storage = Remote(service, errors=errors())

    async def __aenter__(self) -> ManagedDisks:
        await self.arm.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.arm.__aexit__(None, None, None)

    async def call(self, op: str, fn: Any, what: str) -> Any:
        return await self._arm_calls.call(op, fn, what=what)

    async def operation(self, op: str, start: Any, what: str) -> Any:
        """A long-running operation, started and waited for, as one call."""
        return await self._arm_calls.call(op, lambda: wait(start()), what=what)

    # -- disks ----------------------------------------------------------------------

    async def get_disk(self, name: str) -> Any | None:
        try:
            return await self.call("get-disk", lambda: self.arm.compute.disks.get(
                self.group, name), f"read managed disk {name}")
        except NotFound:
            return None

    async def create_upload_disk(self, name: str, size: int, tags: dict[str, str]) -> Any:
        """A new empty disk in ReadyToUpload state for `size` bytes of data."""
        from azure.mgmt.compute.models import CreationData, Disk
        if size <= 0 or size % PAGE:
            raise InvalidArgument(f"a managed disk's size is a multiple of {PAGE} bytes; "
                                  f"this one is {size}", field="size_bytes")
        body = Disk(location=self.settings.location, tags=tags,
                    creation_data=CreationData(create_option="Upload",
                                               upload_size_bytes=size + vhd.FOOTER_SIZE))
        return await self.operation(
            "create-disk", lambda: self.arm.compute.disks.begin_create_or_update(
                self.group, name, body), f"create managed disk {name} for upload")

    async def tag_disk(self, name: str, tags: dict[str, str]) -> None:
        from azure.mgmt.compute.models import DiskUpdate
        await self.operation("tag-disk", lambda: self.arm.compute.disks.begin_update(
            self.group, name, DiskUpdate(tags=tags)), f"tag managed disk {name}")

    async def grant_write(self, name: str) -> str:
        from azure.mgmt.compute.models import GrantAccessData
        body = GrantAccessData(access="Write", duration_in_seconds=GRANT_SECONDS)
        result = await self.operation(
            "grant-access", lambda: self.arm.compute.disks.begin_grant_access(
                self.group, name, body), f"grant write access to managed disk {name}")
        return result.access_sas

    async def revoke(self, name: str) -> None:
        await self.operation("revoke-access", lambda: self.arm.compute.disks.begin_revoke_access(
            self.group, name), f"end the upload to managed disk {name}")

    async def copy_disk(self, name: str, snapshot_id: str, tags: dict[str, str]) -> Any:
        """A new managed disk with a snapshot's content."""
        from azure.mgmt.compute.models import CreationData, Disk
        body = Disk(location=self.settings.location, tags=tags,
                    creation_data=CreationData(create_option="Copy",
                                               source_resource_id=snapshot_id))
        try:
            return await self.operation(
                "create-disk", lambda: self.arm.compute.disks.begin_create_or_update(
                    self.group, name, body), f"create managed disk {name} from a snapshot")
        except NotFound:
            raise NotFound(f"snapshot {resource_name(snapshot_id)} of this recovery point "
                           f"no longer exists") from None

    # -- snapshots ------------------------------------------------------------------

    async def snapshot(self, disk: Any, name: str, tags: dict[str, str]) -> Any:
        from azure.mgmt.compute.models import CreationData, Snapshot
        body = Snapshot(location=disk.location, incremental=True, tags=tags,
                        creation_data=CreationData(create_option="Copy",
                                                   source_resource_id=disk.id))
        return await self.operation(
            "create-snapshot", lambda: self.arm.compute.snapshots.begin_create_or_update(
                self.group, name, body), f"snapshot managed disk {disk.name}")

    async def get_snapshot(self, snapshot_id: str) -> Any | None:
        group, name = resource_group_of(snapshot_id), resource_name(snapshot_id)
        try:
            return await self.call("get-snapshot", lambda: self.arm.compute.snapshots.get(
                group, name), f"read snapshot {name}")
        except NotFound:
            return None

    async def tag_snapshot(self, snapshot_id: str, tags: dict[str, str]) -> None:
        from azure.mgmt.compute.models import SnapshotUpdate
        group, name = resource_group_of(snapshot_id), resource_name(snapshot_id)
        snap = await self.get_snapshot(snapshot_id)
        if snap is None:
            raise TargetError(f"snapshot {name} vanished before the point was made",
                              reason="snapshot-missing", retryable=False)
        await self.operation("tag-snapshot", lambda: self.arm.compute.snapshots.begin_update(
            group, name, SnapshotUpdate(tags={**(snap.tags or {}), **tags})),
            f"tag snapshot {name}")

    async def delete_snapshot(self, snapshot_id: str) -> bool:
        group, name = resource_group_of(snapshot_id), resource_name(snapshot_id)
        try:
            await self.operation("delete-snapshot", lambda: self.arm.compute.snapshots.begin_delete(
                group, name), f"delete snapshot {name}")
        except NotFound:
            return False
        return True


class PageWriter:
    """Writes a disk's page blob through a write SAS: Put Page in ≤ 4 MiB aligned pieces,
    Clear Pages for zeros. Shared by the sink and by restores into Azure."""

    def __init__(self, disks: ManagedDisks, name: str, url: str):
        from azure.storage.blob.aio import BlobClient
        self.disks, self.name = disks, name
        self.blob = BlobClient.from_blob_url(url, **disks.settings.transport_options())
        self.bytes_written = 0

    async def write(self, offset: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        if len(view) % PAGE:  # the disk's last chunk: pad to a whole page
            view = memoryview(bytes(view) + bytes(PAGE - len(view) % PAGE))
        for pos in range(0, len(view), MAX_PAGE_WRITE):
            piece = view[pos:pos + MAX_PAGE_WRITE]
            start = offset + pos
            await self.disks.storage.call(
                "put-page", lambda p=piece, s=start: self.blob.upload_page(
                    bytes(p), offset=s, length=len(p), validate_content=True),
                what=f"write {len(piece)} bytes at {start} of managed disk {self.name}")
            self.bytes_written += len(piece)

    async def clear(self, offset: int, length: int) -> None:
        length += -length % PAGE
        await self.disks.storage.call(
            "clear-page", lambda: self.blob.clear_page(offset=offset, length=length),
            what=f"clear {length} bytes at {offset} of managed disk {self.name}")

    async def close(self) -> None:
        await self.blob.close()


class AzureDiskSink:
    """One disk of a cycle written into its replica managed disk."""

    can_probe = False  # a page blob cannot say which chunks a past attempt wrote
    paced = False

    def __init__(self, disks: ManagedDisks, request: SinkRequest):
        self.disks, self.request = disks, request
        plan_id = request.plan.rsplit("/", 1)[-1]
        self.replica = azure_name("hdr", plan_id, request.disk.rsplit("/", 1)[-1])
        self.name = f"azure-disk:{disks.group}"
        self.size = request.size
        self.has_previous = False
        # A replica holds older data everywhere: a chunk that is zero now must be
        # cleared, or the old bytes would stay.
        self.writes_zeros = True
        self.full_sync_reason = ""
        self._writer: PageWriter | None = None
        self._disk: Any = None
        self._next = 0
        self._written = 0

    def _tags(self, **extra: str) -> dict[str, str]:
        r = self.request
        return {TAG_PLAN: r.plan, TAG_DISK: r.disk, **extra}

    async def begin(self, checkpoint: Checkpoint | None) -> int:
        r = self.request
        disk = await self.disks.get_disk(self.replica)
        if disk is None:
            disk = await self.disks.create_upload_disk(self.replica, self.size, self._tags())
            fresh = True
        else:
            fresh = False
            data_size = int(disk.disk_size_bytes or 0)
            if data_size and data_size not in (self.size, self.size + vhd.FOOTER_SIZE):
                raise TargetError(
                    f"replica disk {self.replica} has {data_size} bytes, the disk now has "
                    f"{self.size}: a resized disk needs its replica deleted first (or a new "
                    f"plan)", reason="disk-resized", retryable=False)
        tags = disk.tags or {}
        resuming = bool(checkpoint and checkpoint.snapshot_id == r.cycle
                        and tags.get(TAG_CYCLE) == r.cycle)
        url = await self.disks.grant_write(self.replica)
        self._writer = PageWriter(self.disks, self.replica, url)
        if fresh:
            await self._writer.write(self.size, vhd.footer(self.size))
        # A fresh replica reads zeros; any other holds older data wherever it was written.
        self.writes_zeros = not fresh
        if resuming:
            assert checkpoint is not None
            self._next = checkpoint.watermark_chunk
            self.has_previous = bool(r.previous_snapshot_id)
            log.info("resuming replica disk", disk=self.replica, watermark_chunk=self._next)
            return self._next
        at = tags.get(TAG_AT, "")
        if r.previous_snapshot_id and r.source_tracked and \
                at.lower() == r.previous_snapshot_id.lower():
            self.has_previous = True
        elif r.previous_snapshot_id:
            self.full_sync_reason = "replica-diverged"
            log.warning("replica disk does not hold the previous point: writing it whole",
                        disk=self.replica, holds=at or "unknown")
        # From here until the snapshot, the replica equals no point.
        await self.disks.tag_disk(self.replica, self._tags(**{TAG_CYCLE: r.cycle}))
        self._disk = disk
        return 0

    async def previous_id(self, index: int) -> bytes | None:
        return _WRITTEN if self.has_previous else None

    def encode(self, frame, length, prev_id):
        return _WRITTEN, memoryview(frame)[CHUNK_OVERHEAD:CHUNK_OVERHEAD + length]

    async def stored_before(self, cid: bytes) -> bool:
        return False

    async def put(self, index: int, cid: bytes, blob) -> bool:
        assert self._writer is not None
        await self._writer.write(index * self.request.chunk_size, blob)
        self._written += 1
        return True

    async def put_zero(self, index: int, length: int) -> None:
        assert self._writer is not None
        await self._writer.clear(index * self.request.chunk_size, length)

    async def add(self, ids: list[bytes]) -> None:
        self._next += len(ids)

    @property
    def next_chunk(self) -> int:
        return self._next

    async def checkpoint(self) -> Checkpoint:
        # Put Page is durable when it returns; the cycle names the replica's writing.
        return Checkpoint(self._next, snapshot_id=self.request.cycle)

    async def finish(self) -> SinkResult:
        r = self.request
        assert self._writer is not None
        await self._writer.close()
        await self.disks.revoke(self.replica)
        disk = self._disk or await self.disks.get_disk(self.replica)
        cycle_id = r.cycle.rsplit("/", 1)[-1]
        snap = await self.disks.snapshot(
            disk, azure_name(self.replica, cycle_id), self._tags(**{TAG_CYCLE: r.cycle}))
        await self.disks.tag_disk(self.replica, self._tags(**{TAG_AT: snap.id}))
        log.info("replica disk snapshotted", disk=self.replica, snapshot=snap.name,
                 chunks_written=self._written)
        return SinkResult(size=self.size, snapshot_id=snap.id)


def locate(path: str) -> nodes_pb2.AzureDiskTarget:
    return nodes_pb2.AzureDiskTarget()


async def open_target(locator: nodes_pb2.AzureDiskTarget, site: common_pb2.SiteSettings,
                      env: TargetEnv) -> AzureDiskTarget:
    settings = AzureSettings.from_site(site, field="target.site")
    if not settings.location:
        raise InvalidArgument("an azure-disk target site needs a location (the region its "
                              "disks are made in)", field="site.azure.location")
    disks = ManagedDisks(settings)
    await disks.__aenter__()
    return AzureDiskTarget(disks)


class AzureDiskTarget:
    """Recovery points as incremental snapshots of replica managed disks in one
    resource group."""

    repository = None

    def __init__(self, disks: ManagedDisks):
        self.disks = disks
        self.name = f"azure-disk:{disks.group}"

    async def sink(self, request: SinkRequest) -> AzureDiskSink:
        return AzureDiskSink(self.disks, request)

    async def finalize(self, spec: nodes_pb2.FinalizeSpec) -> bool:
        for d in spec.disks:
            await self.disks.tag_snapshot(d.snapshot_id, {TAG_POINT: spec.recovery_point_id})
        return True

    async def delete(self, spec: nodes_pb2.DeleteSpec) -> int:
        deleted = 0
        for snapshot_id in spec.snapshot_ids:
            deleted += await self.disks.delete_snapshot(snapshot_id)
        return deleted

    async def restore(self, spec: nodes_pb2.RestoreSpec, progress: Progress
                      ) -> common_pb2.RestoreResult:
        point = spec.recovery_point.rsplit("/", 1)[-1]
        name = azure_name("hdr-restore", point, spec.disk.rsplit("/", 1)[-1])
        disk = await self.disks.copy_disk(name, spec.snapshot_id,
                                          {TAG_POINT: point, TAG_DISK: spec.disk})
        log.info("managed disk restored", disk=disk.name, snapshot=spec.snapshot_id)
        return common_pb2.RestoreResult(volume_id=disk.id)

    async def verify(self, spec: nodes_pb2.VerifySpec, progress: Progress
                     ) -> common_pb2.VerifyResult:
        raise unsupported(self.name, "verify a recovery point",
                          "managed disks are checked by Azure (every page was put with "
                          "its MD5)")

    async def gc(self, spec: nodes_pb2.GcSpec) -> common_pb2.GcResult:
        raise unsupported(self.name, "collect garbage",
                          "Azure frees a deleted incremental snapshot's pages itself")

    async def close(self) -> None:
        await self.disks.__aexit__(None, None, None)
