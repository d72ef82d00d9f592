"""Running KVM VMs, through QEMU's QMP socket: one crash-consistent point per VM per
cycle, read over QEMU's own NBD server while the guest keeps running.

A kvm site's directory may hold, next to images at rest, a QMP socket per running VM
(`<vm>.qmp`, e.g. `-qmp unix:/srv/vms/web.qmp,server=on,wait=off`). The VM is a
workload; its disks are the block devices QEMU has attached (`query-block`).

The cycle's snapshot task takes the point (`take`), for each VM in one QMP
`transaction`, so all disks of a VM are at the same instant:
- `block-dirty-bitmap-add` of this cycle's persistent bitmap on every disk: it records
  every write from the point on, and is the next cycle's base;
- a disabled copy of the previous cycle's bitmap (`block-dirty-bitmap-add` disabled +
  `block-dirty-bitmap-merge`): the changes between the previous point and this one,
  frozen, while the previous bitmap itself keeps recording — so a cycle that fails
  loses nothing: the next one still reads from the previous point;
- `blockdev-backup sync=none` into a temporary qcow2 overlay whose backing is the disk
  (fleecing): from now on QEMU copies a block's old content into the overlay before the
  guest overwrites it, so the overlay reads as the disk was at the transaction.
The overlay is exported read-only (`block-export-add`, NBD, with the frozen bitmap) on a
unix socket; replicate tasks read its dirty extents (`LiveDisk`). The VMs of a plan are
all prepared first and their transactions run back to back, as close together as QMP
allows (one VM's disks are atomic; VMs are not: QEMUs share no transaction).

What tracking cannot be trusted is not used (qemu.untrusted_reason, as for images at
rest): no previous point, the previous bitmap gone (QEMU restarted without it, the image
replaced), inconsistent (QEMU died with it), not recording (disabled), or the disk's size
changed since: the disk is read in full (its allocated extents only), and the reason
recorded. (A shrink and grow back between two cycles is not seen here: images at rest
keep a sentinel bitmap for it; a running VM's size is only compared: docs/KVM.md.)

Everything a cycle creates in QEMU — exports, the backup job, overlay nodes, frozen
bitmaps, the NBD server — is named after the plan and removed by the drop_snapshots task
when the cycle ends (`drop`), completed or failed, and again by the next cycle's snapshot
task if a node died holding it. Overlay files live in `.<vm>.hdr/` next to the QMP
socket, so they are removed even when QEMU is gone.

The final cycle of a migration first pauses the group's VMs (`stop`, QMP `stop`) and
leaves them paused: the point then holds every write the guests made, and nothing is
written after it. QEMU keeps running, so the point is taken and read as any other.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import structlog

from dr_common.errors import InvalidArgument, SourceError
from dr_common.names import resource_id
from dr_common.qmp import Qmp, QmpError
from dr_common.sources import nbdmap, qemu
from dr_common.sources.base import DiskInfo, WorkloadInfo

log = structlog.get_logger()

QMP_SUFFIX = ".qmp"
# The VMs kvm recovery runs at the site (dr_control/recovery/kvm.py: one directory per
# execution, one per workload in it, its QMP socket there), listed as workloads named
# like the VM ("hybrid-dr-<execution digest>-<workload>"), so that a failback can protect
# them back to where they came from.
RECOVERED_SOCKETS = "hybrid-dr-*/*/qmp.sock"
LOCATOR_PREFIX = "qmp:"
_STATE_DIR = ".{vm}.hdr"
# A job's cancel takes a moment; a stuck one must not hold a node forever.
_JOB_END_SECONDS = 30.0


# --- where things are -------------------------------------------------------------------

def locator(socket: str, device: str) -> str:
    """A live disk's locator: the VM's QMP socket and the disk's device (qdev path, or
    the -drive id)."""
    return f"{LOCATOR_PREFIX}{socket}#{device}"


def is_live(locator_text: str) -> bool:
    return locator_text.startswith(LOCATOR_PREFIX)


def parse_locator(text: str) -> tuple[str, str]:
    socket, sep, device = text[len(LOCATOR_PREFIX):].rpartition("#")
    if not is_live(text) or not sep or not socket or not device:
        raise InvalidArgument(f"{text!r} is not a running VM's disk (qmp:SOCKET#DEVICE)",
                              field="disk.locator")
    return socket, device


def state_dir(socket: str) -> Path:
    """Where a VM's cycles keep their overlays and the NBD socket."""
    p = Path(socket)
    return p.parent / _STATE_DIR.format(vm=p.stem)


