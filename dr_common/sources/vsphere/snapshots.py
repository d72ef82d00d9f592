"""A plan's VMs frozen together: CBT switched on where it is off, one snapshot per VM,
and the snapshots let go again when the cycle ends.

vSphere has no atomic snapshot across VMs. The snapshot tasks of all the group's VMs
are started before any is waited for, so the VMs are frozen as close together as the
API allows; the spread (first to last task completion) is logged. With `quiesce`,
VMware Tools flush the guest's file systems (app-consistent); a VM whose tools are not
running, or whose quiesced snapshot fails, is snapshotted crash-consistent instead, and
the point says which it got.

Every snapshot the product takes is named "hybrid-dr PLAN CYCLE", so the ones a dead
node left behind are found by name and removed before the next cycle's are taken.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import structlog

from dr_common.errors import DRError, NotFound, SourceError
from dr_common.sources.vsphere.inventory import parse_locator, virtual_disks
from dr_common.vsphere import Session, fault_name

log = structlog.get_logger()

PREFIX = "hybrid-dr "
_CBT_STUN = "hybrid-dr enabling changed-block tracking"


@dataclass(frozen=True)
class SnapshotRef:
    """What a cycle's snapshot of one disk is, as stored with the point (JSON): the VM
    snapshot read from, and the disk's change id, size and consistency at it."""

    snapshot: str  # the VM snapshot's managed object id, "snapshot-7"
    change_id: str
    size: int
    consistency: str  # "app-consistent" or "crash-consistent"

    def dumps(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def loads(cls, text: str) -> SnapshotRef | None:
        if not text:
            return None
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError):
            return None  # another kind's id (the site changed kind): a full sync


def find_vm(session: Session, uuid: str) -> Any:
    vm = session.content.searchIndex.FindByUuid(None, uuid, True, True)
    if vm is None:
        raise NotFound(f"VM with instance UUID {uuid} not found at {session.settings.url} "
                       f"(deleted, or re-created with a new UUID: refresh the site)",
                       reason="vm-not-found")
    return vm


def tree(nodes: list[Any] | None) -> Iterator[Any]:
    """Every snapshot of a VM's snapshot tree (vim.vm.SnapshotTree nodes)."""
    for node in nodes or ():
        yield node
        yield from tree(node.childSnapshotList)


def snapshots_of(session: Session, vm: Any) -> list[Any]:
    return list(tree(session.get(vm, ["snapshot.rootSnapshotList"]).get(
        "snapshot.rootSnapshotList")))


def snapshot_name(plan: str, cycle: str) -> str:
    return f"{PREFIX}{plan} {cycle}"


def remove_ours(session: Session, vm: Any, plan: str) -> list[str]:
    """Removes every snapshot of `plan` on `vm` (a dead node's, or the cycle's own);
    returns their names."""
    removed = []
    for node in snapshots_of(session, vm):
        if node.name.startswith(f"{PREFIX}{plan} "):
            try:
                session.call(f"remove snapshot {node.name!r}", node.snapshot.RemoveSnapshot_Task,
                             removeChildren=False, consolidate=True)
            except NotFound:
                pass  # removed meanwhile: what we wanted
            removed.append(node.name)
    return removed


def ensure_cbt(session: Session, vm: Any, name: str) -> bool:
    """Switches CBT on if it is off; True if it did. vSphere applies it at the next
    stun/unstun of the VM: a snapshot taken and removed at once."""
    from pyVmomi import vim
    if session.get(vm, ["config.changeTrackingEnabled"]).get("config.changeTrackingEnabled"):
        return False
    session.call(f"enable changed-block tracking on {name}", vm.ReconfigVM_Task,
                 spec=vim.vm.ConfigSpec(changeTrackingEnabled=True))
    snap = session.call(f"stun {name} for changed-block tracking", vm.CreateSnapshot_Task,
                        name=_CBT_STUN, description="", memory=False, quiesce=False)
    session.call(f"unstun {name}", snap.RemoveSnapshot_Task, removeChildren=False,
                 consolidate=True)
    log.info("changed-block tracking enabled", vm=name)
    return True


def _tools_running(session: Session, vm: Any) -> bool:
    return session.get(vm, ["guest.toolsRunningStatus"]).get(
        "guest.toolsRunningStatus") == "guestToolsRunning"


