"""Microsoft.Compute/virtualMachines as the harness ARM serves it (REST reference: Virtual
Machines - Create Or Update, Get, Instance View, Power Off, Deallocate, Start, Delete).

A VM is ARM state only - nothing runs. Create is a long-running operation that reports
provisioningState Creating until the peer's VM provisioning delay has passed (so a test
can observe what a product does while it waits), then Succeeded and PowerState/running.
Disks: osDisk and dataDisks with createOption Attach (managedDisk.id of an Unattached
disk), FromImage (an OS disk is made empty: there are no images) or Empty (a new empty
data disk); attached disks become diskState Attached with managedBy, Reserved while the VM
is deallocated. An update (PUT of an existing VM) changes tags, size and the data disks
(attached, or detached when left out or toBeDetached); swapping the OS disk or the NICs
is refused (409) rather than ignored. Delete detaches disks and NICs unless their
deleteOption is Delete.
Knowingly differs: no images, extensions, guest agent or boot diagnostics (instanceView
shows an agent status "Unknown" and no osName/osVersion); vmSize is not checked against
the region's sizes; powerOff/start/delete take no time; a deleted VM's NICs are free at
once (Azure may hold them for 180 s: NicReservedForAnotherVm)."""

from __future__ import annotations

import copy
import secrets
import uuid
from typing import Any, Callable

from tests.peers.azure.arm import ArmError, Context, Kind, Ref, base_resource, invalid
from tests.peers.azure.compute import Disks, _now_iso, operation_not_allowed
from tests.peers.azure.wire import Reply, json_reply

DEFAULT_OS_DISK_GB = 30  # what Azure's platform images mostly make


def _status(code: str, display: str, time: bool = True) -> dict[str, Any]:
    out = {"code": code, "level": "Info", "displayStatus": display}
    if time:
        out["time"] = _now_iso()
    return out


POWER_DISPLAY = {"running": "VM running", "stopped": "VM stopped", "deallocated": "VM deallocated",
                 "starting": "VM starting"}