def _device_of(entry: dict) -> str:
    return entry.get("qdev") or entry.get("device") or ""


def _short_name(device: str) -> str:
    """vd0 of /machine/peripheral/vd0/virtio-backend; a -drive id as it is."""
    parts = [p for p in device.split("/") if p]
    if len(parts) >= 3 and parts[0] == "machine" and parts[1] == "peripheral":
        return parts[2]
    return parts[-1] if parts else device


def _disks(q: Qmp) -> dict[str, dict]:
    """The VM's block devices with a medium, by device: their `inserted` facts."""
    return {_device_of(b): b["inserted"] for b in q.execute("query-block")
            if b.get("inserted") and _device_of(b)}


def _format_node(inserted: dict, socket: str, device: str) -> str:
    """The disk's format node. A copy-before-write filter on top means a backup job of
    someone else's is running on the disk (ours were removed first)."""
    if inserted.get("drv") == "copy-before-write":
        raise SourceError(f"{socket}: disk {device} is being backed up by another tool "
                          f"(a backup job holds it); wait for it to end")
    return inserted["node-name"]


def _bitmaps(q: Qmp, node: str) -> dict[str, dict]:
    for n in q.execute("query-named-block-nodes", flat=True):
        if n["node-name"] == node:
            return {b["name"]: b for b in n.get("dirty-bitmaps") or [] if b.get("name")}
    return {}


# --- inventory ---------------------------------------------------------------------------

def sockets_in(root: str | os.PathLike) -> list[tuple[str, Path]]:
    """(VM name, QMP socket) of every VM of the site: NAME.qmp, and recovered VMs."""
    found = []
    recovered = [(f"{p.parent.parent.name}-{p.parent.name}", p)
                 for p in sorted(Path(root).glob(RECOVERED_SOCKETS))]
    for name, p in [(p.name[:-len(QMP_SUFFIX)], p) for p in sorted(Path(root).iterdir())
                    if p.name.endswith(QMP_SUFFIX)] + recovered:
        try:
            if stat.S_ISSOCK(p.stat().st_mode):
                found.append((name, p))
        except OSError:
            continue
    return found


def discover(root: str | os.PathLike) -> tuple[list[WorkloadInfo], set[str]]:
    """The running VMs of a kvm site, and the image files they hold open (which are not
    listed again as images at rest). A socket nobody answers on is skipped: a VM that
    stopped leaves it behind."""
    vms, in_use = [], set()
    for name, sock in sockets_in(root):
        try:
            with Qmp(str(sock), timeout=5) as q:
                attached = _disks(q)
        except SourceError as e:
            log.warning("QMP socket not answering: VM skipped", socket=str(sock), error=e.message)
            continue
        disks, seen = [], set()
        for device, inserted in attached.items():
            image = inserted.get("image", {})
            if inserted.get("ro") and image.get("format") == "raw" and "cd" in device:
                continue  # a CD-ROM, not a disk to protect
            ident = resource_id(_short_name(device))
            if ident in seen:
                ident = resource_id(device)
            seen.add(ident)
            if image.get("filename"):
                in_use.add(str(Path(image["filename"]).resolve()))
            disks.append(DiskInfo(id=ident, display_name=_short_name(device),
                                  locator=locator(str(sock.resolve()), device),
                                  size=int(image.get("virtual-size", 0)), cbt="dirty-bitmap"))
        if disks:
            vms.append(WorkloadInfo(resource_id(name), f"{name} (running)", tuple(disks)))
    return vms, in_use


# --- a point of a VM -----------------------------------------------------------------------

@dataclass(frozen=True)
class LiveRef:
    """What a cycle's snapshot task made of one disk, as its snapshot id (JSON): where
    replicate reads it, and what the next cycle starts from."""

    socket: str  # the VM's QMP socket
    device: str
    bitmap: str  # this cycle's persistent bitmap (the next cycle's base)
    size: int  # the disk's size at the point
    nbd: str = ""  # the NBD server's unix socket
    export: str = ""  # the export of the point
    view: str = ""  # the frozen bitmap of the changes since the previous point
    full_sync_reason: str = ""

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def loads(cls, text: str) -> "LiveRef | None":
        if not text:
            return None
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError):
            return None  # not ours: another kind's id, or an older format


