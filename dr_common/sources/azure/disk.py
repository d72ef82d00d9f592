"""`AzureDisk`: one incremental snapshot of a managed disk, read through a read SAS.

Opening grants read access to the cycle's snapshot (`beginGetAccess`, a SAS URL to a
page blob) and, for an incremental, to the previous point's snapshot too; closing
revokes both. Extents come from the page blob protocol:
- first cycle (no previous snapshot): `Get Page Ranges` lists the valid pages, which
  are data; everything else was never written and is zero (never read, never sent);
- later cycles: `Get Page Ranges` with `x-ms-previous-snapshot-url` (the previous
  snapshot's SAS URL) lists the pages written since then as data and the pages cleared
  since then as zero; everything else is *clean*: identical to the previous point.
A previous snapshot that is gone (deleted by hand) is a full sync of the valid pages,
labelled `previous-snapshot-missing`.

A SAS has an end time; a cycle that outlasts it (a slow link, a large first sync)
gets 403 from Storage: the disk asks for a new grant once and goes on.

Threads: the engine calls `readinto()` from worker threads; the aio clients live on
the event loop, and each read is submitted to it and waited for.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import structlog

from dr_common.azure import Arm, AzureSettings, resource_group_of, resource_name
from dr_common.errors import DRError, NotFound, PermissionDenied, SourceError, Unauthenticated
from dr_common.sources.azure.calls import STORAGE, arm, operation
from dr_common.sources.base import Extent

log = structlog.get_logger()

# How long a read grant lasts. Long enough for most cycles; an expired one is renewed.
GRANT_SECONDS = 3600
# Page lists are asked for this much of the disk at a time: Azure recommends
# segmenting large disks' page-range queries (a fragmented disk's list is long).
_LIST_SPAN = 64 << 30


def to_extents(data: list[tuple[int, int]], size: int, *, cleared: list[tuple[int, int]],
               incremental: bool) -> list[Extent]:
    """Extents covering [0, size): `data` ranges (start, end) are read; `cleared` ones
    are zero; the rest is zero (full sync: never written) or clean (incremental)."""
    marks = sorted([(s, e, "data") for s, e in data] + [(s, e, "zero") for s, e in cleared])
    out: list[Extent] = []

    def add(start: int, end: int, kind: str) -> None:
        if end <= start:
            return
        if kind == "gap":
            zero, clean = not incremental, incremental
        else:
            zero, clean = kind == "zero", False
        last = out[-1] if out else None
        if last is not None and last.end == start and (last.zero, last.clean) == (zero, clean):
            out[-1] = Extent(last.start, end - last.start, zero=zero, clean=clean)
        else:
            out.append(Extent(start, end - start, zero=zero, clean=clean))

    pos = 0
    for start, end, kind in marks:
        start, end = max(start, pos), min(end, size)
        add(pos, start, "gap")
        add(start, end, kind)
        pos = max(pos, end)
    add(pos, size, "gap")
    return out


class _Grant:
    """Read access to one snapshot: its SAS URL, renewed when it expires."""

    def __init__(self, arm_: Arm, snapshot_id: str):
        self.arm, self.id = arm_, snapshot_id
        self.group, self.name = resource_group_of(snapshot_id), resource_name(snapshot_id)
        self.url = ""
        self.granted = False

    async def grant(self) -> str:
        from azure.mgmt.compute.models import GrantAccessData
        body = GrantAccessData(access="Read", duration_in_seconds=GRANT_SECONDS)
        result = await operation(
            "grant-access",
            lambda: self.arm.compute.snapshots.begin_grant_access(self.group, self.name, body),
            f"grant read access to snapshot {self.name}")
        self.url, self.granted = result.access_sas, True
        return self.url

    async def revoke(self) -> None:
        if self.granted:
            self.granted = False
            await operation(
                "revoke-access",
                lambda: self.arm.compute.snapshots.begin_revoke_access(self.group, self.name),
                f"revoke access to snapshot {self.name}")


class _Into:
    """A file-like writer into a memoryview (what StorageStreamDownloader.readinto wants)."""

    def __init__(self, view: memoryview):
        self.view, self.pos = view, 0

    def write(self, data: bytes) -> int:
        n = len(data)
        self.view[self.pos:self.pos + n] = data
        self.pos += n
        return n


class AzureDisk:
    """One incremental snapshot opened for reading. Open it with `await
    AzureDisk.open(...)` on the event loop; `extents()` and `readinto()` may then be
    called from worker threads."""

    tracking = "changed-blocks"

    def __init__(self, settings: AzureSettings, *, snapshot_id: str,
                 previous_snapshot_id: str, disk_id: str, loop: asyncio.AbstractEventLoop):
        self.settings = settings
        self.snapshot_id, self.previous_snapshot_id = snapshot_id, previous_snapshot_id
        self.name = f"{resource_name(disk_id) or disk_id} at {resource_name(snapshot_id)}"
        self.size = 0
        self.full_sync_reason = ""
        self.bytes_read = 0
        self._loop = loop
        self._arm = Arm(settings)
        self._grant: _Grant | None = None
        self._previous: _Grant | None = None
        self._blob: Any = None
        self._renew = asyncio.Lock()
        self._closed = threading.Event()
        self._extents: list[Extent] = []

    @classmethod
    async def open(cls, settings: AzureSettings, **kw: Any) -> AzureDisk:
        disk = cls(settings, loop=asyncio.get_running_loop(), **kw)
        try:
            await disk._open()
        except BaseException:
            await disk._release()
            raise
        return disk

    async def _open(self) -> None:
        await self._arm.__aenter__()
        group, name = resource_group_of(self.snapshot_id), resource_name(self.snapshot_id)
        try:
            snap = await arm("get-snapshot", lambda: self._arm.compute.snapshots.get(group, name),
                             f"read snapshot {name}")
        except NotFound:
            raise SourceError(f"the cycle's snapshot {name} is gone (deleted by hand?); the "
                              f"next cycle takes another", reason="snapshot-missing") from None
        self.size = int(snap.disk_size_bytes or (snap.disk_size_gb or 0) << 30)
        self._grant = _Grant(self._arm, self.snapshot_id)
        await self._grant.grant()
        self._blob = self._blob_client(self._grant.url)
        previous_url = await self._previous_url()
        if previous_url:
            data, cleared = await self._page_ranges(previous_url)
        else:
            data, cleared = await self._page_ranges("")
            self.full_sync_reason = self.full_sync_reason or "first-cycle"
        self._extents = to_extents(data, self.size, cleared=cleared,
                                   incremental=not self.full_sync_reason)
        if self.full_sync_reason:
            log.info("azure disk full sync", disk=self.name, reason=self.full_sync_reason)

    async def _previous_url(self) -> str:
        """A read SAS of the previous point's snapshot, or "" (and why) when there is
        none to diff against."""
        if not self.previous_snapshot_id:
            return ""
        self._previous = _Grant(self._arm, self.previous_snapshot_id)
        try:
            return await self._previous.grant()
        except NotFound:
            self._previous = None
            self.full_sync_reason = "previous-snapshot-missing"
            return ""

    def _blob_client(self, url: str) -> Any:
        from azure.storage.blob.aio import BlobClient
        return BlobClient.from_blob_url(url, **self.settings.transport_options())

    async def _page_ranges(self, previous_url: str) -> tuple[list[tuple[int, int]],
                                                               list[tuple[int, int]]]:
        """(data, cleared) ranges as (start, end): valid pages (full sync) or the pages
        changed and cleared since `previous_url`'s snapshot."""
        data: list[tuple[int, int]] = []
        cleared: list[tuple[int, int]] = []
        for offset in range(0, self.size, _LIST_SPAN):
            length = min(_LIST_SPAN, self.size - offset)

            async def one(offset: int = offset, length: int = length) -> Any:
                if previous_url:
                    return await self._blob.get_page_range_diff_for_managed_disk(
                        previous_url, offset=offset, length=length)
                return await self._blob.get_page_ranges(offset=offset, length=length)

            ranges, clears = await self._storage("page-ranges", one,
                                                 f"list the changed pages of {self.name}")
            data += [(r["start"], r["end"] + 1) for r in ranges]
            cleared += [(r["start"], r["end"] + 1) for r in clears]
        return data, cleared

    async def _storage(self, op: str, fn: Any, what: str) -> Any:
        """A Storage call through the SAS, renewing the grant once if it expired."""
        try:
            return await STORAGE.call(op, fn, what=what)
        except (PermissionDenied, Unauthenticated):
            pass
        await self._regrant()
        return await STORAGE.call(op, fn, what=what)

    async def _regrant(self) -> None:
        stale = self._blob
        async with self._renew:
            if self._blob is not stale:
                return  # a sibling read renewed it already
            log.info("azure read access expired; granted again", disk=self.name)
            assert self._grant is not None
            await self._grant.grant()
            self._blob = self._blob_client(self._grant.url)
            await stale.close()

    def extents(self) -> list[Extent]:
        return list(self._extents)

    def readinto(self, offset: int, buf: memoryview) -> int:
        if self._closed.is_set():
            raise SourceError(f"{self.name} was closed", reason="source-closed",
                              retryable=False)
        view = memoryview(buf)
        n = min(len(view), max(0, self.size - offset))
        if n == 0:
            return 0

        async def read() -> int:
            downloader = await self._blob.download_blob(offset=offset, length=n)
            got = await downloader.readinto(_Into(view[:n]))
            if got != n:
                raise SourceError(f"{self.name}: short read at {offset} ({got} of {n} "
                                  f"bytes)", reason="source-unavailable")
            return got

        got = asyncio.run_coroutine_threadsafe(
            self._storage("read", read, f"read {n} bytes at {offset} of {self.name}"),
            self._loop).result()
        self.bytes_read += got
        return got

    async def _release(self) -> None:
        for grant in (self._grant, self._previous):
            if grant is not None:
                try:
                    await grant.revoke()
                except DRError as e:  # the grant ends by itself; say so, don't fail
                    log.warning("azure access not revoked", snapshot=grant.name,
                                error=e.message)
        if self._blob is not None:
            await self._blob.close()
        await self._arm.__aexit__(None, None, None)

    def close(self) -> None:
        """Revokes the grants (from a worker thread, as the engine closes sources)."""
        if self._closed.is_set():
            return
        self._closed.set()
        asyncio.run_coroutine_threadsafe(self._release(), self._loop).result()

    def __enter__(self) -> AzureDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
