"""Azure recovery: VMs made from a recovery point's disks, one boot group at a time.

Where the disks come from is the point's own fact, per disk (RecoveredDisk):
- a point of the `azure-disk` target is one blob snapshot per disk of its replica
  page blob (`snapshot_id`, `azblob://container/...vhd?snapshot=T`): `prepare` copies
  it to a staging blob beside the replica (server-side; ARM imports blobs, not blob
  snapshots) and imports that as a managed disk (`createOption=Import`, in the recovery
  site's first resource group), then deletes the copy — Azure moves the data, nothing
  goes through nodes or the control plane;
- a point of a repository (`fs`, `s3`, `azblob`: `root_hash`) is chunks Azure cannot
  read: `prepare` has nodes write each disk into a new managed disk through direct
  upload (the `azure` restore destination, dr_common/targets/restores/azure.py).
Either way the disk gets a name made from the execution, the workload and its index,
so `recover` finds it again and a retried `prepare` reuses it.

`recover` then starts the boot groups in order. For each workload: a NIC in the mapped
subnet (in test mode the isolated test subnet instead, so a drill never meets
production), with the mapped network security group and the static private IP if one
is planned; then the VM, its OS disk and data disks attached (`createOption=Attach`,
LUN = index - 1), of the planned size. A group is up when every VM of it reports
provisioningState Succeeded; only then does the next group start.

Everything made is tagged `hybrid-dr:execution=<execution>` (with the workload and
test flag) in the PUT that makes it, so `cleanup` finds the VMs, NICs and disks by tag
and deletes them, in that order (a disk or NIC is released only when its VM is gone).
The point's snapshots are never touched: they are the recovery point.

Every ARM call goes through the site's ArmLimiter (azure_limiter.py): a few in
flight, 429s (with Retry-After) hold back every call of the site and are counted,
and a low x-ms-ratelimit-remaining-* budget slows calls down.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import re
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import structlog

from dr_common.azure import AzureSettings, resource_group_of, resource_name
from dr_common.errors import FailedPrecondition, InvalidArgument, NotFound
from dr_common.proto.dr.v1 import nodes_pb2
from dr_common.targets import REPOSITORY_KINDS
from dr_common.targets.azure_disk import (ManagedDisks, Replicas, azure_name,
                                          import_snapshot, parse_snapshot_ref)
from dr_control.recovery.azure_limiter import ARM_CONCURRENCY, ArmLimiter
from dr_control.config import RecoveryLimits
from dr_control.recovery.base import (TAG_EXECUTION, TAG_TEST, TAG_WORKLOAD, BootGroup,
                                      DiskMover, EventSink, RecoveredDisk, RecoveredInstance,
                                      RecoveryEvent, RecoveryFailed, RecoveryProvider,
                                      WorkloadSpec, execution_tags, prepare_disks,
                                      raise_group_failures, refuse_foreign)

log = structlog.get_logger()

PROVIDER = "azure"
# RecoveryWorkload.azure's fields, as stored.
AZURE_KEYS = ("vm_size", "subnet_id", "network_security_group_id", "private_ip",
              "test_subnet_id", "os_type", "disk_sku")
OS_TYPES = ("Linux", "Windows")
# Disks made at once (copies are ARM calls; uploads are node tasks, bounded by nodes).
DISKS_IN_FLIGHT = 4
# Provisioning is polled fast at first (the harness and a small VM are done in
# seconds), then at most every POLL_CAP (each poll is a read from the ARM budget).
POLL_FIRST = 0.1
POLL_CAP = 5.0
# A VM name is at most 64 characters (Linux; an attached OS disk sets no computer
# name, so Windows' 15-character limit does not apply).
VM_NAME_MAX = 64
# A VM has one OS disk and at most 64 data disks (the largest sizes).
MAX_DATA_DISKS = 64
_SUBNET = re.compile(r"/subscriptions/[^/]+/resourceGroups/(?P<group>[^/]+)/providers/"
                     r"Microsoft\.Network/virtualNetworks/(?P<vnet>[^/]+)/subnets/"
                     r"(?P<subnet>[^/]+)", re.IGNORECASE)
_NSG = re.compile(r"/subscriptions/[^/]+/resourceGroups/(?P<group>[^/]+)/providers/"
                  r"Microsoft\.Network/networkSecurityGroups/(?P<name>[^/]+)", re.IGNORECASE)
# Azure keeps the first four addresses of a subnet and its last for itself.
_RESERVED_LOW, _RESERVED_HIGH = 4, 1


# --- the plan's settings ---------------------------------------------------------------

def check_settings(where: str, given: dict[str, Any]) -> dict[str, Any]:
    """RecoveryWorkload.azure, checked on its own and normalized."""
    unknown = sorted(set(given) - set(AZURE_KEYS))
    if unknown:
        raise InvalidArgument(f"{where}: unknown azure setting {unknown[0]!r} (known: "
                              f"{', '.join(AZURE_KEYS)})", field=f"{where}.azure.{unknown[0]}")
    v = {k: str(given.get(k) or "").strip() for k in AZURE_KEYS}

    def bad(key: str, message: str) -> InvalidArgument:
        return InvalidArgument(f"{where}: {message}", field=f"{where}.azure.{key}")

    if not v["vm_size"]:
        raise bad("vm_size", "a VM size is needed (e.g. Standard_D2s_v3)")
    for key in ("subnet_id", "test_subnet_id"):
        if (v[key] or key == "subnet_id") and not _SUBNET.fullmatch(v[key]):
            raise bad(key, f"a subnet is a resource id, /subscriptions/S/resourceGroups/G/"
                           f"providers/Microsoft.Network/virtualNetworks/V/subnets/N; got "
                           f"{v[key]!r}")
    if v["network_security_group_id"] and not _NSG.fullmatch(v["network_security_group_id"]):
        raise bad("network_security_group_id", "a network security group is a resource id, "
                  ".../providers/Microsoft.Network/networkSecurityGroups/N; got "
                  f"{v['network_security_group_id']!r}")
    if v["private_ip"]:
        try:
            ipaddress.IPv4Address(v["private_ip"])
        except ValueError:
            raise bad("private_ip", f"{v['private_ip']!r} is not an IPv4 address") from None
    os_type = next((t for t in OS_TYPES if t.lower() == v["os_type"].lower()), "") \
        if v["os_type"] else OS_TYPES[0]
    if not os_type:
        raise bad("os_type", f"os_type is {' or '.join(OS_TYPES)}, got {v['os_type']!r}")
    v["os_type"] = os_type
    return v


def _digest(execution: str) -> str:
    return hashlib.sha256(execution.encode()).hexdigest()[:12]


def _short(workload: str) -> str:
    return workload.rsplit("/", 1)[-1]


def disk_name(execution: str, workload: str, index: int) -> str:
    """The managed disk of a workload's disk `index` (0: the OS disk) in an execution."""
    return azure_name("hdr", _digest(execution), _short(workload), f"disk{index}")


