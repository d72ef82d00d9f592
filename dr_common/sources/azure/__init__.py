"""The `azure` site kind: Azure VMs whose managed disks are read from incremental
snapshots over the page blob protocol.

Inventory is Resource Manager: one workload per VM of the site's resource groups, its
managed disks as disks (OS disk first, then data disks by LUN). A consistent point is an
incremental snapshot of every disk of a VM, started together (`snapshots`); the
snapshots are kept as the next cycle's base and deleted by the cycle after the point
that needed them is gone (like aws's).

Changed pages come from the snapshots themselves (`disk`): a read SAS per snapshot,
`Get Page Ranges` for the first cycle, and `Get Page Ranges` against the previous
point's snapshot afterwards, cleared pages as zeros.

The package: `calls` (the Remote layers), `inventory`, `snapshots` and `disk`
(`AzureDisk`); this module is the adapter the source registry opens.
"""

from __future__ import annotations

import structlog

from dr_common.azure import AzureSettings, resource_group_of
from dr_common.proto.dr.v1 import common_pb2, nodes_pb2
from dr_common.sources.azure.disk import AzureDisk
from dr_common.sources.azure.inventory import discover
from dr_common.sources.azure.snapshots import (TAG_CYCLE, TAG_PLAN, TAG_ROLE, delete_snapshots,
                                               snapshot_group, stale_snapshots)
from dr_common.sources.base import DiskToRead, SourceEnv

__all__ = ["AzureDisk", "discover", "locate", "open_source", "take_snapshots"]

log = structlog.get_logger()


def locate(disk: DiskToRead) -> nodes_pb2.AzureSource:
    return nodes_pb2.AzureSource(disk_id=disk.locator, snapshot_id=disk.snapshot_id,
                                 previous_snapshot_id=disk.previous_source_snapshot_id,
                                 size_bytes=disk.size)


async def open_source(locator: nodes_pb2.AzureSource, site: common_pb2.SiteSettings,
                      env: SourceEnv) -> AzureDisk:
    return await AzureDisk.open(AzureSettings.from_site(site, field="source.site"),
                                snapshot_id=locator.snapshot_id,
                                previous_snapshot_id=locator.previous_snapshot_id,
                                disk_id=locator.disk_id)


async def take_snapshots(spec: nodes_pb2.SnapshotSpec,
                         env: SourceEnv) -> list[nodes_pb2.SourceSnapshot]:
    """The cycle's consistency group: incremental snapshots of each VM's disks, started
    together. First deletes the snapshots of earlier cycles no point needs."""
    settings = AzureSettings.from_site(spec.source.site, field="source.site")
    marker = {TAG_PLAN: spec.plan, TAG_ROLE: "change-marker"}
    by_vm: dict[str, list[str]] = {}
    for d in spec.disks:
        by_vm.setdefault(d.workload, []).append(d.locator)
    groups = {resource_group_of(d.locator) for d in spec.disks} | set(settings.resource_groups)
    keep = {k.lower() for k in spec.keep_snapshot_ids}
    stale = [i for i in await stale_snapshots(settings, groups, marker)
             if i.lower() not in keep]
    if stale:
        await delete_snapshots(settings, stale)
        log.info("stale source snapshots deleted", count=len(stale))
    snaps = await snapshot_group(settings, by_vm, tags={**marker, TAG_CYCLE: spec.cycle},
                                 cycle=spec.cycle)
    log.info("consistency group snapshotted", disks=len(snaps))
    return [nodes_pb2.SourceSnapshot(disk=d.disk, snapshot_id=snaps[d.locator],
                                     consistency="crash-consistent") for d in spec.disks]
