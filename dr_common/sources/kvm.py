"""The `kvm` site kind: QEMU disk images (qcow2) with persistent dirty bitmaps, read
over NBD.

A consistent point of an image not in use is taken by rotating bitmaps: the bitmap
added at the previous point (`previous_bitmap`) holds every write since then; a new one
(`new_bitmap`) is added now and starts tracking from this instant. The old one is
exported read-only by qemu-nbd (`qemu:dirty-bitmap:NAME`) and only its dirty extents
are read. Bitmaps of earlier, failed cycles are removed; the previous one is removed at
the next cycle, once a newer point exists. (A running VM takes the same steps over QMP:
block-dirty-bitmap-add, nbd-server-start, nbd-server-add with the bitmap; only
`_rotate` and the export differ.)

The previous bitmap is used only when it can be trusted (`untrusted_reason`): present,
recording (`auto`), neither in use (QEMU died with it open) nor inconsistent, and the
image the size it had at the previous point. A shrink followed by a grow back to that
size passes the size check, yet the truncated range now reads zeros while every bitmap,
truncated with it, says it is clean. So each plan keeps beside its bitmaps a disabled,
fully dirty *sentinel* (`sentinel_name`), made when tracking (re)starts: a resize
truncates or extends it with clean bits, so it is still one dirty extent only if the
image was never resized since. Otherwise (or when in doubt) the allocated extents are
read in full, and the reason is reported so the recovery point records it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os

import structlog

from dr_common.errors import InvalidArgument, SourceError
from dr_common.names import resource_id
from dr_common.paths import check_within_roots
from dr_common.proto.dr.v1 import common_pb2, nodes_pb2
from dr_common.sources import kvm_libvirt, kvm_live, nbdmap, qemu
from dr_common.sources.qemu import untrusted_reason
from dr_common.sources.base import DiskInfo, DiskToRead, Extent, SourceEnv, WorkloadInfo
from dr_common.sources.file import discover as discover_files

# libnbd's binding comes from Debian (tools/install-system-deps.sh); only nodes that read
# kvm disks need it, so it is imported when a disk is opened, not with this module.

log = structlog.get_logger()

BITMAP_PREFIX = "hdr-"
IMAGE_SUFFIXES = (".qcow2", ".img", ".raw")


def discover(root: str | os.PathLike) -> list:
    """Inventory of a `kvm` site: its running VMs (a QMP socket each, kvm_live; the
    domains of the libvirt its `libvirt.uri` names, kvm_libvirt), then its images at
    rest like `file` (one workload per image or directory), with sizes and tracking from
    qemu-img; an image a running VM has open is that VM's disk only."""
    found, in_use = kvm_live.discover(root)
    domains, held = kvm_libvirt.discover(root)
    found, in_use = found + domains, in_use | held
    for wl in discover_files(root):
        disks = []
        for d in wl.disks:
            if not d.locator.endswith(IMAGE_SUFFIXES) or d.locator in in_use:
                continue
            info = qemu.image_info(d.locator)
            cbt = "dirty-bitmap" if info.get("format") == "qcow2" else "none"
            disks.append(DiskInfo(id=d.id, display_name=d.display_name, locator=d.locator,
                                  size=int(info["virtual-size"]), cbt=cbt))
        if disks:
            found.append(WorkloadInfo(wl.id, wl.display_name, tuple(disks)))
    return found


def plan_prefix(plan: str) -> str:
    """What the names of everything a plan's cycles make start with."""
    return f"{BITMAP_PREFIX}{resource_id(plan.rsplit('/', 1)[-1])}-"


def bitmap_name(plan: str, cycle: str) -> str:
    """The bitmap a cycle adds: named after it, so stale ones are recognisable."""
    return f"{plan_prefix(plan)}{cycle.rsplit('/', 1)[-1]}"


def sentinel_name(bitmap: str) -> str:
    """The sentinel bitmap of the plan whose cycle bitmap (`bitmap_name`) is `bitmap`.
    One per plan: a plan remaking its sentinel must not hide a resize from another."""
    return f"{bitmap.rsplit('-', 1)[0]}-sentinel"