def vm_name(execution: str, workload: str) -> str:
    return azure_name(_short(workload), "dr", _digest(execution)[:8], limit=VM_NAME_MAX)


def nic_name(execution: str, workload: str) -> str:
    return azure_name(_short(workload), "dr", _digest(execution)[:8], "nic")


def _nic_subnet(v: dict[str, Any], test_mode: bool) -> str:
    return v["test_subnet_id"] if test_mode else v["subnet_id"]


def _in_subnet(ip: str, prefixes: Sequence[str]) -> str:
    """"" if `ip` is a usable address of one of `prefixes`; else why not."""
    address = ipaddress.IPv4Address(ip)
    for prefix in prefixes:
        net = ipaddress.ip_network(prefix, strict=False)
        if address in net:
            offset = int(address) - int(net.network_address)
            if offset < _RESERVED_LOW or offset > net.num_addresses - 1 - _RESERVED_HIGH:
                return f"{ip} is one of the addresses Azure reserves in {prefix}"
            return ""
    return f"{ip} is outside the subnet's prefix {', '.join(prefixes) or '(none)'}"


# --- the provider ------------------------------------------------------------------------

class AzureProvider(RecoveryProvider):
    """Recovery into Azure as the registry's `azure` provider."""

    kind = PROVIDER
    point_kinds = ("azure-disk", *REPOSITORY_KINDS)
    summary = ("Azure recovery makes managed disks from azure-disk snapshots or from the "
               "disks of repository points")

    def __init__(self, settings: dict[str, Any], limiter: ArmLimiter) -> None:
        self.settings = AzureSettings.from_dict(dict(settings), field_prefix="recovery_site.azure")
        self.limiter = limiter

    @classmethod
    def new_limiter(cls, limits: RecoveryLimits = RecoveryLimits()) -> ArmLimiter:
        return ArmLimiter(concurrency=limits.api_calls_in_flight or ARM_CONCURRENCY)

    @classmethod
    def check_workload(cls, where: str, settings: dict[str, Any]) -> dict[str, Any]:
        refuse_foreign(where, settings, ("azure",), PROVIDER)
        return {"azure": check_settings(where, dict(settings.get("azure") or {}))}

    @classmethod
    def check_plan_settings(cls, workloads: Sequence[tuple[str, dict[str, Any]]]) -> None:
        planned: dict[tuple[str, str], str] = {}
        for where, settings in workloads:
            v = settings["azure"]
            if not v["private_ip"]:
                continue
            key = (v["subnet_id"].lower(), v["private_ip"])
            if key in planned:
                raise InvalidArgument(f"{v['private_ip']} is planned for {planned[key]} too",
                                      field=f"{where}.azure.private_ip")
            planned[key] = where

    def _disks(self) -> ManagedDisks:
        """The site's ARM clients, every call through the site's limiter."""
        return ManagedDisks(self.settings, service="azure-recovery", arm_calls=self.limiter,
                            on_response=self.limiter.observe)

    # -- check

    def _check_plan(self, execution: str, groups: Sequence[BootGroup], test_mode: bool) -> None:
        if not execution:
            raise InvalidArgument("an execution id is needed (it tags what recovery creates)",
                                  field="execution")
        if not self.settings.location:
            raise InvalidArgument("an Azure recovery site needs a location (the region its "
                                  "VMs and disks are made in)",
                                  field="recovery_site.azure.location")
        specs = [s for g in groups for s in g.instances]
        if not specs:
            raise InvalidArgument("the recovery plan has no workloads", field="boot_groups")
        for spec in specs:
            missing = [d.disk for d in spec.disks if not (d.snapshot_id or d.root_hash)]
            if missing or not spec.disks:
                raise FailedPrecondition(
                    f"workload {spec.workload}: {', '.join(missing) or 'no disk'} has neither "
                    f"a snapshot nor a repository manifest in the recovery point")
            if len(spec.disks) > 1 + MAX_DATA_DISKS:
                raise FailedPrecondition(f"workload {spec.workload} has {len(spec.disks)} "
                                         f"disks; an Azure VM takes at most "
                                         f"{1 + MAX_DATA_DISKS}")
            if test_mode and not spec.settings["azure"]["test_subnet_id"]:
                raise InvalidArgument(
                    f"workload {spec.workload}: a test drill puts the NIC in an isolated "
                    f"subnet, so recovered VMs never meet production; set one",
                    field="azure.test_subnet_id")

    async def check(self, execution: str, groups: Sequence[BootGroup], *,
                    test_mode: bool = False) -> None:
        self._check_plan(execution, groups, test_mode)
        specs = [s for g in groups for s in g.instances]
        async with self._disks() as disks:
            subnets: dict[str, Any] = {}
            for spec in specs:
                v = spec.settings["azure"]
                for key in ("subnet_id", "test_subnet_id"):
                    if v[key] and v[key].lower() not in subnets:
                        subnets[v[key].lower()] = await _subnet(disks, spec.workload, v[key],
                                                                f"azure.{key}")
                if v["network_security_group_id"]:
                    await _nsg(disks, spec.workload, v["network_security_group_id"])
                if v["private_ip"]:
                    key = "test_subnet_id" if test_mode else "subnet_id"
                    subnet = subnets[v[key].lower()]
                    prefixes = list(subnet.address_prefixes or []) or (
                        [subnet.address_prefix] if subnet.address_prefix else [])
                    why = _in_subnet(v["private_ip"], prefixes)
                    if why:
                        raise InvalidArgument(f"workload {spec.workload}: {why} "
                                              f"({resource_name(v[key])})",
                                              field="azure.private_ip")
                for d in spec.disks:
                    if d.snapshot_id:
                        await _check_snapshot(self.settings, spec.workload, d)

    # -- prepare: the managed disks

    async def prepare(self, execution: str, groups: Sequence[BootGroup], *,
                      mover: DiskMover, on_event: EventSink) -> None:
        async with self._disks() as disks:
            async def make(spec: WorkloadSpec, index: int) -> tuple[str, str]:
                name = disk_name(execution, spec.workload, index)
                # prepare is not told the mode: a disk is the same in a drill, and the
                # execution's tag is what cleanup needs.
                tags = execution_tags(execution, spec.workload, False, spec.tags)
                tags.pop(TAG_TEST)
                how = await _make_disk(disks, mover, spec.disks[index], name, tags,
                                       spec.settings["azure"]["disk_sku"])
                return name, how

            await prepare_disks(groups, make, on_event, in_flight=self.restores_in_flight(DISKS_IN_FLIGHT))

    # -- recover: NICs and VMs, group by group

    async def recover(self, execution: str, groups: Sequence[BootGroup], *, test_mode: bool,
                      on_event: EventSink, running_timeout: float) -> list[RecoveredInstance]:
        self._check_plan(execution, groups, test_mode)
        recovered: list[RecoveredInstance] = []
        async with self._disks() as disks:
            for group in groups:
                results = await asyncio.gather(
                    *(_start(disks, execution, group.name, spec, test_mode, on_event)
                      for spec in group.instances), return_exceptions=True)
                raise_group_failures(group, results, "VM(s)", execution)
                recovered += await _wait_provisioned(disks, group, dict(zip(
                    (s.workload for s in group.instances), results)), running_timeout,
                    on_event)
                on_event(RecoveryEvent(time.monotonic(), group.name, "", "group-running",
                                       f"{len(group.instances)} VM(s) provisioned"))
        return recovered

    # -- cleanup

    async def cleanup(self, execution: str, *, on_event: EventSink) -> dict[str, list[str]]:
        if not execution:
            raise InvalidArgument("which execution to clean up?", field="execution")
        deleted: dict[str, list[str]] = {}
        async with self._disks() as disks:
            compute, network, group = disks.arm.compute, disks.arm.network, disks.group
            # VMs first: their NICs and disks are released only when they are gone.
            for key, step, lister, deleter in (
                    ("vms", "cleanup-instances", compute.virtual_machines.list,
                     compute.virtual_machines.begin_delete),
                    ("network_interfaces", "cleanup-network-interfaces",
                     network.network_interfaces.list, network.network_interfaces.begin_delete),
                    ("disks", "cleanup-volumes", compute.disks.list_by_resource_group,
                     compute.disks.begin_delete)):
                deleted[key] = await _delete_tagged(disks, execution, key, lister, deleter,
                                                    group)
                on_event(RecoveryEvent(time.monotonic(), "", "", step, ", ".join(deleted[key])))
        log.info("recovery cleaned up", execution=execution,
                 **{k: len(v) for k, v in deleted.items()}, arm=self.limiter.stats())
        return deleted


