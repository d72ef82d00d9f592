"""Driving the vSphere peer's inventory through pyvmomi, as an administrator would in the
vSphere client: logging in, finding a VM, adding a disk, taking a snapshot; and the
drctl arguments of a site on the peer."""

from __future__ import annotations

import ssl

from pyVim.connect import SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim


def connect(peer, password: str | None = None):
    ctx = ssl.create_default_context(cafile=str(peer.ca_file))
    return SmartConnect(host=peer.host, port=peer.port, user=peer.user,
                        pwd=password or peer.password, sslContext=ctx)


def find_vm(si, name: str):
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        return next(vm for vm in view.view if vm.name == name)
    finally:
        view.Destroy()


def disks(config) -> list:
    return [d for d in config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]


def add_disk(vm, size: int) -> int:
    """Adds a thin disk of `size` bytes on the first disk's controller; its device key."""
    first = disks(vm.config)[0]
    used = {d.unitNumber for d in disks(vm.config) if d.controllerKey == first.controllerKey}
    spec = vim.vm.device.VirtualDeviceSpec(
        operation="add", fileOperation="create",
        device=vim.vm.device.VirtualDisk(
            key=-1, controllerKey=first.controllerKey,
            unitNumber=min(set(range(16)) - used - {7}), capacityInKB=size // 1024,
            backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(diskMode="persistent",
                                                                  thinProvisioned=True)))
    WaitForTask(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[spec])))
    return disks(vm.config)[-1].key


def enable_cbt(vm) -> None:
    """CBT on, in effect at once: the stun (a snapshot taken and removed) a running VM
    needs."""
    WaitForTask(vm.ReconfigVM_Task(vim.vm.ConfigSpec(changeTrackingEnabled=True)))
    WaitForTask(snapshot(vm, "stun").RemoveSnapshot_Task(removeChildren=False))


def snapshot(vm, name: str, quiesce: bool = False):
    task = vm.CreateSnapshot_Task(name=name, description="", memory=False, quiesce=quiesce)
    WaitForTask(task)
    return task.info.result


def site_args(peer) -> list[str]:
    """`drctl site add` arguments of a vsphere site on the peer (the password goes in
    VSPHERE_PASSWORD)."""
    return ["--kind", "vsphere", "--url", peer.url, "--user", peer.user,
            "--vsphere-ca-file", str(peer.ca_file)]