class KvmDisk:
    """One image at one point, exported over NBD. Blocking: open it in a worker thread."""

    tracking = "dirty-bitmap"

    def __init__(self, image: str | os.PathLike, *, previous_bitmap: str, new_bitmap: str,
                 previous_size: int = 0, connections: int = 4):
        self.image = os.fspath(image)
        self._closed = False
        info = qemu.image_info(self.image)
        self.format = info.get("format", "raw")
        self.size = int(info["virtual-size"])
        self.sentinel = sentinel_name(new_bitmap)
        present = qemu.bitmaps(info)
        self.full_sync_reason = self._trust(present, previous_bitmap, previous_size)
        if self.format == "qcow2":
            self._rotate(present, previous_bitmap, new_bitmap)
        self.bitmap = new_bitmap
        export_bitmap = None if self.full_sync_reason else previous_bitmap
        self._export = qemu.NbdExport(self.image, fmt=self.format, bitmap=export_bitmap,
                                      connections=connections)
        contexts = (nbdmap.ALLOCATION,) + ((nbdmap.dirty_context(export_bitmap),)
                                    if export_bitmap else ())
        from dr_common.sources.nbdpool import NbdPool
        try:
            self._nbd = NbdPool(self._export.socket, connections=connections,
                                contexts=contexts, what=f"qemu-nbd export of {self.image}")
        except BaseException:
            self._export.close()
            raise
        self._dirty_context = contexts[1] if export_bitmap else None

    def _trust(self, present: dict[str, dict], previous: str, previous_size: int) -> str:
        """Why the previous bitmap is not used, or "" when it is."""
        if self.format != "qcow2":
            reason = "no-tracking"  # raw images carry no bitmaps
        elif not previous:
            reason = "first-cycle"
        else:
            reason = (untrusted_reason(present.get(previous), previous_size=previous_size,
                                       size=self.size)
                      or self._sentinel_reason(present.get(self.sentinel)))
        if reason:
            log.warning("full sync", image=self.image, reason=reason, previous_bitmap=previous)
        return reason

    def _sentinel_reason(self, info: dict | None) -> str:
        """"" if the sentinel shows no resize since it was made (with tracking, at or
        before the previous point)."""
        if info is None:
            # Gone (removed, or made by a version without sentinels): a shrink and grow
            # cannot be ruled out.
            return "bitmap-missing"
        if {"in-use", "inconsistent"} & set(info.get("flags", [])):
            return "bitmap-inconsistent"
        return "" if self._all_dirty(self.sentinel) else "disk-resized"

    def _all_dirty(self, bitmap: str) -> bool:
        """Whether every granule of `bitmap` is dirty, read over a short qemu-nbd export
        (qemu-img shows no bitmap contents)."""
        from dr_common.sources.nbdpool import NbdPool
        context = nbdmap.dirty_context(bitmap)
        with contextlib.closing(qemu.NbdExport(self.image, fmt=self.format, bitmap=bitmap,
                                               connections=1)) as export:
            with contextlib.closing(NbdPool(export.socket, connections=1, contexts=(context,),
                                            what=f"qemu-nbd export of {self.image}")) as pool:
                return nbdmap.all_dirty(pool, context)

    def _rotate(self, present: dict[str, dict], previous: str, new: str) -> None:
        """Removes our stale bitmaps, adds this cycle's, and makes the sentinel anew when
        tracking restarts (a full sync) or it is missing."""
        remake = bool(self.full_sync_reason) or self.sentinel not in present
        for name in present:
            keep = name == new or (name == previous and not self.full_sync_reason) or (
                name == self.sentinel and not remake)
            if name.startswith(BITMAP_PREFIX) and not keep:
                qemu.remove_bitmap(self.image, name)
        if new not in present:
            qemu.add_bitmap(self.image, new)
        if remake:
            qemu.add_full_bitmap(self.image, self.sentinel, self.size)

    @property
    def bytes_read(self) -> int:
        return self._nbd.bytes_read

    def extents(self) -> list[Extent]:
        """Zero, clean and data extents covering the disk, in order."""
        return nbdmap.extents(self._nbd, self._dirty_context)

    def readinto(self, offset: int, buf: memoryview) -> int:
        if self._closed:
            raise SourceError(f"{self.image} was closed", reason="source-closed",
                              retryable=False)
        if not self._export.alive():
            raise SourceError(f"qemu-nbd exporting {self.image} exited: {self._export.log()}")
        return self._nbd.readinto(offset, buf)

    def close(self) -> None:
        # Twice is fine (the engine closes from a worker thread, a `with` closes again).
        self._closed = True
        self._nbd.close()
        self._export.close()

    def __enter__(self) -> "KvmDisk":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _running(locator_text: str) -> bool:
    """A running VM's disk (read from the cycle's point), not an image at rest."""
    return kvm_live.is_live(locator_text) or kvm_libvirt.is_libvirt(locator_text)


def home_image(locator: str) -> tuple[str, str] | None:
    """Failback writes an image at rest back in its format; a running VM's disk is not
    an image failback can replace under it."""
    if _running(locator):
        return None
    return locator, "qcow2" if locator.endswith(".qcow2") else "raw"


def locate(disk: DiskToRead) -> nodes_pb2.KvmSource:
    if _running(disk.locator):
        return nodes_pb2.KvmSource(path=disk.locator, snapshot=disk.snapshot_id)
    return nodes_pb2.KvmSource(path=disk.locator, previous_bitmap=disk.previous_bitmap,
                               bitmap=bitmap_name(disk.plan, disk.cycle),
                               previous_size=disk.previous_size)