# --- the steps, on one site's clients ------------------------------------------------------

async def _subnet(disks: ManagedDisks, workload: str, subnet_id: str, field_: str) -> Any:
    m = _SUBNET.fullmatch(subnet_id)
    assert m is not None  # check_settings made sure
    try:
        return await disks.call("get-subnet", lambda: disks.arm.network.subnets.get(
            m["group"], m["vnet"], m["subnet"]), f"read subnet {m['subnet']}")
    except NotFound:
        raise InvalidArgument(f"workload {workload}: subnet {m['subnet']} of virtual network "
                              f"{m['vnet']} (resource group {m['group']}) does not exist",
                              field=field_) from None


async def _nsg(disks: ManagedDisks, workload: str, nsg_id: str) -> Any:
    m = _NSG.fullmatch(nsg_id)
    assert m is not None
    try:
        return await disks.call("get-nsg", lambda: disks.arm.network.network_security_groups.get(
            m["group"], m["name"]), f"read network security group {m['name']}")
    except NotFound:
        raise InvalidArgument(f"workload {workload}: network security group {m['name']} "
                              f"(resource group {m['group']}) does not exist",
                              field="azure.network_security_group_id") from None


@contextlib.asynccontextmanager
async def _replicas(settings: AzureSettings, ref: str) -> AsyncIterator[tuple[Replicas, str]]:
    """The azure-disk replicas' container holding snapshot `ref`, and its blob's name."""
    container, blob, _ = parse_snapshot_ref(ref)
    async with Replicas(settings, f"azblob://{container}",
                        service="azure-recovery-storage") as replicas:
        yield replicas, blob