def _names(plan_tag: str, device: str) -> dict[str, str]:
    short = resource_id(_short_name(device))
    return {"export": f"{plan_tag}-{short}", "fleece": f"{plan_tag}-fleece-{short}",
            "job": f"{plan_tag}-job-{short}", "view": f"{plan_tag}-view"}


def _plan_pattern(plan_prefix: str) -> re.Pattern:
    """Names a plan's cycles give things: `<plan prefix><cycle>` then, for temporary
    things, `-...`."""
    return re.compile(rf"^{re.escape(plan_prefix)}\d+(-|$)")


def clean(q: Qmp, socket: str, plan_prefix: str, *, keep_bitmaps: set[str] = frozenset(),
          persistent_too: bool = False) -> list[str]:
    """Removes what this plan's cycles made in the VM and are not needed any more:
    exports, backup jobs, overlay nodes and frozen bitmaps; with `persistent_too`, its
    persistent bitmaps other than `keep_bitmaps` too. Returns what it removed."""
    ours = _plan_pattern(plan_prefix)
    removed: list[str] = []
    exports = q.execute("query-block-exports")
    for e in exports:
        if ours.match(e["id"]):
            q.execute("block-export-del", id=e["id"], mode="hard")
            q.wait_event("BLOCK_EXPORT_DELETED", {"id": e["id"]})
            removed.append(f"export {e['id']}")
    for job in q.execute("query-block-jobs"):
        if ours.match(job["device"]):
            q.execute("block-job-cancel", device=job["device"], force=True)
            _wait_job_gone(q, job["device"])
            removed.append(f"job {job['device']}")
    nodes = q.execute("query-named-block-nodes", flat=True)
    for n in nodes:
        if ours.match(n["node-name"]):
            try:
                q.execute("blockdev-del", **{"node-name": n["node-name"]})
                removed.append(f"node {n['node-name']}")
            except QmpError as e:  # its file child goes with it
                log.debug("overlay node not deleted", node=n["node-name"], error=e.message)
    for n in q.execute("query-named-block-nodes", flat=True):
        for b in n.get("dirty-bitmaps") or []:
            name = b.get("name", "")
            temporary = not b.get("persistent")
            if ours.match(name) and name not in keep_bitmaps and (temporary or persistent_too):
                q.execute("block-dirty-bitmap-remove", node=n["node-name"], name=name)
                removed.append(f"bitmap {name}")
    if not any(not ours.match(e["id"]) for e in q.execute("query-block-exports")):
        try:
            q.execute("nbd-server-stop")
            removed.append("nbd-server")
        except QmpError:
            pass  # none was running
    _remove_overlays(socket, plan_prefix)
    return removed


def _wait_job_gone(q: Qmp, job: str) -> None:
    deadline = time.monotonic() + _JOB_END_SECONDS
    while any(j["device"] == job for j in q.execute("query-block-jobs")):
        if time.monotonic() > deadline:
            raise SourceError(f"QEMU did not end backup job {job} within "
                              f"{_JOB_END_SECONDS:.0f}s")
        try:
            q.wait_event("BLOCK_JOB_CANCELLED", {"device": job}, timeout=1)
        except SourceError:
            pass  # checked again above


def _remove_overlays(socket: str, plan_prefix: str) -> None:
    d = state_dir(socket)
    ours = _plan_pattern(plan_prefix)
    for f in d.glob("*.qcow2") if d.is_dir() else ():
        if ours.match(f.stem):
            f.unlink(missing_ok=True)


def _overlay(socket: str, name: str, size: int) -> str:
    d = state_dir(socket)
    d.mkdir(mode=0o700, exist_ok=True)
    path = d / f"{name}.qcow2"
    done = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(size)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SourceError(f"cannot create the fleecing overlay {path}: {done.stderr.strip()}")
    return str(path)


def _nbd_socket(socket: str) -> str:
    path = str(state_dir(socket) / "nbd.sock")
    if len(path.encode()) > 107:
        raise InvalidArgument(f"the NBD socket path {path} is too long for a unix socket "
                              f"(108 bytes): keep QMP sockets in a shorter directory",
                              field="site.path")
    return path


@dataclass
class _Disk:
    disk: str
    device: str
    node: str
    size: int
    previous: LiveRef | None
    reason: str = ""


