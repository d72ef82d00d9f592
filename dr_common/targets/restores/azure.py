"""Restore destination `azure`: a point's disk uploaded into a new managed disk.

Recovery into Azure of a repository point (`fs`, `s3`, `azblob`: chunks, not anything
Azure can boot) has nodes write each disk into a managed disk of the recovery site, by
Azure's direct upload (the same protocol the `azure-disk` target writes its replicas
with, and its code: `ManagedDisks`, `PageWriter`):
- a disk made with `createOption=Upload` for a fixed VHD: the data rounded up to a MiB
  (Azure refuses an upload disk whose virtual size is not a whole number of MiB) and
  to at least 20 MiB (Azure's smallest upload), then the 512-byte footer
  (`dr_common.vhd`);
- `beginGetAccess {access: Write}`, the chunks as Put Page calls (≤ 4 MiB each, a few in
  flight), zero chunks skipped: a new upload disk reads zeros everywhere, so writing
  them would only cost calls; the footer after the data;
- `endGetAccess`: Azure checks the footer and the disk becomes Unattached, ready for a
  VM; then restore_to (restores/__init__.py) reads sampled chunks back through a read
  grant, which `close()` revokes (a disk with a live SAS cannot be attached).
The result's `volume_id` is the disk's resource id, which the recovery provider attaches.
A failed upload deletes the disk.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from dr_common import vhd
from dr_common.azure import AzureSettings
from dr_common.errors import AlreadyExists, DRError, FailedPrecondition, InvalidArgument
from dr_common.targets.azure_disk import ManagedDisks, PageWriter
from dr_common.targets.base import TargetEnv

log = structlog.get_logger()

MiB = 1 << 20
# Azure refuses an upload disk of less than 20 MiB of data (uploadSizeBytes from
# 20 MiB + the footer): a smaller disk is made this large, its tail zeros.
MIN_UPLOAD_DATA = 20 * MiB
# Put Page calls of one disk in flight: restore_to hands chunks over one at a time, and
# one 4 MiB call at a time would leave a WAN link mostly idle; Storage takes far more
# than this per blob.
PAGES_IN_FLIGHT = 4
# States of a disk some VM holds: never replaced, whatever its tags say.
_IN_USE = frozenset({"Attached", "Reserved"})
# States with a grant open (an upload, or the read-back of an attempt that stopped):
# the grant must end before the disk can be deleted.
_GRANTED = frozenset({"ActiveUpload", "ActiveSAS", "ActiveSASFrozen"})


class ManagedDiskWriter:
    """One managed disk being uploaded, front to back (the calls are sequential; Put
    Page calls run a few at a time behind them)."""

    def __init__(self, disks: ManagedDisks, disk_name: str, size: int, tags: dict[str, str],
                 sku: str, *, disk_size: int = 0):
        """`size`: the bytes the restore writes; `disk_size`: a larger disk to make."""
        self.disks = disks
        self.disk_name = disk_name
        self.size = size
        self.padded = max(-(-max(size, disk_size) // MiB) * MiB, MIN_UPLOAD_DATA)
        self.tags = tags
        self.sku = sku
        self.name = f"azure:{disks.group}/{disk_name}"
        self.volume_id = ""
        self._pages: PageWriter | None = None
        self._writing = False  # the write grant is open
        self._reader: Any = None
        self._offset = 0
        self._slots = asyncio.Semaphore(PAGES_IN_FLIGHT)
        self._tasks: set[asyncio.Task] = set()
        self._failed: BaseException | None = None

    # -- opening

    async def open(self) -> None:
        existing = await self.disks.get_disk(self.disk_name)
        if existing is not None:
            await self._replace(existing)
        disk = await self.disks.create_upload_disk(self.disk_name, self.padded, self.tags,
                                                   sku=self.sku)
        self.volume_id = disk.id
        url = await self.disks.grant_write(self.disk_name)
        self._writing = True
        self._pages = PageWriter.on_url(self.disks, self.disk_name, url)

    async def _replace(self, disk: Any) -> None:
        """A disk of this name exists: an earlier attempt of the same restore (it has our
        tags) is deleted and made again — *overwritten*, never reused, because Azure
        grants write access only to a disk that was never written (ReadyToUpload), and
        nothing says what the interrupted attempt wrote. (A restore that did complete is
        never run again: the control plane reuses its result.) Anyone else's disk, or one
        a VM holds, is left alone."""
        tags = disk.tags or {}
        if not self.tags or any(tags.get(k) != v for k, v in self.tags.items()):
            raise AlreadyExists(f"managed disk {self.disk_name} exists in resource group "
                                f"{self.disks.group} and is not this restore's (its tags "
                                f"differ): delete or rename it")
        state = str(getattr(disk, "disk_state", "") or "")
        if state in _IN_USE or getattr(disk, "managed_by", None):
            raise FailedPrecondition(f"managed disk {self.disk_name} is in use ({state or 'attached'}"
                                     f" to {getattr(disk, 'managed_by', '') or 'a VM'}): clean "
                                     f"the execution up before restoring it again")
        if state in _GRANTED:
            await self.disks.revoke(self.disk_name)
        await self.disks.delete_disk(self.disk_name)
        log.info("managed disk of an earlier attempt replaced", disk=self.disk_name,
                 state=state)

    # -- the stream

    def _check(self) -> None:
        if self._failed is not None:
            raise self._failed

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None and self._failed is None:
            self._failed = task.exception()

    async def write(self, data: bytes | memoryview) -> None:
        self._check()
        assert self._pages is not None
        offset, self._offset = self._offset, self._offset + len(data)
        await self._slots.acquire()
        task = asyncio.create_task(self._pages.write(offset, data))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def zeros(self, length: int) -> None:
        # A new upload disk reads zeros: nothing to write.
        self._check()
        self._offset += length

    async def _drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self._check()

    # -- the end

    async def finish(self) -> int:
        await self._drain()
        assert self._pages is not None
        if self._offset != self.size:
            raise FailedPrecondition(f"upload to {self.name}: {self._offset} bytes were "
                                     f"given for a disk of {self.size}")
        await self._pages.write(self.padded, vhd.footer(self.padded))
        pages, self._pages = self._pages, None
        await pages.close()
        await self.disks.revoke(self.disk_name)
        self._writing = False
        disk = await self.disks.get_disk(self.disk_name)
        reported = int(getattr(disk, "disk_size_bytes", 0) or 0) if disk else 0
        # Azure reports the virtual size; some versions count the footer in it.
        return reported - vhd.FOOTER_SIZE if reported == self.padded + vhd.FOOTER_SIZE \
            else reported or self.padded

    async def read(self, offset: int, length: int) -> bytes:
        if self._reader is None:
            from azure.storage.blob.aio import BlobClient
            url = await self.disks.grant_read(self.disk_name)
            self._reader = BlobClient.from_blob_url(
                url, **self.disks.settings.transport_options())

        async def one() -> bytes:
            downloader = await self._reader.download_blob(offset=offset, length=length)
            return await downloader.readall()
        return await self.disks.storage.call(
            "read", one, what=f"read {length} bytes at {offset} of managed disk "
                              f"{self.disk_name}")

    # -- failure and release

    async def abort(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if not self.volume_id:
            return  # nothing of ours was made
        try:
            if self._writing:
                self._writing = False
                await self.disks.revoke(self.disk_name)
            await self.disks.delete_disk(self.disk_name)
        except DRError as exc:  # the upload's own error is the one to report
            log.warning("could not delete a partial managed disk", disk=self.disk_name,
                        error=exc.message)

    async def close(self) -> None:
        if self._pages is not None:
            await self._pages.close()
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await reader.close()
            try:
                await self.disks.revoke(self.disk_name)
            except DRError as exc:  # the grant ends by itself; the VM would not attach
                log.warning("read access to a restored disk not revoked",
                            disk=self.disk_name, error=exc.message)
        await self.disks.__aexit__(None, None, None)


async def open_writer(dest: Any, site: Any, *, size: int, env: TargetEnv) -> ManagedDiskWriter:
    """`dest`: an AzureManagedDisk; `site`: the destination's SiteSettings."""
    settings = AzureSettings.from_site(site, field="destination.site")
    if not settings.location:
        raise InvalidArgument("an Azure recovery site needs a location (the region its disks "
                              "are made in)", field="destination.site.azure.location")
    if not dest.name:
        raise InvalidArgument("the managed disk to restore to needs a name",
                              field="destination.azure.name")
    disks = ManagedDisks(settings, service="azure-restore")
    await disks.__aenter__()
    writer = ManagedDiskWriter(disks, dest.name, size, dict(dest.tags), dest.sku,
                               disk_size=dest.size_bytes)
    try:
        await writer.open()
    except BaseException:
        await writer.close()
        raise
    return writer