async def _check_snapshot(settings: AzureSettings, workload: str, disk: RecoveredDisk) -> None:
    if not settings.storage_account_url:
        raise InvalidArgument("points of an azure-disk target are blob snapshots in the "
                              "recovery site's storage account: give the site its "
                              "storage_account_url", field="recovery_site.azure."
                                                           "storage_account_url")
    _, _, snapshot = parse_snapshot_ref(disk.snapshot_id)
    async with _replicas(settings, disk.snapshot_id) as (replicas, blob):
        source = replicas.blob(blob, snapshot, replicas.container_name)
        try:
            await replicas.storage.call("get-properties", source.get_blob_properties,
                                        what=f"read snapshot {snapshot} of {blob}")
        except NotFound:
            raise InvalidArgument(f"workload {workload}: snapshot {snapshot} of replica "
                                  f"{blob} ({disk.disk}) does not exist (its recovery point "
                                  f"was deleted?)", field="disks.snapshot_id") from None


async def _make_disk(disks: ManagedDisks, mover: DiskMover, disk: RecoveredDisk, name: str,
                     tags: dict[str, str], sku: str) -> str:
    """Makes (or finds) the managed disk `name` with `disk`'s content; says how."""
    if disk.snapshot_id:
        existing = await disks.get_disk(name)
        if existing is not None and existing.provisioning_state == "Succeeded" and \
                (existing.tags or {}).get(TAG_EXECUTION) == tags[TAG_EXECUTION]:
            return "imported by an earlier attempt"
        return await _import_snapshot(disks, disk.snapshot_id, name, tags, sku)
    # Always through the mover, which reuses a restore already done to this destination:
    # only the restore knows whether it verified what it wrote.
    result = await mover.restore(disk, nodes_pb2.RestoreDestination(
        azure=nodes_pb2.AzureManagedDisk(name=name, size_bytes=disk.size_bytes, tags=tags,
                                         sku=sku)))
    return f"{disk.size_bytes} bytes uploaded by a node; verified {result.verified}"


