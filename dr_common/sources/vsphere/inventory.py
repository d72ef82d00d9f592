"""Inventory of a vsphere site: one workload per VM (templates left out), its virtual
disks as disks in controller order, with their size, datastore path, controller and
whether changed-block tracking (CBT) is on."""

from __future__ import annotations

import asyncio
from typing import Any

from dr_common import names
from dr_common.sources.base import DiskInfo, WorkloadInfo
from dr_common.vsphere import Session, VsphereSettings

VM_PATHS = ("name", "config.instanceUuid", "config.template", "config.changeTrackingEnabled",
            "config.hardware.device", "runtime.powerState", "guest.toolsRunningStatus")


def disk_locator(vm_uuid: str, device_key: int) -> str:
    """Where a disk is: its VM's instance UUID and its device key (both stable while the
    VM exists; managed object ids change when a VM is re-registered)."""
    return f"{vm_uuid}/{device_key}"


def parse_locator(locator: str) -> tuple[str, int]:
    uuid, _, key = locator.rpartition("/")
    return uuid, int(key)


def virtual_disks(devices: list[Any] | None) -> list[Any]:
    """A VM's VirtualDisk devices, in controller then unit order (the boot disk first
    on a usual layout)."""
    from pyVmomi import vim
    disks = [d for d in devices or () if isinstance(d, vim.vm.device.VirtualDisk)]
    return sorted(disks, key=lambda d: (d.controllerKey or 0, d.unitNumber or 0, d.key))


def controllers(devices: list[Any] | None) -> dict[int, str]:
    return {d.key: (d.deviceInfo.label if d.deviceInfo else type(d).__name__)
            for d in devices or () if hasattr(d, "busNumber")}


def _workloads(session: Session) -> list[WorkloadInfo]:
    from pyVmomi import vim
    found: list[WorkloadInfo] = []
    used: set[str] = set()
    for dc, dc_name in session.datacenters():
        for _vm, p in session.retrieve(vim.VirtualMachine, VM_PATHS, root=dc):
            uuid = p.get("config.instanceUuid", "")
            if not uuid or p.get("config.template"):
                continue
            devices = p.get("config.hardware.device")
            ctl = controllers(devices)
            cbt = "vsphere-cbt" if p.get("config.changeTrackingEnabled") else "vsphere-cbt-off"
            disks = tuple(
                DiskInfo(id=f"disk-{d.key}",
                         display_name=f"{d.deviceInfo.label if d.deviceInfo else d.key} "
                                      f"({d.backing.fileName}, {ctl.get(d.controllerKey, '?')} "
                                      f"unit {d.unitNumber})",
                         locator=disk_locator(uuid, d.key), size=int(d.capacityInBytes),
                         sector_size=512, cbt=cbt)
                for d in virtual_disks(devices))
            ident = names.resource_id(p.get("name", uuid))
            if ident in used:  # two VMs of one name (in different folders or datacenters)
                ident = names.resource_id(f"{ident[:50]}-{uuid[:8]}")
            used.add(ident)
            state = p.get("runtime.powerState", "")
            tools = p.get("guest.toolsRunningStatus", "")
            found.append(WorkloadInfo(
                id=ident, display_name=f"{p.get('name', uuid)} ({dc_name}, {state}, tools "
                                       f"{_tools(tools)})", disks=disks))
    return found


def _tools(status: str) -> str:
    return {"guestToolsRunning": "running", "guestToolsNotRunning": "not running",
            "guestToolsExecutingScripts": "starting"}.get(status, status or "unknown")


async def discover(settings: VsphereSettings) -> list[WorkloadInfo]:
    """Inventory of a `vsphere` site (the datacenter the settings name, or all)."""
    def run() -> list[WorkloadInfo]:
        with Session(settings) as session:
            return _workloads(session)
    return await asyncio.to_thread(run)
