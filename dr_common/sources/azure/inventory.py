"""Inventory of an azure site: one workload per VM of its resource groups, the VM's
managed disks as disks (OS disk first, then data disks by LUN)."""

from __future__ import annotations

from typing import Any

from dr_common import names
from dr_common.azure import Arm, AzureSettings
from dr_common.sources.azure.calls import listed
from dr_common.sources.base import DiskInfo, WorkloadInfo

CBT = "azure-incremental-snapshots"


def vm_disks(vm: Any) -> list[tuple[str, str, str]]:
    """(disk id in the plan, role, managed disk resource id) of a VM, OS disk first."""
    profile = vm.storage_profile
    found = []
    os_disk = profile.os_disk if profile else None
    if os_disk is not None and os_disk.managed_disk is not None and os_disk.managed_disk.id:
        found.append(("os-disk", "OS disk", os_disk.managed_disk.id))
    for d in sorted((profile.data_disks or []) if profile else [], key=lambda d: d.lun):
        if d.managed_disk is not None and d.managed_disk.id:
            found.append((f"lun-{d.lun}", f"LUN {d.lun}", d.managed_disk.id))
    return found


async def discover(settings: AzureSettings) -> list[WorkloadInfo]:
    """Inventory of an `azure` site: the VMs of each of its resource groups."""
    found: list[WorkloadInfo] = []
    used: set[str] = set()
    async with Arm(settings) as arm:
        for group in settings.resource_groups:
            vms = await listed("list-vms", lambda g=group: arm.compute.virtual_machines.list(g),
                               f"list the VMs of resource group {group}")
            disks = {d.id.lower(): d for d in await listed(
                "list-disks", lambda g=group: arm.compute.disks.list_by_resource_group(g),
                f"list the managed disks of resource group {group}")}
            for vm in sorted(vms, key=lambda v: v.name):
                ident = names.resource_id(vm.name)
                if ident in used:  # one name in two resource groups
                    ident = names.resource_id(f"{ident[:50]}-{(vm.vm_id or group)[:8]}")
                used.add(ident)
                infos = []
                for disk_id, role, resource in vm_disks(vm):
                    disk = disks.get(resource.lower())
                    size = int(disk.disk_size_bytes or (disk.disk_size_gb or 0) << 30) \
                        if disk is not None else 0
                    name = resource.rsplit("/", 1)[-1]
                    infos.append(DiskInfo(id=disk_id, display_name=f"{name} ({role})",
                                          locator=resource, size=size, sector_size=512,
                                          cbt=CBT))
                found.append(WorkloadInfo(id=ident, display_name=f"{vm.name} ({group})",
                                          disks=tuple(infos)))
    return found