async def _import_snapshot(disks: ManagedDisks, ref: str, name: str, tags: dict[str, str],
                           sku: str) -> str:
    """An azure-disk point's disk imported as managed disk `name`, as that target's
    restores do (Azure moves the data). The import PUT is idempotent: a retry after a
    half-made import asks for it again."""
    async with _replicas(disks.settings, ref) as (replicas, blob):
        await import_snapshot(replicas, disks, ref, name, tags, sku=sku)
    return f"imported from snapshot {parse_snapshot_ref(ref)[2]} of {blob}"


async def _start(disks: ManagedDisks, execution: str, group: str, spec: WorkloadSpec,
                 test_mode: bool, on_event: EventSink) -> str:
    """Makes (or finds) the workload's NIC and VM; returns the VM's name. The VM PUT is
    not waited for here: provisioning is polled for the whole group together."""
    from azure.mgmt.compute import models as cm
    from azure.mgmt.network import models as nm
    v = spec.settings["azure"]
    tags = execution_tags(execution, spec.workload, test_mode, spec.tags)
    name = vm_name(execution, spec.workload)
    compute, network, rg = disks.arm.compute, disks.arm.network, disks.group
    existing = await _get_vm(disks, name)
    if existing is not None:
        if (existing.tags or {}).get(TAG_EXECUTION) != execution:
            raise FailedPrecondition(f"VM {name} exists in resource group {rg} and is not "
                                     f"this execution's: delete or rename it")
        on_event(RecoveryEvent(time.monotonic(), group, spec.workload, "instance-launched",
                               f"{existing.id} (made by an earlier attempt)"))
        return name
    ip = nm.NetworkInterfaceIPConfiguration(
        name="ipconfig1", primary=True, subnet=nm.Subnet(id=_nic_subnet(v, test_mode)),
        private_ip_allocation_method="Static" if v["private_ip"] else "Dynamic",
        private_ip_address=v["private_ip"] or None)
    nic_body = nm.NetworkInterface(
        location=disks.settings.location, tags=tags, ip_configurations=[ip],
        network_security_group=nm.NetworkSecurityGroup(id=v["network_security_group_id"])
        if v["network_security_group_id"] else None)
    nic_n = nic_name(execution, spec.workload)
    nic = await disks.operation("create-nic", lambda: network.network_interfaces.
                                begin_create_or_update(rg, nic_n, nic_body),
                                f"create NIC {nic_n} for workload {spec.workload}")
    attached = []
    for i in range(len(spec.disks)):
        d = await disks.get_disk(disk_name(execution, spec.workload, i))
        if d is None:
            raise RecoveryFailed(f"workload {spec.workload}: managed disk "
                                 f"{disk_name(execution, spec.workload, i)} is missing; run "
                                 f"the execution again (prepare makes it)")
        attached.append(d.id)
    body = cm.VirtualMachine(
        location=disks.settings.location, tags=tags,
        hardware_profile=cm.HardwareProfile(vm_size=v["vm_size"]),
        storage_profile=cm.StorageProfile(
            os_disk=cm.OSDisk(create_option="Attach", os_type=v["os_type"],
                              managed_disk=cm.ManagedDiskParameters(id=attached[0])),
            data_disks=[cm.DataDisk(lun=i, create_option="Attach",
                                    managed_disk=cm.ManagedDiskParameters(id=disk_id))
                        for i, disk_id in enumerate(attached[1:])]),
        network_profile=cm.NetworkProfile(network_interfaces=[
            cm.NetworkInterfaceReference(id=nic.id, primary=True)]))
    # Only the PUT: its poller is dropped unawaited (azure-core polls only when asked).
    await disks.call("create-vm", lambda: compute.virtual_machines.begin_create_or_update(
        rg, name, body), f"create VM {name} for workload {spec.workload}")
    on_event(RecoveryEvent(time.monotonic(), group, spec.workload, "instance-launched", name))
    return name