class VirtualMachines(Kind):
    type_name = "Microsoft.Compute/virtualMachines"
    create_status = (201, 200)

    def __init__(self, disks: Disks):
        self.disks = disks

    # -- create

    def create(self, ctx: Context, existing: dict[str, Any] | None) -> dict[str, Any]:
        body = ctx.body
        props_in = body.get("properties") or {}
        if existing is not None:
            return self._update(ctx, existing)
        resource = base_resource(ctx)  # first: a missing location must not leave disks attached
        vm_size = (props_in.get("hardwareProfile") or {}).get("vmSize")
        if not vm_size:
            raise invalid("Required parameter 'hardwareProfile.vmSize' is missing (null).",
                          "hardwareProfile.vmSize")
        storage = props_in.get("storageProfile") or {}
        if not storage.get("osDisk"):
            raise invalid("Required parameter 'osDisk' is missing (null).", "osDisk")
        nics = self._nics(ctx, props_in.get("networkProfile") or {})
        _check_luns(storage.get("dataDisks") or [])
        # Validate every disk before any is made or attached: a refused PUT changes nothing.
        plans = [("os", storage["osDisk"])] + [("data", d) for d in storage.get("dataDisks") or []]
        for role, disk in plans:
            self._check_disk(ctx, role, disk)
        _check_once([d for _, d in plans])
        vm_id = ctx.ref.id
        os_disk = self._attach(ctx, "os", storage["osDisk"], storage.get("imageReference"))
        data_disks = [self._attach(ctx, "data", d, None) for d in storage.get("dataDisks") or []]
        for nic in nics:
            nic["properties"]["virtualMachine"] = {"id": vm_id}
        props: dict[str, Any] = {
            "vmId": str(uuid.uuid4()),
            "hardwareProfile": {"vmSize": vm_size},
            "storageProfile": {**({"imageReference": storage["imageReference"]}
                                  if storage.get("imageReference") else {}),
                               "osDisk": os_disk, "dataDisks": data_disks,
                               "diskControllerType": storage.get("diskControllerType", "SCSI")},
            "networkProfile": {"networkInterfaces": [
                {"id": n["id"], **({"properties": p["properties"]} if p.get("properties") else {})}
                for n, p in zip(nics, (props_in.get("networkProfile") or {})
                                .get("networkInterfaces") or [])]},
            "provisioningState": "Creating",
            "timeCreated": _now_iso(),
        }
        if props_in.get("osProfile"):
            props["osProfile"] = _os_profile(props_in["osProfile"], os_disk.get("osType"))
        for key in ("diagnosticsProfile", "securityProfile", "priority", "licenseType"):
            if key in props_in:
                props[key] = props_in[key]
        resource.update(properties=props, _power="starting")
        return resource

    def _update(self, ctx: Context, vm: dict[str, Any]) -> dict[str, Any]:
        """A PUT of an existing VM (the SDK's get, change, put): tags, size, and data disks
        attached or detached (left out, or toBeDetached). Swapping the OS disk or the NICs
        is refused rather than silently ignored."""
        props_in = ctx.body.get("properties") or {}
        props = vm["properties"]
        storage_in = props_in.get("storageProfile") or {}
        os_id = ((storage_in.get("osDisk") or {}).get("managedDisk") or {}).get("id")
        if os_id and os_id.lower() != props["storageProfile"]["osDisk"]["managedDisk"]["id"].lower():
            raise operation_not_allowed("The peer does not swap a VM's OS disk: make a new VM.")
        nics = [(n.get("id") or "").lower() for n in
                (props_in.get("networkProfile") or {}).get("networkInterfaces") or []]
        if nics and nics != [n["id"].lower() for n in props["networkProfile"]["networkInterfaces"]]:
            raise operation_not_allowed("The peer does not change a VM's NICs: make a new VM.")
        if "dataDisks" in storage_in:
            props["storageProfile"]["dataDisks"] = self._data_disks(ctx, vm,
                                                                    storage_in["dataDisks"] or [])
        vm["tags"] = dict(ctx.body.get("tags") or vm.get("tags") or {})
        size = (props_in.get("hardwareProfile") or {}).get("vmSize")
        if size:
            props["hardwareProfile"]["vmSize"] = size
        return vm

    def _data_disks(self, ctx: Context, vm: dict[str, Any], specs: list[dict[str, Any]]
                    ) -> list[dict[str, Any]]:
        """The data disks after an update; checked first, then attached and detached."""
        current = {d["managedDisk"]["id"].lower(): d
                   for d in vm["properties"]["storageProfile"]["dataDisks"]}
        wanted = [d for d in specs if not d.get("toBeDetached")]
        _check_luns(wanted)
        _check_once([vm["properties"]["storageProfile"]["osDisk"], *wanted])
        kept, added = [], []
        for spec in wanted:
            disk_id = ((spec.get("managedDisk") or {}).get("id") or "").lower()
            if disk_id in current:
                kept.append(current.pop(disk_id))
            else:
                self._check_disk(ctx, "data", spec)
                added.append(spec)
        for gone in current.values():  # what is left of `current` is detached
            disk = ctx.state.resource(gone["managedDisk"]["id"])
            if disk is not None:
                _detach(disk)
        made = [self._attach(ctx, "data", spec, None) for spec in added]
        if vm["_power"] == "deallocated":
            for spec in made:
                ctx.state.resource(spec["managedDisk"]["id"])["properties"]["diskState"] = "Reserved"
        return sorted(kept + made, key=lambda d: d["lun"])

    def put_reply(self, ctx: Context, resource: dict[str, Any], status: int) -> Reply:
        if status == 200:
            return ctx.lro(200, self.view(ctx, resource))

        def provisioned() -> None:
            resource["properties"]["provisioningState"] = "Succeeded"
            resource["_power"] = "running"
        # The first answer is always Creating, as Azure's is: taken before the operation
        # starts, since with no delay it finishes (and changes `resource`) at once.
        first = copy.deepcopy(self.view(ctx, resource))
        return ctx.lro(201, first, delay=ctx.state.vm_provisioning_delay, finish=provisioned)

    def _nics(self, ctx: Context, network: dict[str, Any]) -> list[dict[str, Any]]:
        refs = network.get("networkInterfaces") or []
        if not refs:
            raise invalid("The virtual machine must have at least one network interface.",
                          "networkProfile.networkInterfaces")
        if len({(r.get("id") or "").lower() for r in refs}) != len(refs):
            raise invalid("A network interface can be used by a VM once only.",
                          "networkProfile.networkInterfaces")
        nics = []
        for ref in refs:
            nic = ctx.state.resource(ref.get("id", ""))
            if nic is None or nic["type"] != "Microsoft.Network/networkInterfaces":
                raise ArmError(404, "NotFound", f"Resource {ref.get('id')} not found.")
            user = (nic["properties"].get("virtualMachine") or {}).get("id")
            if user and user.lower() != ctx.ref.id.lower():
                raise ArmError(400, "NicInUse", f"Network Interface {nic['id']} is used by "
                               f"existing resource {user}. In order to use this network "
                               "interface, detach it from the existing resource first.")
            nics.append(nic)
        return nics

    def _check_disk(self, ctx: Context, role: str, spec: dict[str, Any]) -> None:
        option = spec.get("createOption")
        if option == "Attach":
            disk_id = (spec.get("managedDisk") or {}).get("id")
            disk = ctx.state.resource(disk_id or "")
            if disk is None or disk["type"] != "Microsoft.Compute/disks":
                raise ArmError(404, "NotFound", f"Disk {disk_id} was not found.")
            if disk.get("managedBy"):
                raise operation_not_allowed(f"Disk {disk['name']} is attached to VM "
                                            f"{disk['managedBy']}.")
            if disk["properties"]["diskState"] != "Unattached":
                raise operation_not_allowed(
                    f"Disk {disk['name']} cannot be attached in state "
                    f"{disk['properties']['diskState']}.")
            if role == "os" and not spec.get("osType") and not disk["properties"].get("osType"):
                raise invalid("The osType of an attached OS disk must be given.", "osDisk.osType")
        elif option not in (("FromImage",) if role == "os" else ("Empty",)):
            raise invalid(f"createOption '{option}' is not supported by the peer for "
                          f"{role} disks.", f"{role}Disk.createOption")
        elif option == "Empty" and not isinstance(spec.get("diskSizeGB"), int):
            raise invalid("An Empty data disk needs diskSizeGB.", "dataDisk.diskSizeGB")

    def _attach(self, ctx: Context, role: str, spec: dict[str, Any],
                image: dict[str, Any] | None) -> dict[str, Any]:
        vm_name = ctx.ref.names[-1]
        option = spec["createOption"]
        managed = dict(spec.get("managedDisk") or {})
        if option == "Attach":
            disk = ctx.state.resource(managed["id"])
            assert disk is not None
        else:  # FromImage or Empty: a new, empty disk in the VM's group
            name = spec.get("name") or (f"{vm_name}_OsDisk_1_{secrets.token_hex(16)}"
                                        if role == "os" else
                                        f"{vm_name}_DataDisk_{spec['lun']}")
            gb = spec.get("diskSizeGB") or DEFAULT_OS_DISK_GB
            disk_ref = Ref(ctx.ref.subscription, ctx.ref.group, "Microsoft.Compute", ["disks"],
                           [name])
            disk_body: dict[str, Any] = {"location": ctx.body.get("location"),
                                         "sku": {"name": managed.get("storageAccountType",
                                                                     "Standard_LRS")},
                                         "properties": {"creationData": {"createOption": "Empty"},
                                                        "diskSizeGB": gb}}
            if role == "os":
                disk_body["properties"]["osType"] = spec.get("osType") or _os_type(image)
            disk_ctx = Context(ctx.state, disk_ref, "PUT", ctx.query, disk_body, ctx.principal)
            disk = self.disks.create(disk_ctx, None)
            ctx.state.resources[disk_ref.id.lower()] = disk
            managed["id"] = disk["id"]
        disk["managedBy"] = ctx.ref.id
        disk["properties"]["diskState"] = "Attached"
        if role == "os":
            disk["properties"].setdefault("osType", spec.get("osType"))
        out = {k: v for k, v in spec.items() if k not in ("managedDisk",)}
        out.update(name=disk["name"], caching=spec.get("caching", "ReadWrite" if role == "os"
                                                       else "None"),
                   managedDisk={"storageAccountType": disk["sku"]["name"], "id": disk["id"]},
                   diskSizeGB=disk["properties"]["diskSizeGB"],
                   deleteOption=spec.get("deleteOption", "Detach"))
        if role == "os":
            out["osType"] = disk["properties"].get("osType")
        else:
            out["toBeDetached"] = False
        return out

    # -- views

    def view(self, ctx: Context, resource: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in resource.items() if not k.startswith("_")}
        if ctx.query.get("$expand") == "instanceView" and ctx.method == "GET":
            out = {**out, "properties": {**out["properties"],
                                         "instanceView": self.instance_view(resource)}}
        return out

    def instance_view(self, resource: dict[str, Any]) -> dict[str, Any]:
        props = resource["properties"]
        storage = props["storageProfile"]
        provisioned = props["provisioningState"] == "Succeeded"
        power = resource["_power"]
        disks = [storage["osDisk"], *storage["dataDisks"]]
        return {
            "platformUpdateDomain": 0, "platformFaultDomain": 0,
            "computerName": (props.get("osProfile") or {}).get("computerName", resource["name"]),
            "vmAgent": {"vmAgentVersion": "Unknown", "statuses": [
                _status("ProvisioningState/Unavailable", "Not Ready")]},
            "disks": [{"name": d["name"], "statuses": [
                _status("ProvisioningState/succeeded", "Provisioning succeeded")]} for d in disks],
            "hyperVGeneration": "V1",
            "isVMInStandbyPool": False,
            "statuses": [
                _status("ProvisioningState/succeeded", "Provisioning succeeded") if provisioned
                else _status("ProvisioningState/creating", "Creating"),
                _status(f"PowerState/{power}", POWER_DISPLAY[power], time=False)],
        }

    # -- actions and delete

    def actions(self) -> dict[str, Callable[[Context, dict[str, Any]], Reply]]:
        return {"GET instanceView": lambda ctx, vm: json_reply(200, self.instance_view(vm)),
                "POST powerOff": lambda ctx, vm: self._power(ctx, vm, "stopped"),
                "POST deallocate": lambda ctx, vm: self._power(ctx, vm, "deallocated"),
                "POST start": lambda ctx, vm: self._power(ctx, vm, "running")}

    def _power(self, ctx: Context, vm: dict[str, Any], power: str) -> Reply:
        if vm["properties"]["provisioningState"] != "Succeeded":
            raise operation_not_allowed(f"VM {vm['name']} is still being provisioned.")
        disks = self._disks(ctx, vm)
        exported = [d["name"] for d in disks if d["properties"]["diskState"] == "ActiveSAS"]
        if power == "running" and exported:
            raise operation_not_allowed(f"VM {vm['name']} cannot start while its disks "
                                        f"{exported} have an active SAS: call EndGetAccess.")
        vm["_power"] = power
        for disk in disks:
            if disk["properties"]["diskState"] in ("Attached", "Reserved"):
                disk["properties"]["diskState"] = "Reserved" if power == "deallocated" else "Attached"
        return ctx.lro(202, None)

    def _disks(self, ctx: Context, vm: dict[str, Any]) -> list[dict[str, Any]]:
        storage = vm["properties"]["storageProfile"]
        found = [ctx.state.resource(d["managedDisk"]["id"])
                 for d in [storage["osDisk"], *storage["dataDisks"]]]
        return [d for d in found if d is not None]

    def delete(self, ctx: Context, vm: dict[str, Any]) -> None:
        storage = vm["properties"]["storageProfile"]
        for spec in [storage["osDisk"], *storage["dataDisks"]]:
            disk = ctx.state.resource(spec["managedDisk"]["id"])
            if disk is None:
                continue
            _detach(disk)
            if spec.get("deleteOption") == "Delete":
                disk_ref = Ref(ctx.ref.subscription, ctx.ref.group, "Microsoft.Compute",
                               ["disks"], [disk["name"]])
                self.disks.delete(Context(ctx.state, disk_ref, "DELETE", ctx.query, {},
                                          ctx.principal), disk)
                ctx.state.resources.pop(disk["id"].lower(), None)
        for ref in vm["properties"]["networkProfile"]["networkInterfaces"]:
            nic = ctx.state.resource(ref["id"])
            if nic is None:
                continue
            nic["properties"].pop("virtualMachine", None)
            if (ref.get("properties") or {}).get("deleteOption") == "Delete":
                ctx.state.resources.pop(nic["id"].lower(), None)


