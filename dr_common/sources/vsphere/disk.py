"""One virtual disk at a cycle's VM snapshot: its extents from CBT, its bytes from the
datastore.

While the product's snapshot is the VM's only one, the VM writes to a delta disk and
the base `-flat.vmdk` is frozen at the snapshot: it is read with HTTPS Range GETs over
the datastore's file access (`/folder`), as virt-v2v's vCenter input does when VDDK is
not there. A VM with other snapshots has a base frozen at the *oldest* one, not at ours:
reading it would give wrong data, so that is an error naming the snapshots.

Extents come from `QueryChangedDiskAreas` against the change id the previous point
recorded: changed areas are data, the rest is clean (unchanged since that point). A
first cycle asks with `"*"`: the allocated areas are data, the rest zero (never read).
Lost tracking — the change id unknown to vSphere (CBT reset, a VM restored from backup)
or the disk resized — is a full sync of this disk's allocated areas only, labelled.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from dr_common.errors import DRError, SourceError
from dr_common.remote import Remote
from dr_common.sources.base import Extent
from dr_common.sources.vsphere.snapshots import find_vm, is_tracking_lost, snapshots_of
from dr_common.sources.vsphere.inventory import virtual_disks
from dr_common.vsphere import Session, VsphereSettings, flat_file, vsphere_error

_REMOTE = Remote("vsphere-source")


def datacenter_of(session: Session, obj: Any) -> str:
    from pyVmomi import vim
    while obj is not None and not isinstance(obj, vim.Datacenter):
        obj = session.get(obj, ["parent"]).get("parent")
    if obj is None:
        raise SourceError("the VM is in no datacenter", reason="datacenter-not-found",
                          retryable=False)
    return session.get(obj, ["name"])["name"]


def changed_areas(session: Session, vm: Any, snapshot: Any, key: int, size: int,
                  change_id: str) -> list[tuple[int, int]]:
    """(start, length) of the areas QueryChangedDiskAreas reports, over the whole disk
    (it answers for part of the disk at a time)."""
    areas: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        info = vm.QueryChangedDiskAreas(snapshot=snapshot, deviceKey=key, startOffset=pos,
                                        changeId=change_id)
        areas += [(int(a.start), int(a.length)) for a in info.changedArea or ()]
        end = int(info.startOffset) + int(info.length)
        if end <= pos:
            raise SourceError(f"QueryChangedDiskAreas made no progress at offset {pos}",
                              reason="vsphere-cbt-error", retryable=False)
        pos = end
    return areas


def to_extents(areas: list[tuple[int, int]], size: int, *, gaps_clean: bool) -> list[Extent]:
    """Extents covering the disk: the areas as data, the gaps clean (incremental) or
    zero (a first or full sync: unallocated)."""
    out: list[Extent] = []
    pos = 0
    for start, length in sorted(areas):
        start, end = max(start, pos), min(start + length, size)
        if end <= start:
            continue
        if start > pos:
            out.append(Extent(pos, start - pos, zero=not gaps_clean, clean=gaps_clean))
        if out and not out[-1].zero and not out[-1].clean and out[-1].end == start:
            out[-1] = Extent(out[-1].start, end - out[-1].start, zero=False)
        else:
            out.append(Extent(start, end - start, zero=False))
        pos = end
    if pos < size:
        out.append(Extent(pos, size - pos, zero=not gaps_clean, clean=gaps_clean))
    return out


class VsphereDisk:
    """A virtual disk at one VM snapshot. Opened (blocking) in a worker thread; the
    engine calls `readinto` from its worker threads."""

    tracking = "changed-blocks"

    def __init__(self, settings: VsphereSettings, *, vm_uuid: str, device_key: int,
                 snapshot: str, previous_change_id: str, previous_size: int,
                 loop: asyncio.AbstractEventLoop):
        from pyVmomi import vim
        self._loop = loop
        self._closed = threading.Event()
        self._session = Session(settings)
        try:
            vm = find_vm(self._session, vm_uuid)
            self.name = f"{vm_uuid}/{device_key}"
            others = [n.name for n in snapshots_of(self._session, vm)
                      if n.snapshot._moId != snapshot]
            if len(others) == len(snapshots_of(self._session, vm)):
                raise SourceError(f"the cycle's snapshot {snapshot} of VM {vm_uuid} is gone "
                                  f"(removed by hand?); the next cycle takes another",
                                  reason="snapshot-missing")
            if others:
                raise SourceError(
                    f"VM {vm_uuid} has other snapshots ({', '.join(map(repr, others))}): its "
                    f"base disk is frozen at the oldest of them, not at this cycle's, so "
                    f"reading it would give old data. Remove or consolidate them; the next "
                    f"cycle then reads the VM", reason="vsphere-other-snapshots",
                    retryable=False)
            snap = vim.vm.Snapshot(snapshot, self._session.si._stub)
            devices = self._session.get(snap, ["config.hardware.device"]).get(
                "config.hardware.device")
            disk = next((d for d in virtual_disks(devices) if d.key == device_key), None)
            if disk is None:
                raise SourceError(f"disk {device_key} is not in snapshot {snapshot} of VM "
                                  f"{vm_uuid}", reason="disk-not-found", retryable=False)
            self.size = int(disk.capacityInBytes)
            self.change_id = disk.backing.changeId or ""
            self._url = self._session.files.url(flat_file(disk.backing.fileName),
                                                datacenter_of(self._session, vm))
            self.full_sync_reason = self._reason(previous_change_id, previous_size)
            if not self.full_sync_reason:
                try:
                    areas = changed_areas(self._session, vm, snap, device_key, self.size,
                                          previous_change_id)
                except Exception as exc:
                    if isinstance(exc, DRError) or not is_tracking_lost(exc):
                        raise
                    self.full_sync_reason = "change-id-unknown"
            if self.full_sync_reason:
                areas = changed_areas(self._session, vm, snap, device_key, self.size, "*")
            self._extents = to_extents(areas, self.size, gaps_clean=not self.full_sync_reason)
        except Exception as exc:
            self._session.close()
            if isinstance(exc, DRError):
                raise
            raise _source_error(exc, f"open disk {device_key} of VM {vm_uuid}") from None

    def _reason(self, previous_change_id: str, previous_size: int) -> str:
        if not previous_change_id:
            return "first-cycle"
        if previous_size and previous_size != self.size:
            return "disk-resized"
        return ""

    @classmethod
    async def open(cls, settings: VsphereSettings, **kw: Any) -> VsphereDisk:
        loop = asyncio.get_running_loop()
        return await asyncio.to_thread(lambda: cls(settings, loop=loop, **kw))

    def extents(self) -> list[Extent]:
        return list(self._extents)

    def readinto(self, offset: int, buf: memoryview) -> int:
        if self._closed.is_set():
            raise SourceError(f"{self.name} was closed", reason="source-closed",
                              retryable=False)
        view = memoryview(buf)

        async def read() -> int:
            return await asyncio.to_thread(self._read, offset, view)

        return asyncio.run_coroutine_threadsafe(
            _REMOTE.call("read", read, what=self.name), self._loop).result()

    def _read(self, offset: int, view: memoryview) -> int:
        try:
            n = self._session.files.read_into(self._url, offset, view)
        except DRError as e:
            raise SourceError(e.message, reason=e.reason, retryable=e.retryable) from None
        if n < len(view) and offset + n < self.size:
            raise SourceError(f"{self.name}: short read at {offset} ({n} of {len(view)} "
                              f"bytes)", reason="source-unavailable")
        return n

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._session.close()

    def __enter__(self) -> VsphereDisk:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _source_error(exc: BaseException, what: str) -> DRError:
    e = vsphere_error(exc, what)
    if e.reason == "target-unavailable":
        return SourceError(e.message, reason="source-unavailable")
    return e