async def _get_vm(disks: ManagedDisks, name: str) -> Any | None:
    try:
        return await disks.call("get-vm", lambda: disks.arm.compute.virtual_machines.get(
            disks.group, name, expand="instanceView"), f"read VM {name}")
    except NotFound:
        return None


def _power(vm: Any) -> str:
    statuses = getattr(getattr(vm, "instance_view", None), "statuses", None) or []
    return next((s.code.split("/", 1)[1] for s in statuses
                 if (s.code or "").startswith("PowerState/")), "")


async def _wait_provisioned(disks: ManagedDisks, group: BootGroup, vms: dict[str, str],
                            timeout: float, on_event: EventSink) -> list[RecoveredInstance]:
    """Polls until every VM of the group is provisioned; fails on a Failed one or at the
    deadline, naming the workloads and their states."""
    up: dict[str, Any] = {}
    states: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    delay = POLL_FIRST
    while True:
        for workload, name in vms.items():
            if workload in up:
                continue
            vm = await _get_vm(disks, name)
            state = str(getattr(vm, "provisioning_state", "") or "not found")
            states[workload] = state
            if state == "Succeeded":
                up[workload] = vm
                on_event(RecoveryEvent(time.monotonic(), group.name, workload,
                                       "instance-running", f"{vm.id} ({_power(vm) or 'provisioned'})"))
            elif state == "Failed":
                raise RecoveryFailed(f"workload {workload!r} of boot group {group.name!r}: VM "
                                     f"{name} failed to provision; see its activity log")
        if len(up) == len(vms):
            return [await _recovered(disks, w, up[w]) for w in vms]
        if time.monotonic() + delay > deadline:
            late = ", ".join(f"{w!r} ({vms[w]}: {states.get(w)})" for w in vms if w not in up)
            raise RecoveryFailed(f"boot group {group.name!r}: not provisioned after "
                                 f"{timeout:g} s: {late}; raise the running timeout, or see "
                                 f"the VMs' activity log")
        await asyncio.sleep(delay)
        delay = min(POLL_CAP, delay * 2)