class _Vm:
    """One VM of the group while its point is taken: its QMP connection, its disks,
    and the transaction that takes the point once every VM is prepared."""

    def __init__(self, socket: str, disks: list[tuple[str, str]], *, plan_prefix: str,
                 bitmap: str, previous: dict[str, LiveRef]):
        self.socket, self.plan_prefix, self.bitmap = socket, plan_prefix, bitmap
        self.q = Qmp(socket)
        self.todo: list[_Disk] = []
        self.actions: list[dict] = []
        try:
            self._inspect(disks, previous)
        except BaseException:
            self.q.close()
            raise

    def _inspect(self, disks: list[tuple[str, str]], previous: dict[str, LiveRef]) -> None:
        q = self.q
        clean(q, self.socket, self.plan_prefix,
              keep_bitmaps={p.bitmap for p in previous.values()}, persistent_too=True)
        attached = _disks(q)
        for name, device in disks:
            inserted = attached.get(device)
            if inserted is None:
                raise SourceError(f"{self.socket}: the VM has no disk {device} any more "
                                  f"(detached?): refresh the site's inventory", retryable=False)
            node = _format_node(inserted, self.socket, device)
            size = int(inserted.get("image", {}).get("virtual-size", 0))
            prev = previous.get(name)
            present = _bitmaps(q, node)
            d = _Disk(name, device, node, size, prev)
            d.reason = "first-cycle" if prev is None else qemu.untrusted_reason(
                qemu.qmp_flags(present.get(prev.bitmap)), previous_size=prev.size, size=size)
            if d.reason and prev and prev.bitmap in present:
                q.execute("block-dirty-bitmap-remove", node=node, name=prev.bitmap)
            if d.reason:
                log.warning("full sync", vm=self.socket, device=device, reason=d.reason)
            self.todo.append(d)

    def prepare(self) -> None:
        """The overlays, and the transaction's actions: nothing of the point yet."""
        for d in self.todo:
            n = _names(self.bitmap, d.device)
            self.q.execute("blockdev-add", driver="qcow2", **{"node-name": n["fleece"]},
                           file={"driver": "file",
                                 "filename": _overlay(self.socket, n["fleece"], d.size)},
                           backing=d.node)
            self.actions.append({"type": "block-dirty-bitmap-add", "data": {
                "node": d.node, "name": self.bitmap, "persistent": True}})
            if not d.reason:
                self.actions += [
                    {"type": "block-dirty-bitmap-add", "data": {
                        "node": d.node, "name": n["view"], "persistent": False,
                        "disabled": True}},
                    {"type": "block-dirty-bitmap-merge", "data": {
                        "node": d.node, "target": n["view"], "bitmaps": [d.previous.bitmap]}}]
            self.actions.append({"type": "blockdev-backup", "data": {
                "device": d.node, "target": n["fleece"], "sync": "none", "job-id": n["job"],
                "auto-dismiss": True}})

    def commit(self) -> None:
        """The point: every disk of the VM at one instant."""
        self.q.execute("transaction", actions=self.actions)

    def export(self) -> dict[str, LiveRef]:
        nbd = _nbd_socket(self.socket)
        try:
            self.q.execute("nbd-server-start", addr={"type": "unix", "data": {"path": nbd}})
        except QmpError as e:
            raise SourceError(f"{self.socket}: QEMU's NBD server is already in use by "
                              f"another export ({e.message}); stop it to protect this VM",
                              retryable=False) from None
        out = {}
        for d in self.todo:
            n = _names(self.bitmap, d.device)
            args = {"type": "nbd", "id": n["export"], "node-name": n["fleece"],
                    "name": n["export"], "writable": False}
            if not d.reason:
                args["bitmaps"] = [{"node": d.node, "name": n["view"]}]
            self.q.execute("block-export-add", **args)
            out[d.disk] = LiveRef(socket=self.socket, device=d.device, bitmap=self.bitmap,
                                  size=d.size, nbd=nbd, export=n["export"],
                                  view="" if d.reason else n["view"],
                                  full_sync_reason=d.reason)
        return out

    def undo(self) -> None:
        try:
            clean(self.q, self.socket, self.plan_prefix)
        except SourceError as e:
            log.warning("cleanup after a failed point failed", vm=self.socket, error=e.message)