async def open_source(locator: nodes_pb2.KvmSource, site: common_pb2.SiteSettings,
                      env: SourceEnv) -> KvmDisk | kvm_live.LiveDisk:
    loop = asyncio.get_running_loop()
    if _running(locator.path):
        if kvm_live.is_live(locator.path):
            socket, _ = kvm_live.parse_locator(locator.path)
            check_within_roots(socket, env.roots, field="source.kvm.path")
        ref = kvm_live.LiveRef.loads(locator.snapshot)
        if ref is None:
            raise InvalidArgument(f"{locator.path} is a running VM's disk, but the task "
                                  f"names no point of it (source.kvm.snapshot)",
                                  field="source.kvm.snapshot")
        if kvm_libvirt.is_libvirt(locator.path):
            # libvirt's NBD socket is beside the domain's disk, in the site's root.
            check_within_roots(ref.nbd, env.roots, field="source.kvm.snapshot")
        return await loop.run_in_executor(env.executor, functools.partial(
            kvm_live.LiveDisk, ref, connections=env.connections))
    path = check_within_roots(locator.path, env.roots, field="source.kvm.path")
    # Opening rotates bitmaps and starts qemu-nbd: blocking, so in a worker thread.
    return await loop.run_in_executor(env.executor, functools.partial(
        KvmDisk, path, previous_bitmap=locator.previous_bitmap, new_bitmap=locator.bitmap,
        previous_size=locator.previous_size, connections=env.connections))


def _libvirt_groups(disks) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """The group's libvirt domains: (URI, UUID) -> [(disk name, target)]."""
    vms: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for d in disks:
        if kvm_libvirt.is_libvirt(d.locator):
            uri, uuid, target = kvm_libvirt.parse_locator(d.locator)
            vms.setdefault((uri, uuid), []).append((d.disk, target))
    return vms


def _live_groups(disks, env: SourceEnv) -> dict[str, list[tuple[str, str]]]:
    """The group's running VMs: QMP socket -> [(disk name, device)]."""
    vms: dict[str, list[tuple[str, str]]] = {}
    for d in disks:
        if kvm_live.is_live(d.locator):
            socket, device = kvm_live.parse_locator(d.locator)
            check_within_roots(socket, env.roots, field="source.kvm.path")
            vms.setdefault(socket, []).append((d.disk, device))
    return vms


async def take_snapshots(spec: nodes_pb2.SnapshotSpec,
                         env: SourceEnv) -> list[nodes_pb2.SourceSnapshot]:
    """The cycle's point of every running VM of the group (kvm_live.take for QMP
    sockets, kvm_libvirt.take for libvirt's domains); images at rest get no snapshot
    (their bitmaps are rotated when they are read)."""
    vms = _live_groups(spec.disks, env)
    domains = _libvirt_groups(spec.disks)
    refs = [r for r in map(kvm_live.LiveRef.loads, spec.keep_snapshot_ids) if r]
    by_device = {(r.socket, r.device): r for r in refs}
    prefix, bitmap = plan_prefix(spec.plan), bitmap_name(spec.plan, spec.cycle)

    previous = {name: by_device[(socket, dev)] for socket, members in vms.items()
                for name, dev in members if (socket, dev) in by_device}

    def run() -> dict[str, kvm_live.LiveRef]:
        taken = kvm_live.take(vms, plan_prefix=prefix, bitmap=bitmap,
                              previous=previous) if vms else {}
        for (uri, uuid), members in domains.items():
            key = kvm_libvirt.vm_key(uri, uuid)
            before = {name: by_device[(key, dev)] for name, dev in members
                      if (key, dev) in by_device}
            taken.update(kvm_libvirt.take(uri, uuid, members, plan_prefix=prefix,
                                          checkpoint=bitmap, previous=before))
        return taken

    taken = await asyncio.get_running_loop().run_in_executor(env.executor, run)
    return [nodes_pb2.SourceSnapshot(
        disk=d.disk, snapshot_id=taken[d.disk].dumps() if d.disk in taken else "",
        consistency="crash-consistent") for d in spec.disks]


async def stop_workloads(spec: nodes_pb2.SnapshotSpec, env: SourceEnv) -> list[str]:
    """Pauses every running VM of the group and leaves it paused, before the final cycle
    of a migration takes its point (kvm_live.stop for QMP sockets, kvm_libvirt.suspend
    for libvirt's domains); images at rest: nothing runs. Returns what was stopped."""
    vms = _live_groups(spec.disks, env)
    domains = _libvirt_groups(spec.disks)

    def run() -> list[str]:
        return ([kvm_live.stop(socket) for socket in vms]
                + [kvm_libvirt.suspend(uri, uuid) for uri, uuid in domains])

    return await asyncio.get_running_loop().run_in_executor(env.executor, run)


async def drop_snapshots(spec: nodes_pb2.DropSnapshotsSpec, env: SourceEnv) -> None:
    """Removes what the cycle made in its running VMs (kvm_live.drop, kvm_libvirt.drop)."""
    vms = _live_groups(spec.disks, env)
    domains = _libvirt_groups(spec.disks)
    prefix = plan_prefix(spec.plan)

    def run() -> None:
        for socket in vms:
            removed = kvm_live.drop(socket, plan_prefix=prefix)
            log.info("cycle's QEMU objects removed", vm=socket, removed=removed)
        for uri, uuid in domains:
            removed = kvm_libvirt.drop(uri, uuid)
            log.info("cycle's libvirt backup job ended", vm=uuid, uri=uri, removed=removed)

    await asyncio.get_running_loop().run_in_executor(env.executor, run)