async def _recovered(disks: ManagedDisks, workload: str, vm: Any) -> RecoveredInstance:
    nic_ids = tuple(n.id for n in (vm.network_profile.network_interfaces or []))
    ip = ""
    if nic_ids:
        nic_id = nic_ids[0]
        nic = await disks.call("get-nic", lambda: disks.arm.network.network_interfaces.get(
            resource_group_of(nic_id), resource_name(nic_id)), f"read NIC {resource_name(nic_id)}")
        ip = next((c.private_ip_address for c in nic.ip_configurations or []
                   if c.private_ip_address), "") or ""
    storage = vm.storage_profile
    volumes = tuple(d.managed_disk.id for d in [storage.os_disk, *(storage.data_disks or [])])
    return RecoveredInstance(workload=workload, instance_id=vm.id, private_ip=ip,
                             state=_power(vm) or "running", volume_ids=volumes,
                             network_interface_ids=nic_ids, image_id="")


async def _delete_tagged(disks: ManagedDisks, execution: str, kind: str, lister: Any,
                         deleter: Any, group: str) -> list[str]:
    """Deletes every resource `lister(group)` lists that is tagged with `execution`
    (waiting for each deletion); returns their names. Already gone is fine."""
    async def listed() -> list[Any]:
        return [r async for r in lister(group)]
    found = await disks.call(f"list-{kind}", listed, f"list the {kind} of resource group "
                                                     f"{group}")
    mine = sorted((r for r in found if (r.tags or {}).get(TAG_EXECUTION) == execution),
                  key=lambda r: r.name)

    async def one(r: Any) -> str:
        try:
            if str(getattr(r, "disk_state", "") or "").startswith("Active"):
                # A disk with an open grant (an upload that stopped) cannot be deleted.
                await disks.revoke(r.name)
            await disks.operation(f"delete-{kind}", lambda: deleter(group, r.name),
                                  f"delete {r.name}")
        except NotFound:
            return ""
        log.info("deleted", kind=kind, name=r.name, workload=(r.tags or {}).get(TAG_WORKLOAD))
        return r.name
    return [n for n in await asyncio.gather(*(one(r) for r in mine)) if n]
