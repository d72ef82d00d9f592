"""The consistency group of an azure plan: an incremental snapshot of every managed disk
of a VM, started together, and the deletion of snapshots no point needs.

Azure has no multi-disk atomic incremental snapshot: the snapshots of one VM's disks are
started at the same moment and the *spread* (the time between the first and the last
snapshot's `timeCreated`) is recorded, so an operator sees how close the disks are.
Each snapshot is crash-consistent. Incremental snapshots store only what changed since
the disk's previous one, and `Get Page Ranges` can diff two of them, which is how the
next cycle finds the changed pages."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Iterable
from typing import Any

import structlog

from dr_common.azure import Arm, AzureSettings, resource_group_of, resource_name
from dr_common.errors import NotFound, SourceError
from dr_common.sources.azure.calls import arm as arm_call
from dr_common.sources.azure.calls import listed, operation

log = structlog.get_logger()

TAG_PLAN = "hybrid-dr:plan"
TAG_CYCLE = "hybrid-dr:cycle"
TAG_ROLE = "hybrid-dr:role"
_NAME_MAX = 80  # Azure's limit for a snapshot's name


def snapshot_name(disk_id: str, cycle: str) -> str:
    """A snapshot's name: the disk's, the cycle's id, and a hash of both that keeps it
    unique when they are shortened to Azure's 80 characters."""
    disk, cycle_id = resource_name(disk_id), cycle.rsplit("/", 1)[-1]
    digest = hashlib.sha256(f"{disk_id.lower()}|{cycle}".encode()).hexdigest()[:8]
    head = f"{disk}-{cycle_id}"[:_NAME_MAX - 9]
    return f"{head}-{digest}"


async def _snapshot(arm: Arm, disk_id: str, cycle: str, tags: dict[str, str]) -> Any:
    from azure.mgmt.compute.models import CreationData, Snapshot
    group, name = resource_group_of(disk_id), resource_name(disk_id)
    try:
        disk = await arm_call("get-disk", lambda: arm.compute.disks.get(group, name),
                              f"read managed disk {name}")
    except NotFound:
        raise SourceError(f"managed disk {disk_id} is gone: remove it from the plan or run "
                          f"the site inventory again", reason="disk-not-found",
                          retryable=False) from None
    snap_name = snapshot_name(disk_id, cycle)
    body = Snapshot(location=disk.location, incremental=True, tags=tags,
                    creation_data=CreationData(create_option="Copy",
                                               source_resource_id=disk.id))
    return await operation(
        "create-snapshot",
        lambda: arm.compute.snapshots.begin_create_or_update(group, snap_name, body),
        f"take an incremental snapshot of managed disk {name}")


async def snapshot_group(settings: AzureSettings, vm_disks: dict[str, list[str]], *,
                         tags: dict[str, str], cycle: str) -> dict[str, str]:
    """Incremental snapshots of each VM's listed disks, started together. Returns disk
    resource id -> snapshot resource id. On any failure the snapshots made are deleted,
    so a failed cycle leaves nothing behind."""
    made: dict[str, str] = {}
    async with Arm(settings) as arm:
        try:
            disks = [d for ds in vm_disks.values() for d in ds]
            results = await asyncio.gather(*(_snapshot(arm, d, cycle, tags) for d in disks),
                                           return_exceptions=True)
            for disk_id, result in zip(disks, results):
                if not isinstance(result, BaseException):
                    made[disk_id] = result.id
            failed = next((r for r in results if isinstance(r, BaseException)), None)
            if failed is not None:
                raise failed
            created = {d: r.time_created for d, r in zip(disks, results)}
            for vm, ds in vm_disks.items():
                times = [created[d] for d in ds if created.get(d) is not None]
                if len(times) > 1:
                    log.info("consistency group spread", workload=vm, disks=len(ds),
                             spread_seconds=round((max(times) - min(times)).total_seconds(), 3))
        except BaseException:
            with contextlib.suppress(Exception):
                await delete(arm, made.values())
            raise
    return made


async def delete(arm: Arm, snapshot_ids: Iterable[str]) -> None:
    async def one(sid: str) -> None:
        group, name = resource_group_of(sid), resource_name(sid)
        try:
            await operation("delete-snapshot",
                            lambda: arm.compute.snapshots.begin_delete(group, name),
                            f"delete snapshot {name}")
        except NotFound:
            pass  # already gone is what we wanted
    await asyncio.gather(*(one(s) for s in snapshot_ids))


async def stale_snapshots(settings: AzureSettings, groups: Iterable[str],
                          tags: dict[str, str]) -> list[str]:
    """Our snapshots in `groups` carrying all of `tags` (a plan's), for cleanup."""
    found: list[str] = []
    async with Arm(settings) as arm:
        for group in sorted(set(groups)):
            snaps = await listed(
                "list-snapshots",
                lambda g=group: arm.compute.snapshots.list_by_resource_group(g),
                f"list the snapshots of resource group {group}")
            found += [s.id for s in snaps
                      if all((s.tags or {}).get(k) == v for k, v in tags.items())]
    return found


async def delete_snapshots(settings: AzureSettings, snapshot_ids: Iterable[str]) -> None:
    ids = list(snapshot_ids)
    if ids:
        async with Arm(settings) as arm:
            await delete(arm, ids)