def snapshot_group(session: Session, vms: dict[str, Any], *, name: str, quiesce: bool,
                   timeout: float) -> dict[str, tuple[Any, str]]:
    """One snapshot per VM (uuid -> vm), started together; uuid -> (snapshot,
    consistency). A quiesced snapshot that fails is taken again crash-consistent."""
    started: dict[str, tuple[Any, bool]] = {}
    for uuid, vm in vms.items():
        q = quiesce and _tools_running(session, vm)
        try:
            task = vm.CreateSnapshot_Task(name=name, description="taken by Hybrid DR",
                                          memory=False, quiesce=q)
        except Exception as exc:
            raise _snapshot_error(exc, uuid) from None
        started[uuid] = (task, q)
    out: dict[str, tuple[Any, str]] = {}
    done_at: list[float] = []
    for uuid, (task, q) in started.items():
        try:
            snap = session.wait(task, f"snapshot VM {uuid}", timeout=timeout)
        except DRError as e:
            if not q:
                raise
            log.warning("quiesced snapshot failed; taking a crash-consistent one", vm=uuid,
                        error=e.message)
            snap = session.call(f"snapshot VM {uuid}", vms[uuid].CreateSnapshot_Task,
                                name=name, description="taken by Hybrid DR", memory=False,
                                quiesce=False, timeout=timeout)
            q = False
        done_at.append(time.monotonic())
        out[uuid] = (snap, "app-consistent" if q else "crash-consistent")
    spread = max(done_at) - min(done_at) if done_at else 0.0
    log.info("consistency group snapshotted", vms=len(out), spread_seconds=round(spread, 3),
             app_consistent=sum(c == "app-consistent" for _, c in out.values()))
    return out


def _snapshot_error(exc: BaseException, uuid: str) -> DRError:
    from dr_common.vsphere import vsphere_error
    return vsphere_error(exc, f"snapshot VM {uuid}")


def refs(session: Session, snap: Any, consistency: str,
         keys: list[int]) -> dict[int, SnapshotRef]:
    """The disks' change ids and sizes at `snap` (device key -> ref)."""
    devices = session.get(snap, ["config.hardware.device"]).get("config.hardware.device")
    by_key = {d.key: d for d in virtual_disks(devices)}
    out = {}
    for key in keys:
        disk = by_key.get(key)
        if disk is None:
            raise SourceError(f"disk {key} is not in the VM's snapshot (removed from the "
                              f"VM? refresh the site)", reason="disk-not-found",
                              retryable=False)
        out[key] = SnapshotRef(snapshot=snap._moId, change_id=disk.backing.changeId or "",
                               size=int(disk.capacityInBytes), consistency=consistency)
    return out


def take(session: Session, disks: list[Any], *, plan: str, cycle: str, quiesce: bool,
         timeout: float) -> dict[str, SnapshotRef]:
    """The cycle's group for `disks` (SnapshotDisk messages): disk name -> ref."""
    by_vm: dict[str, list[tuple[str, int]]] = {}
    for d in disks:
        uuid, key = parse_locator(d.locator)
        by_vm.setdefault(uuid, []).append((d.disk, key))
    vms = {uuid: find_vm(session, uuid) for uuid in by_vm}
    for uuid, vm in vms.items():
        stale = remove_ours(session, vm, plan)
        if stale:
            log.warning("removed snapshots an earlier cycle left", vm=uuid, snapshots=stale)
        ensure_cbt(session, vm, uuid)
    taken = snapshot_group(session, vms, name=snapshot_name(plan, cycle), quiesce=quiesce,
                           timeout=timeout)
    out: dict[str, SnapshotRef] = {}
    for uuid, members in by_vm.items():
        snap, consistency = taken[uuid]
        by_key = refs(session, snap, consistency, [k for _, k in members])
        out.update({disk: by_key[key] for disk, key in members})
    return out


def drop_snapshots(session: Session, disks: list[Any], *, plan: str) -> int:
    """Removes the plan's snapshots from the group's VMs; how many it removed. A VM that
    is gone has nothing left to drop."""
    removed = 0
    for uuid in {parse_locator(d.locator)[0] for d in disks}:
        try:
            vm = find_vm(session, uuid)
        except NotFound:
            continue
        removed += len(remove_ours(session, vm, plan))
    return removed


def is_tracking_lost(exc: BaseException) -> bool:
    """Whether QueryChangedDiskAreas refused the change id: CBT was reset, the id is
    unknown or malformed (vSphere answers FileFault or InvalidArgument)."""
    return fault_name(exc) in ("FileFault", "InvalidArgument", "NotFound")