def _check_luns(data_disks: list[dict[str, Any]]) -> None:
    luns = [d.get("lun") for d in data_disks]
    if len(set(luns)) != len(luns) or not all(isinstance(lun, int) for lun in luns):
        raise invalid("Each data disk needs its own lun.", "dataDisks")


def _check_once(disks: list[dict[str, Any]]) -> None:
    named = [(d.get("managedDisk") or {}).get("id", "").lower() for d in disks
             if (d.get("managedDisk") or {}).get("id")]
    if len(set(named)) != len(named):
        raise invalid("A disk can be attached to a VM once only.", "storageProfile")


def _detach(disk: dict[str, Any]) -> None:
    disk.pop("managedBy", None)
    disk["properties"]["diskState"] = "Unattached"


def _os_type(image: dict[str, Any] | None) -> str:
    publisher = (image or {}).get("publisher", "")
    return "Windows" if "windows" in publisher.lower() else "Linux"


def _os_profile(profile: dict[str, Any], os_type: str | None) -> dict[str, Any]:
    """What GET shows of an osProfile: never the password."""
    out = {k: v for k, v in profile.items() if k != "adminPassword"}
    out.setdefault("secrets", [])
    if os_type == "Windows":
        out.setdefault("windowsConfiguration", {"provisionVMAgent": True,
                                                "enableAutomaticUpdates": True})
    else:
        out.setdefault("linuxConfiguration", {"disablePasswordAuthentication": False,
                                              "provisionVMAgent": True})
    return out
