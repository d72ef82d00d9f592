"""Target `azure-disk`: a page blob per protected disk, a blob snapshot per recovery
point, and restores as new managed disks.

Each protected disk has a *replica*: a page blob (a fixed VHD: the data, then a 512-byte
footer, `dr_common.vhd`) named `<prefix>replicas/hdr-<plan>-<disk>.vhd` in a container
of the recovery site's storage account (`azblob://container/prefix` from the site's
path; default container `hybrid-dr-replicas`, made on first use). A cycle writes changed
chunks with Put Page (at most 4 MiB each, 512-byte aligned) and chunks that became zero
with Clear Pages, then takes a blob snapshot, tagged (metadata) with the plan, the disk
and the cycle: that is the disk's part of the recovery point. Blob snapshots of a page
blob are billed for the pages that differ, so a point costs what changed. The finalize
step writes the point's record `<prefix>replicas/points/<id>.json` with
`If-None-Match: *`, the last write of a cycle.
A restore copies the point's snapshot to a blob and imports it as a new managed disk
(`createOption=Import`), then deletes the copy.

Why not a managed disk written through direct upload: Azure grants write access to a
managed disk only while it is `ReadyToUpload`, i.e. once, when it is created by upload;
after the upload ends (`endGetAccess`) a managed disk cannot be written from outside a
VM again, so a replica that takes each cycle's changes has to be a page blob.

The replica must hold exactly the previous point for an incremental to be right (clean
chunks are not written: they are whatever the replica holds). The replica's metadata
`hybrid_dr_at_snapshot` says which snapshot it equals; it is cleared when a cycle starts
writing and set when its snapshot is taken. A replica that does not equal the previous
point (a cycle failed midway; the tag is missing or another) is written in full, zeros
included, and says so (`replica-diverged`).

Every call goes through the remote-call layer: ARM calls through one `Remote`, Storage
through another; throttling (429, ServerBusy) is a signal for the engine's adaptive
concurrency, not a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from typing import Any
from urllib.parse import quote

import structlog

from dr_common import vhd
from dr_common.azure import (Arm, AzureSettings, blob_service, errors, storage_account_id, wait)
from dr_common.errors import AlreadyExists, InvalidArgument, NotFound, TargetError
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
TAG_POINT = "hybrid-dr:recovery-point"
# Blob metadata names are C# identifiers: no hyphens or colons.
META_PLAN, META_DISK, META_CYCLE = "hybrid_dr_plan", "hybrid_dr_disk", "hybrid_dr_cycle"
META_AT = "hybrid_dr_at_snapshot"
DEFAULT_CONTAINER = "hybrid-dr-replicas"
# Everything under the site's prefix goes under this, so an azblob repository at the
# same prefix (its own chunks/, points/) never meets a replica's names.
LAYOUT = "replicas/"
SCHEME = "azblob://"
_NAME_MAX = 80
# A write grant for a restore's upload; a longer one is renewed on 403.
GRANT_SECONDS = 6 * 3600
# The longest run of zero chunks cleared in one call.
MAX_CLEAR = 256 << 20
# How long a restore waits for the server-side copy of a snapshot to finish.
COPY_TIMEOUT = 6 * 3600
# The id a sink gives chunks it wrote (the engine needs one; nothing compares them).
_WRITTEN = b"\x01"


def azure_name(*parts: str, limit: int = _NAME_MAX) -> str:
    """An Azure resource name from `parts`: letters, digits, hyphens, at most `limit`
    characters (80: disks, NICs; VMs have less), with a hash of the whole that keeps it
    unique when shortened."""
    text = "-".join(parts)
    clean = "".join(c if c.isalnum() or c == "-" else "-" for c in text).strip("-")
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{clean[:limit - 9]}-{digest}"


def _sku(name: str) -> Any:
    """A disk's SKU, or None: Azure's default (Standard_LRS)."""
    from azure.mgmt.compute.models import DiskSku
    return DiskSku(name=name) if name else None


class ManagedDisks:
    """One site's managed disks and snapshots, through Resource Manager and Storage.
    Shared by the target's sinks and by restores into Azure (targets/restores/azure)."""

    def __init__(self, settings: AzureSettings, *, service: str = "azure-disk",
                 arm_calls: Any = None, on_response: Any = None):
        """`arm_calls`: what ARM calls go through when the caller shares one (recovery:
        its site's limiter, a Remote's `call`, so throttling slows every execution
        there); else a Remote of its own. `on_response`: Arm's."""
        self.settings = settings
        self.group = settings.resource_group
        self.arm = Arm(settings, on_response=on_response)
        self._arm_calls = arm_calls or Remote(f"{service}-arm", concurrency=8,
                                              errors=errors())
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

    async def create_upload_disk(self, name: str, size: int, tags: dict[str, str], *,
                                 sku: str = "") -> Any:
        """A new empty disk in ReadyToUpload state for `size` bytes of data."""
        from azure.mgmt.compute.models import CreationData, Disk
        if size <= 0 or size % PAGE:
            raise InvalidArgument(f"a managed disk's size is a multiple of {PAGE} bytes; "
                                  f"this one is {size}", field="size_bytes")
        body = Disk(location=self.settings.location, tags=tags, sku=_sku(sku),
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
        return await self._grant(name, "Write")

    async def grant_read(self, name: str) -> str:
        """A read SAS of a disk that is not being uploaded (restores read back what
        they wrote)."""
        return await self._grant(name, "Read")

    async def _grant(self, name: str, access: str) -> str:
        from azure.mgmt.compute.models import GrantAccessData
        body = GrantAccessData(access=access, duration_in_seconds=GRANT_SECONDS)
        result = await self.operation(
            "grant-access", lambda: self.arm.compute.disks.begin_grant_access(
                self.group, name, body),
            f"grant {access.lower()} access to managed disk {name}")
        return result.access_sas

    async def delete_disk(self, name: str) -> bool:
        """Deletes a disk of the site's first resource group; False if it was already
        gone."""
        try:
            await self.operation("delete-disk", lambda: self.arm.compute.disks.begin_delete(
                self.group, name), f"delete managed disk {name}")
        except NotFound:
            return False
        return True

    async def revoke(self, name: str) -> None:
        await self.operation("revoke-access", lambda: self.arm.compute.disks.begin_revoke_access(
            self.group, name), f"end the upload to managed disk {name}")

    async def import_disk(self, name: str, source_uri: str, tags: dict[str, str], *,
                          sku: str = "") -> Any:
        """A new managed disk with the content of a VHD page blob of the site's storage
        account (`source_uri` without a SAS: ARM reads it as the account's owner)."""
        from azure.mgmt.compute.models import CreationData, Disk
        body = Disk(location=self.settings.location, tags=tags, sku=_sku(sku),
                    creation_data=CreationData(
                        create_option="Import", source_uri=source_uri,
                        storage_account_id=storage_account_id(self.settings)))
        return await self.operation(
            "create-disk", lambda: self.arm.compute.disks.begin_create_or_update(
                self.group, name, body), f"import managed disk {name} from {source_uri}")


class PageWriter:
    """Writes a page blob: Put Page in <= 4 MiB aligned pieces, Clear Pages for zeros.
    Shared by the sink (a replica in the storage account) and by restores into Azure
    (a new managed disk's write SAS: `PageWriter.on_url`)."""

    def __init__(self, storage: Remote, name: str, blob: Any):
        self.storage, self.name, self.blob = storage, name, blob
        self.bytes_written = 0

    @classmethod
    def on_url(cls, disks: ManagedDisks, name: str, url: str) -> PageWriter:
        from azure.storage.blob.aio import BlobClient
        return cls(disks.storage, name,
                   BlobClient.from_blob_url(url, **disks.settings.transport_options()))

    async def write(self, offset: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        if len(view) % PAGE:  # the disk's last chunk: pad to a whole page
            view = memoryview(bytes(view) + bytes(PAGE - len(view) % PAGE))
        for pos in range(0, len(view), MAX_PAGE_WRITE):
            piece = view[pos:pos + MAX_PAGE_WRITE]
            start = offset + pos
            await self.storage.call(
                "put-page", lambda p=piece, s=start: self.blob.upload_page(
                    bytes(p), offset=s, length=len(p), validate_content=True),
                what=f"write {len(piece)} bytes at {start} of {self.name}")
            self.bytes_written += len(piece)

    async def clear(self, offset: int, length: int) -> None:
        length += -length % PAGE
        await self.storage.call(
            "clear-page", lambda: self.blob.clear_page(offset=offset, length=length),
            what=f"clear {length} bytes at {offset} of {self.name}")

    async def close(self) -> None:
        await self.blob.close()


def parse_location(location: str) -> tuple[str, str]:
    """(container, blob name prefix) of `azblob://container/prefix`; "" is the default
    container."""
    if not location:
        return DEFAULT_CONTAINER, ""
    if not location.startswith(SCHEME):
        raise InvalidArgument(f"an azure-disk target's path is {SCHEME}container/prefix; "
                              f"got {location!r}", field="target.path")
    container, _, prefix = location[len(SCHEME):].partition("/")
    if not container:
        raise InvalidArgument(f"no container in {location!r}", field="target.path")
    return container, prefix.strip("/") + "/" if prefix.strip("/") else ""


def snapshot_ref(container: str, blob: str, snapshot: str) -> str:
    """A recovery point's disk as drctl shows it: the replica's blob at one snapshot."""
    return f"{SCHEME}{container}/{blob}?snapshot={quote(snapshot)}"


def parse_snapshot_ref(ref: str) -> tuple[str, str, str]:
    """(container, blob, snapshot) of a `snapshot_ref`."""
    from urllib.parse import unquote
    path, _, query = ref.removeprefix(SCHEME).partition("?snapshot=")
    container, _, blob = path.partition("/")
    if not (ref.startswith(SCHEME) and container and blob and query):
        raise InvalidArgument(f"not an azure-disk snapshot: {ref!r}", field="snapshot_id")
    return container, blob, unquote(query)


class Replicas:
    """The replicas' container in the recovery site's storage account."""

    def __init__(self, settings: AzureSettings, location: str, *,
                 service: str = "azure-disk"):
        self.settings = settings
        self.container_name, self.prefix = parse_location(location)
        self.storage = Remote(service, errors=errors())
        self._stack = contextlib.AsyncExitStack()
        self.container: Any = None

    async def __aenter__(self) -> Replicas:
        self.service = await self._stack.enter_async_context(
            blob_service(self.settings, field="target.site.azure.storage_account_url"))
        self.container = self.service.get_container_client(self.container_name)
        with contextlib.suppress(AlreadyExists):  # the usual case
            await self.storage.call("create-container", self.container.create_container,
                                    what=f"create container {self.container_name} in "
                                         f"storage account {self.settings.storage_account_url}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def blob(self, name: str, snapshot: str | None = None, container: str = "") -> Any:
        return self.service.get_blob_client(container or self.container_name, name,
                                            snapshot=snapshot)

    async def properties(self, name: str) -> Any | None:
        try:
            return await self.storage.call(
                "get-properties", self.blob(name).get_blob_properties,
                what=f"read replica {name}")
        except NotFound:
            return None

    async def delete_snapshot(self, ref: str) -> bool:
        container, blob, snapshot = parse_snapshot_ref(ref)
        try:
            await self.storage.call("delete-snapshot",
                                    self.blob(blob, snapshot, container).delete_blob,
                                    what=f"delete snapshot {snapshot} of {blob}")
        except NotFound:
            return False
        return True

    async def copy_out(self, ref: str, name: str) -> Any:
        """A new blob `name` with the content of snapshot `ref` (a server-side copy,
        waited for)."""
        container, blob, snapshot = parse_snapshot_ref(ref)
        source_blob = self.blob(blob, snapshot, container)
        try:
            await self.storage.call("get-properties", source_blob.get_blob_properties,
                                    what=f"read snapshot {snapshot} of {blob}")
        except NotFound:
            raise NotFound(f"snapshot {snapshot} of replica {blob} no longer exists: the "
                           f"recovery point cannot be restored") from None
        dest = self.blob(name)
        source = source_blob.url
        await self.storage.call("copy", lambda: dest.start_copy_from_url(source),
                                what=f"copy snapshot {snapshot} of {blob} to {name}")
        deadline = time.monotonic() + COPY_TIMEOUT
        while True:
            props = await self.storage.call("get-properties", dest.get_blob_properties,
                                            what=f"read {name}")
            status = props.copy.status if props.copy else "success"
            if status == "success":
                return dest
            if status != "pending" or time.monotonic() > deadline:
                raise TargetError(f"copying snapshot {snapshot} of {blob} ended {status}: "
                                  f"{props.copy.status_description or ''}", retryable=False)
            await asyncio.sleep(1)  # Azure's copy has no completion callback; poll it


async def import_snapshot(replicas: Replicas, disks: ManagedDisks, ref: str, name: str,
                          tags: dict[str, str], *, sku: str = "") -> Any:
    """Managed disk `name` with the content of snapshot `ref`: copied to a staging blob
    beside its replica (ARM imports blobs, not blob snapshots; the copy is server-side),
    imported (`createOption=Import`), the copy deleted. Restores of this target and
    recovery into Azure both make their disks so; no byte goes through the caller."""
    _, blob, _ = parse_snapshot_ref(ref)
    folder = blob.rsplit("/", 1)[0] + "/" if "/" in blob else ""
    staging = f"{folder}restores/{name}.vhd"
    copy = await replicas.copy_out(ref, staging)
    try:
        return await disks.import_disk(name, copy.url.split("?", 1)[0], tags, sku=sku)
    finally:
        with contextlib.suppress(Exception):  # a leftover copy costs, breaks nothing
            await replicas.storage.call("delete-blob", copy.delete_blob,
                                        what=f"delete staging blob {staging}")


class AzureDiskSink:
    """One disk of a cycle written into its replica page blob."""

    can_probe = False  # a page blob cannot say which chunks a past attempt wrote
    paced = False

    def __init__(self, replicas: Replicas, request: SinkRequest):
        self.replicas, self.request = replicas, request
        plan_id = request.plan.rsplit("/", 1)[-1]
        self.replica = (f"{replicas.prefix}{LAYOUT}"
                        f"{azure_name('hdr', plan_id, request.disk.rsplit('/', 1)[-1])}.vhd")
        self.name = f"azure-disk:{replicas.container_name}"
        self.size = request.size
        self.has_previous = False
        # A replica holds older data everywhere: a chunk that is zero now must be
        # cleared, or the old bytes would stay.
        self.writes_zeros = True
        self.full_sync_reason = ""
        self._writer: PageWriter | None = None
        self._next = 0
        self._written = 0
        self._zeros: tuple[int, int] | None = None  # a run of zero chunks not yet cleared
        self._zeros_lock = asyncio.Lock()

    def _meta(self, **extra: str) -> dict[str, str]:
        r = self.request
        return {META_PLAN: r.plan, META_DISK: r.disk, **extra}

    async def begin(self, checkpoint: Checkpoint | None) -> int:
        r = self.request
        blob = self.replicas.blob(self.replica)
        self._writer = PageWriter(self.replicas.storage, f"replica {self.replica}", blob)
        props = await self.replicas.properties(self.replica)
        fresh = props is None
        if fresh:
            await self.replicas.storage.call(
                "create-blob", lambda: blob.create_page_blob(
                    self.size + vhd.FOOTER_SIZE, metadata=self._meta(**{META_CYCLE: r.cycle})),
                what=f"create replica {self.replica}")
            await self._writer.write(self.size, vhd.footer(self.size))
            meta: dict[str, str] = {}
        else:
            if props.size != self.size + vhd.FOOTER_SIZE:
                raise TargetError(
                    f"replica {self.replica} holds {props.size - vhd.FOOTER_SIZE} bytes, the "
                    f"disk now has {self.size}: a resized disk needs its replica deleted "
                    f"first (or a new plan)", reason="disk-resized", retryable=False)
            meta = dict(props.metadata or {})
        # A fresh replica reads zeros; any other holds older data wherever it was written.
        self.writes_zeros = not fresh
        if checkpoint and checkpoint.snapshot_id == r.cycle and meta.get(META_CYCLE) == r.cycle:
            self._next = checkpoint.watermark_chunk
            self.has_previous = bool(r.previous_snapshot_id)
            log.info("resuming replica", replica=self.replica, watermark_chunk=self._next)
            return self._next
        at = meta.get(META_AT, "")
        # An untracked source is read whole anyway: every chunk is written, nothing to label.
        if r.previous_snapshot_id and r.source_tracked and at == r.previous_snapshot_id:
            self.has_previous = True
        elif r.previous_snapshot_id and r.source_tracked:
            self.full_sync_reason = "replica-diverged"
            log.warning("replica does not hold the previous point: writing it whole",
                        replica=self.replica, holds=at or "unknown")
        if not fresh:  # from here until the snapshot, the replica equals no point
            await self.replicas.storage.call(
                "set-metadata", lambda: blob.set_blob_metadata(
                    self._meta(**{META_CYCLE: r.cycle})),
                what=f"mark replica {self.replica} as being written")
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
        """Zero chunks next to each other become one Clear Pages call (a full sync over
        an old replica has runs of thousands); the run is cleared when it stops
        growing, at a checkpoint and at the end, so a checkpoint never covers a chunk
        not yet cleared."""
        start = index * self.request.chunk_size
        async with self._zeros_lock:
            run = self._zeros
            if run and run[1] == start and run[1] - run[0] < MAX_CLEAR:
                self._zeros = (run[0], start + length)
                return
            self._zeros = (start, start + length)
        if run:
            await self._clear(run)

    async def _clear(self, run: tuple[int, int]) -> None:
        assert self._writer is not None
        await self._writer.clear(run[0], run[1] - run[0])

    async def _flush_zeros(self) -> None:
        async with self._zeros_lock:
            run, self._zeros = self._zeros, None
        if run:
            await self._clear(run)

    async def add(self, ids: list[bytes]) -> None:
        self._next += len(ids)

    @property
    def next_chunk(self) -> int:
        return self._next

    async def checkpoint(self) -> Checkpoint:
        # Put Page is durable when it returns; the cycle names the replica's writing.
        await self._flush_zeros()
        return Checkpoint(self._next, snapshot_id=self.request.cycle)

    async def finish(self) -> SinkResult:
        r = self.request
        await self._flush_zeros()
        blob = self.replicas.blob(self.replica)
        snap = await self.replicas.storage.call(
            "snapshot", lambda: blob.create_snapshot(metadata=self._meta(**{META_CYCLE: r.cycle})),
            what=f"snapshot replica {self.replica}")
        ref = snapshot_ref(self.replicas.container_name, self.replica, snap["snapshot"])
        await self.replicas.storage.call(
            "set-metadata", lambda: blob.set_blob_metadata(self._meta(**{META_AT: ref})),
            what=f"mark replica {self.replica} as holding {ref}")
        log.info("replica snapshotted", replica=self.replica, snapshot=snap["snapshot"],
                 chunks_written=self._written)
        return SinkResult(size=self.size, snapshot_id=ref)


def locate(path: str) -> nodes_pb2.AzureDiskTarget:
    parse_location(path)  # refused here, when the plan is made, not at the first cycle
    return nodes_pb2.AzureDiskTarget(location=path)


async def open_target(locator: nodes_pb2.AzureDiskTarget, site: common_pb2.SiteSettings,
                      env: TargetEnv) -> AzureDiskTarget:
    settings = AzureSettings.from_site(site, field="target.site")
    if not settings.location:
        raise InvalidArgument("an azure-disk target site needs a location (the region its "
                              "disks are restored in)", field="site.azure.location")
    async with contextlib.AsyncExitStack() as stack:
        replicas = await stack.enter_async_context(Replicas(settings, locator.location))
        disks = await stack.enter_async_context(ManagedDisks(settings))
        target = AzureDiskTarget(replicas, disks, stack.pop_all())
    return target


class AzureDiskTarget:
    """Recovery points as blob snapshots of replica page blobs in one container; restores
    as managed disks in the site's first resource group."""

    repository = None

    def __init__(self, replicas: Replicas, disks: ManagedDisks,
                 stack: contextlib.AsyncExitStack):
        self.replicas, self.disks, self._stack = replicas, disks, stack
        self.name = f"azure-disk:{replicas.container_name}"

    async def sink(self, request: SinkRequest) -> AzureDiskSink:
        return AzureDiskSink(self.replicas, request)

    def _record(self, point_id: str) -> str:
        return f"{self.replicas.prefix}{LAYOUT}points/{point_id}.json"

    async def finalize(self, spec: nodes_pb2.FinalizeSpec) -> bool:
        """The point's record, written last and once (If-None-Match: *): a retried
        finalize finds its own record, another writer's is refused."""
        body = json.dumps({"plan": spec.plan, "cycle": spec.cycle,
                           "disks": {d.disk: d.snapshot_id for d in spec.disks}},
                          sort_keys=True).encode()
        blob = self.replicas.blob(self._record(spec.recovery_point_id))
        try:
            await self.replicas.storage.call(
                "put-point", lambda: blob.upload_blob(body, overwrite=False),
                what=f"write the record of recovery point {spec.recovery_point_id}")
        except AlreadyExists:
            existing = await self.replicas.storage.call(
                "get-point", lambda: _read_all(blob),
                what=f"read the record of recovery point {spec.recovery_point_id}")
            if existing != body:
                raise TargetError(f"recovery point {spec.recovery_point_id} already has "
                                  f"another record in {self.name}", reason="point-exists",
                                  retryable=False) from None
        return True

    async def delete(self, spec: nodes_pb2.DeleteSpec) -> int:
        deleted = 0
        for ref in spec.snapshot_ids:
            deleted += await self.replicas.delete_snapshot(ref)
        if spec.recovery_point_id:
            with contextlib.suppress(NotFound):
                blob = self.replicas.blob(self._record(spec.recovery_point_id))
                await self.replicas.storage.call(
                    "delete-point", blob.delete_blob,
                    what=f"delete the record of recovery point {spec.recovery_point_id}")
        return deleted

    async def restore(self, spec: nodes_pb2.RestoreSpec, progress: Progress
                      ) -> common_pb2.RestoreResult:
        """A new managed disk from the point's snapshot: copied to a blob of its own (ARM
        imports blobs, not blob snapshots), imported, the copy deleted."""
        point = spec.recovery_point.rsplit("/", 1)[-1]
        name = azure_name("hdr-restore", point, spec.disk.rsplit("/", 1)[-1])
        disk = await import_snapshot(self.replicas, self.disks, spec.snapshot_id, name,
                                     {TAG_POINT: point, TAG_DISK: spec.disk})
        log.info("managed disk restored", disk=disk.name, snapshot=spec.snapshot_id)
        return common_pb2.RestoreResult(volume_id=disk.id)

    async def verify(self, spec: nodes_pb2.VerifySpec, progress: Progress
                     ) -> common_pb2.VerifyResult:
        raise unsupported(self.name, "verify a recovery point",
                          "Azure checks the replicas (every page was put with its MD5)")

    async def gc(self, spec: nodes_pb2.GcSpec) -> common_pb2.GcResult:
        raise unsupported(self.name, "collect garbage",
                          "Azure frees the pages of a deleted blob snapshot itself")

    async def close(self) -> None:
        await self._stack.aclose()


async def _read_all(blob: Any) -> bytes:
    stream = await blob.download_blob()
    return await stream.readall()