def take(vms: dict[str, list[tuple[str, str]]], *, plan_prefix: str, bitmap: str,
         previous: dict[str, LiveRef]) -> dict[str, LiveRef]:
    """The point of a group of VMs: `vms` maps each VM's QMP socket to its (disk name,
    device) pairs, `previous` has the previous point's refs by disk name. Every VM is
    prepared first (stale objects removed, tracking checked, overlays added), then the
    transactions run back to back, so the VMs' points are as close as QMP allows (each
    VM's disks are atomic). Returns this point's ref per disk name."""
    group: list[_Vm] = []
    try:
        for socket, disks in vms.items():
            group.append(_Vm(socket, disks, plan_prefix=plan_prefix, bitmap=bitmap,
                             previous={n: previous[n] for n, _ in disks if n in previous}))
        for vm in group:
            vm.prepare()
        started = time.monotonic()
        for vm in group:
            vm.commit()
        if len(group) > 1:
            log.info("points of the group's VMs taken", vms=len(group),
                     spread_seconds=round(time.monotonic() - started, 4))
        taken: dict[str, LiveRef] = {}
        for vm in group:
            taken.update(vm.export())
        return taken
    except BaseException:
        for vm in group:
            vm.undo()
        raise
    finally:
        for vm in group:
            vm.q.close()


def drop(socket: str, *, plan_prefix: str) -> list[str]:
    """Removes what this plan's cycles made in the VM (its persistent bitmaps stay: the
    newest is the next cycle's base). A VM that is gone has nothing left but overlay
    files, which are removed."""
    try:
        q = Qmp(socket, timeout=10)
    except SourceError:
        _remove_overlays(socket, plan_prefix)
        return []
    with q:
        return clean(q, socket, plan_prefix)


# --- stopping a VM (the final cycle of a migration) ----------------------------------------

def stop(socket: str) -> str:
    """Pauses the VM (QMP `stop`: its vCPUs stop, so the guest writes nothing more; QEMU
    and its disks stay, so the cycle's point is taken as usual) and leaves it paused.
    A VM already paused is fine. Returns what was done, for the task's log; SourceError
    if QEMU does not say "paused" afterwards."""
    with Qmp(socket) as q:
        before = q.execute("query-status").get("status", "")
        if before != "paused":
            q.execute("stop")
        after = q.execute("query-status").get("status", "")
    if after != "paused":
        raise SourceError(f"{socket}: QEMU's status is {after!r} after QMP stop, not "
                          f"'paused'; stop the VM yourself and use failover from a point "
                          f"taken after", retryable=False)
    log.info("VM paused", vm=socket, was=before)
    return f"{socket}: paused (was {before})"


def remove_state_dir(socket: str) -> None:
    shutil.rmtree(state_dir(socket), ignore_errors=True)


# --- reading a point ----------------------------------------------------------------------

class LiveDisk:
    """One disk of a VM's point, read from QEMU's NBD export of its fleecing overlay.
    Blocking: open it in a worker thread."""

    tracking = "dirty-bitmap"

    def __init__(self, ref: LiveRef, *, connections: int = 4):
        from dr_common.sources.nbdpool import NbdPool  # libnbd: on nodes only
        self.ref = ref
        self.size = ref.size
        self.bitmap = ref.bitmap
        self.full_sync_reason = ref.full_sync_reason
        self._closed = False
        self._dirty = nbdmap.dirty_context(ref.view) if ref.view else None
        contexts = (nbdmap.ALLOCATION,) + ((self._dirty,) if self._dirty else ())
        self._nbd = NbdPool(ref.nbd, export=ref.export, connections=connections,
                            contexts=contexts,
                            what=f"QEMU's export of {_short_name(ref.device)} ({ref.socket})")

    @property
    def bytes_read(self) -> int:
        return self._nbd.bytes_read

    def extents(self):
        return nbdmap.extents(self._nbd, self._dirty)

    def readinto(self, offset: int, buf: memoryview) -> int:
        if self._closed:
            raise SourceError(f"{self.ref.export} was closed", reason="source-closed",
                              retryable=False)
        return self._nbd.readinto(offset, buf)

    def close(self) -> None:
        # The export and the overlay are the drop_snapshots task's: other disks' readers
        # (other nodes) may still be reading the same VM's point.
        self._closed = True
        self._nbd.close()

    def __enter__(self) -> "LiveDisk":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
