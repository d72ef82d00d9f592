"""The `vsphere` site kind: VMs whose virtual disks are read through vSphere's
changed-block tracking (CBT) and VM snapshots, without VDDK.

Inventory is the vSphere API (inventory.py). A cycle (snapshots.py) first makes sure
CBT is on for each protected VM, then takes one snapshot per VM, all VMs of the plan at
once, so the group's disks are frozen as close together as the API allows (the spread
is recorded). While the product's snapshot is the VM's only one, the disk's base
`-flat.vmdk` is a frozen point-in-time copy: the disk (disk.py) reads it with HTTPS
Range GETs on the datastore's file access, and asks `QueryChangedDiskAreas` which areas
changed since the change id the previous point recorded (`"*"` on a first cycle: the
allocated areas only). The snapshot is removed when the cycle ends, and any the product
left behind (a node that died holding one) at the start of the next cycle.

A disk's "source snapshot" as the control plane stores it with a point is this kind's
own reference (`SnapshotRef`, JSON): the VM snapshot the cycle read from and the disk's
change id and size at it. The control plane never looks inside.
"""

from __future__ import annotations

import asyncio

from dr_common.proto.dr.v1 import common_pb2, nodes_pb2
from dr_common.sources.base import DiskToRead, SourceEnv
from dr_common.sources.vsphere import snapshots
from dr_common.sources.vsphere.disk import VsphereDisk
from dr_common.sources.vsphere.inventory import discover, parse_locator
from dr_common.sources.vsphere.snapshots import SnapshotRef
from dr_common.vsphere import Session, VsphereSettings

__all__ = ["SnapshotRef", "VsphereDisk", "discover", "locate", "open_source", "drop_snapshots",
           "take_snapshots"]


def locate(disk: DiskToRead) -> nodes_pb2.VsphereSource:
    uuid, key = parse_locator(disk.locator)
    now = SnapshotRef.loads(disk.snapshot_id)
    before = SnapshotRef.loads(disk.previous_source_snapshot_id)
    return nodes_pb2.VsphereSource(
        vm_uuid=uuid, device_key=key, snapshot=now.snapshot if now else "",
        previous_change_id=before.change_id if before else "",
        previous_size_bytes=before.size if before else 0)


async def open_source(locator: nodes_pb2.VsphereSource, site: common_pb2.SiteSettings,
                      env: SourceEnv) -> VsphereDisk:
    return await VsphereDisk.open(
        VsphereSettings.from_site(site, field="source.site"), vm_uuid=locator.vm_uuid,
        device_key=locator.device_key, snapshot=locator.snapshot,
        previous_change_id=locator.previous_change_id,
        previous_size=locator.previous_size_bytes)


async def take_snapshots(spec: nodes_pb2.SnapshotSpec, env: SourceEnv) -> dict[str, str]:
    """The cycle's group: one snapshot per VM, CBT switched on first where it is off,
    snapshots an earlier cycle left removed. Returns disk -> SnapshotRef (JSON)."""
    settings = VsphereSettings.from_site(spec.source.site, field="source.site")

    def run() -> dict[str, str]:
        with Session(settings) as session:
            taken = snapshots.take(session, list(spec.disks), plan=spec.plan, cycle=spec.cycle,
                                   quiesce=spec.quiesce, timeout=env.snapshot_timeout)
        return {disk: ref.dumps() for disk, ref in taken.items()}
    return await asyncio.to_thread(run)


async def drop_snapshots(spec: nodes_pb2.DropSnapshotsSpec, env: SourceEnv) -> None:
    """Removes the plan's snapshots from the group's VMs."""
    settings = VsphereSettings.from_site(spec.source.site, field="source.site")

    def run() -> None:
        with Session(settings) as session:
            snapshots.drop_snapshots(session, list(spec.disks), plan=spec.plan)
    await asyncio.to_thread(run)
