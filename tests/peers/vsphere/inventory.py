"""The peer's model of every VM's disks beside vcsim's inventory: which `Disk` (disks.py)
each VM device is, and what vSphere would show for it that vcsim cannot: real capacities
and labels, delta file names and parent chains while snapshots exist, and changeIds, all
written into vcsim's own objects (vcsim/main.go `/_vcsim/disk`) so every PropertyCollector
path (RetrievePropertiesEx, WaitForUpdatesEx, Fetch) shows them alike."""

from __future__ import annotations

import threading
from typing import Any

from tests.peers.vsphere.disks import Disk
from tests.peers.vsphere.vcsim import Vcsim

DEFAULT_CAPACITY = 64 << 20  # vcsim's model disks have no capacity; vSphere's always do


class NotFound(LookupError):
    pass


class Inventory:
    def __init__(self, vcsim: Vcsim):
        self.vcsim = vcsim
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.by_file: dict[str, Disk] = {}  # every layer's file name -> its disk
            self.devices: dict[tuple[str, int], Disk] = {}  # (vm ref, device key) -> disk
            self.pushed: dict[tuple[str, int], tuple[str, str]] = {}  # what vcsim shows
            self.uploaded: set[str] = set()  # descriptors a client PUT (served as put)

    # -- vcsim's view

    def vms(self) -> list[dict[str, Any]]:
        return sorted(self.vcsim.vms(), key=lambda vm: vm["name"])

    def vm(self, name_or_ref: str) -> dict[str, Any]:
        for vm in self.vms():
            if name_or_ref in (vm["name"], vm["ref"]):
                return vm
        raise NotFound(f"no VM {name_or_ref!r}")

    def vm_of_snapshot(self, ref: str) -> tuple[dict[str, Any], list[str]]:
        """The VM a snapshot belongs to, and the snapshot with all its descendants."""
        for vm in self.vms():
            tree = {s["ref"]: s["parent"] for s in vm["snapshots"]}
            if ref in tree:
                family, grew = {ref}, True
                while grew:
                    more = {s for s, p in tree.items() if p in family} - family
                    family |= more
                    grew = bool(more)
                # children first: each removal merges a delta into its parent's layer
                order = sorted(family, key=lambda s: -self._depth(tree, s))
                return vm, order
        raise NotFound(f"no snapshot {ref!r}")

    @staticmethod
    def _depth(tree: dict[str, str], ref: str) -> int:
        depth = 0
        while tree.get(ref):
            ref, depth = tree[ref], depth + 1
        return depth

    def disk(self, vm_name_or_ref: str, disk: int | str) -> Disk:
        """A VM's disk by device key (int) or label ("Hard disk 1")."""
        with self.lock:
            vm = self.sync_vm(self.vm(vm_name_or_ref))
            for d in vm["disks"]:
                if disk in (d["key"], d["label"], str(d["key"])):
                    return self.devices[(vm["ref"], d["key"])]
        raise NotFound(f"VM {vm_name_or_ref!r} has no disk {disk!r}")

    # -- keeping vcsim's objects as vSphere would show them

    def sync(self) -> None:
        with self.lock:
            for vm in self.vms():
                self.sync_vm(vm)

    def sync_vm(self, vm: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            for n, d in enumerate(vm["disks"], 1):
                key = (vm["ref"], d["key"])
                disk = self.devices.get(key) or self.by_file.get(d["file"])
                if disk is None:
                    disk = Disk(d["file"], d["capacity"] or DEFAULT_CAPACITY)
                    self.by_file[d["file"]] = disk
                self.devices[key] = disk
                if vm["cbt"] and not (disk.tracking or disk.pending):
                    # CBT takes effect at the next stun (snapshot, power-on) of a running VM
                    if vm["power"] == "poweredOn":
                        disk.pending = True
                    else:
                        disk.start_tracking()
                elif not vm["cbt"] and (disk.tracking or disk.pending):
                    disk.stop_tracking()
                label = d["label"] if d["label"].startswith("Hard disk") else f"Hard disk {n}"
                wanted = (disk.current_file, disk.change_id())
                if (self.pushed.get(key) != wanted or d["capacity"] != disk.capacity
                        or label != d["label"]):
                    chain = disk.chain()
                    self.vcsim.set_disk("VirtualMachine", vm["ref"], d["key"], wanted[1],
                                        file=chain[0], parents=chain[1:],
                                        capacity=disk.capacity, label=label)
                    self.pushed[key] = wanted
                    d.update(label=label, capacity=disk.capacity, file=chain[0],
                             change_id=wanted[1])
            return vm

    def push_snapshots(self, vm: dict[str, Any]) -> None:
        """Each snapshot's config shows the disk file it froze and its changeId then."""
        with self.lock:
            for d in vm["disks"]:
                disk = self.devices[(vm["ref"], d["key"])]
                for ref, layer in disk.frozen.items():
                    wanted = (layer.name, disk.snap_seq.get(ref, ""))
                    if self.pushed.get((ref, d["key"])) != wanted:
                        chain = disk.chain(layer)
                        self.vcsim.set_disk("VirtualMachineSnapshot", ref, d["key"], wanted[1],
                                            file=chain[0], parents=chain[1:])
                        self.pushed[(ref, d["key"])] = wanted

    def reindex(self, disk: Disk) -> None:
        for name in disk.files():
            self.by_file[name] = disk

    # -- events the front reports after vcsim did them

    def snapshot_created(self, vm_ref: str, snapshot: str) -> None:
        with self.lock:
            vm = self.sync_vm(self.vm(vm_ref))
            for d in vm["disks"]:
                disk = self.devices[(vm["ref"], d["key"])]
                disk.snapshot(snapshot)
                self.reindex(disk)
            self.sync_vm(vm)
            self.push_snapshots(vm)

    def snapshots_removed(self, vm_ref: str, snapshots: list[str]) -> None:
        with self.lock:
            vm = self.vm(vm_ref)
            for d in vm["disks"]:
                disk = self.devices.get((vm["ref"], d["key"]))
                if disk is None:
                    continue
                for ref in snapshots:
                    disk.remove_snapshot(ref)
                    self.pushed.pop((ref, d["key"]), None)
            self.sync_vm(vm)
            self.push_snapshots(vm)

    def powered_on(self, vm_ref: str) -> None:
        with self.lock:
            vm = self.vm(vm_ref)
            for d in vm["disks"]:
                disk = self.devices.get((vm["ref"], d["key"]))
                if disk is not None and disk.pending:
                    disk.start_tracking()
            self.sync_vm(vm)

    def destroyed(self, vm_ref: str) -> None:
        """The VM's disk files are deleted with it."""
        with self.lock:
            for key in [k for k in self.devices if k[0] == vm_ref]:
                disk = self.devices.pop(key)
                for name in disk.files():
                    self.by_file.pop(name, None)
                    self.uploaded.discard(name)

    def cbt_reset(self, vm_name_or_ref: str, disk_id: int | str) -> None:
        with self.lock:
            disk = self.disk(vm_name_or_ref, disk_id)
            disk.start_tracking()
            self.sync_vm(self.vm(vm_name_or_ref))

    # -- datastore files

    def flat_file(self, ds_path: str) -> Disk | None:
        """The disk whose base `<name>-flat.vmdk` this is ("[ds] dir/name-flat.vmdk")."""
        if not ds_path.endswith("-flat.vmdk"):
            return None
        disk = self.by_file.get(ds_path[:-len("-flat.vmdk")] + ".vmdk")
        return disk if disk is not None and disk.base == ds_path[:-10] + ".vmdk" else None

    def put_flat(self, ds_path: str, disk: Disk) -> None:
        with self.lock:
            old = self.by_file.get(disk.base)
            if old is not None:
                for key, d in list(self.devices.items()):
                    if d is old:
                        self.devices[key] = disk
            self.by_file[disk.base] = disk
