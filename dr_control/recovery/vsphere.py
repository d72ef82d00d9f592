"""vSphere recovery: VMs made from a repository point's disks, one boot group at a time.

A point in a repository (`fs`, `s3` targets) may come from any source kind (vsphere,
kvm, aws, file): its disks are chunks, not anything vSphere can boot. So recovery here
has a *prepare* step: each disk is uploaded to the workload's datastore as a flat
virtual disk (`<dir>/<name>-flat.vmdk` and its descriptor), by a node restore task
(dr_common/targets/restores/vsphere.py), because nodes are what reach both the
repository and the datastore. Then `CreateVM_Task` makes each VM on those files — its
CPUs, memory and guest OS, one NIC per mapped network on its port group (in test mode,
every NIC on the plan's isolated port group instead), its tags as custom attributes —
and it is powered on; a group is up when every VM of it is powered on with VMware
Tools running (or only powered on, as the workload says), and only then does the next
group start.

Everything is named after the execution, so it can be found again without keeping
state: the uploaded files are under `[datastore] hybrid-dr-<digest>/`, each VM's
annotation says `hybrid-dr:execution=<execution>` (set in the CreateVM_Task call
itself, so no VM exists untagged). A retried or resumed execution reuses the VMs it
finds; `cleanup()` powers them off, destroys them and deletes the directories.

Calls are pyvmomi's, blocking, made in worker threads through one logged-in session per
step (check, recover, cleanup), at most VC_CONCURRENCY at a time per site (vCenter queues tasks per host and
throttles sessions; a recovery must not crowd out the customer's own automation).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import structlog

from dr_common import names
from dr_common.errors import FailedPrecondition, InvalidArgument, NotFound
from dr_common.proto.dr.v1 import nodes_pb2
from dr_common.targets import REPOSITORY_KINDS
from dr_common.vsphere import Session, VsphereSettings
from dr_control.config import RecoveryLimits
from dr_control.recovery.base import (TAG_EXECUTION, TAG_TEST, TAG_WORKLOAD, BootGroup,
                                      DiskMover, EventSink, RecoveredInstance,
                                      RecoveryEvent, RecoveryFailed, RecoveryProvider,
                                      WorkloadSpec, prepare_disks, raise_group_failures,
                                      refuse_foreign, repository_workloads,
                                      whole_number)

log = structlog.get_logger()

PROVIDER = "vsphere"

# vCenter runs a few tasks per host at once and queues the rest; four calls in flight
# per site keep a recovery fast without starving other clients of the session limit.
VC_CONCURRENCY = 4
# Disks uploaded at once (each is a node task; nodes bound their own work too).
UPLOADS_IN_FLIGHT = 4
POLL_FIRST = 0.1
POLL_CAP = 2.0
SECTOR = 512
MiB = 1 << 20
# The workload settings (RecoveryWorkload.vsphere) and their defaults.
VSPHERE_KEYS = ("cpus", "memory_mib", "datastore", "folder", "resource_pool", "networks",
                "isolated_port_group", "guest_id", "wait_for")
DEFAULT_GUEST = "otherGuest64"
WAIT_FOR = ("tools", "powered-on")
MAX_CPUS = 768
MAX_MEMORY_MIB = 24 * 1024 * 1024
# SCSI units per controller (unit 7 is the controller's own) and controllers per VM.
SCSI_UNITS = tuple(u for u in range(16) if u != 7)
VM_NAME_MAX = 80


# --- the plan's settings ----------------------------------------------------------------

def check_settings(where: str, given: dict[str, Any]) -> dict[str, Any]:
    """RecoveryWorkload.vsphere, checked and normalized (defaults filled in)."""
    unknown = sorted(set(given) - set(VSPHERE_KEYS))
    if unknown:
        raise InvalidArgument(f"{where}: unknown vsphere setting {unknown[0]!r} (known: "
                              f"{', '.join(VSPHERE_KEYS)})", field=f"{where}.vsphere.{unknown[0]}")
    datastore = str(given.get("datastore", "")).strip()
    if not datastore:
        raise InvalidArgument(f"{where}: a datastore for the VM's disks is needed",
                              field=f"{where}.vsphere.datastore")
    networks = []
    for k, n in enumerate(given.get("networks") or ()):
        port_group = str(n.get("port_group", "")).strip()
        if not port_group:
            raise InvalidArgument(f"{where}: network {k + 1} maps to no port group",
                                  field=f"{where}.vsphere.networks[{k}].port_group")
        networks.append({"source": str(n.get("source", "")).strip(), "port_group": port_group})
    wait_for = str(given.get("wait_for", "")).strip() or WAIT_FOR[0]
    if wait_for not in WAIT_FOR:
        raise InvalidArgument(f"{where}: vsphere.wait_for is {' or '.join(WAIT_FOR)}, got "
                              f"{wait_for!r}", field=f"{where}.vsphere.wait_for")
    return {"cpus": whole_number(where, "vsphere.cpus", given.get("cpus"), 1, 1, MAX_CPUS),
            "memory_mib": whole_number(where, "vsphere.memory_mib", given.get("memory_mib"),
                                       1024, 4, MAX_MEMORY_MIB),
            "datastore": datastore, "folder": str(given.get("folder", "")).strip().strip("/"),
            "resource_pool": str(given.get("resource_pool", "")).strip().strip("/"),
            "networks": networks,
            "isolated_port_group": str(given.get("isolated_port_group", "")).strip(),
            "guest_id": str(given.get("guest_id", "")).strip() or DEFAULT_GUEST,
            "wait_for": wait_for}


def _digest(execution: str) -> str:
    return hashlib.sha256(execution.encode()).hexdigest()[:12]


def upload_dir(execution: str) -> str:
    """The datastore directory of an execution's uploaded disks."""
    return f"hybrid-dr-{_digest(execution)}"


def _workload_id(workload: str) -> str:
    return names.parse_workload(workload)[1]


def vm_name(execution: str, workload: str) -> str:
    """Unique per execution and workload, within vSphere's 80 characters."""
    suffix = f"-dr-{_digest(execution)[:8]}"
    base = re.sub(r"[^A-Za-z0-9._-]", "_", _workload_id(workload))
    return base[:VM_NAME_MAX - len(suffix)] + suffix


def disk_path(execution: str, workload: str, index: int) -> str:
    return f"{upload_dir(execution)}/{vm_name(execution, workload)}/disk-{index}.vmdk"


def _annotation(execution: str, workload: str, test_mode: bool) -> str:
    return (f"Recovered by Hybrid DR.\n{TAG_EXECUTION}={execution}\n"
            f"{TAG_WORKLOAD}={workload}\n{TAG_TEST}={'true' if test_mode else 'false'}\n")


def _tags_of(annotation: str) -> dict[str, str]:
    out = {}
    for line in (annotation or "").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("hybrid-dr:"):
            out[key] = value
    return out


def _nic_port_groups(spec: WorkloadSpec, test_mode: bool) -> list[str]:
    v = spec.settings["vsphere"]
    if test_mode:
        return [v["isolated_port_group"]] * len(v["networks"])
    return [n["port_group"] for n in v["networks"]]


# --- the limiter and the session ----------------------------------------------------------

class VcLimiter:
    """At most `concurrency` blocking vSphere calls of one site's executions at a time."""

    def __init__(self, concurrency: int = VC_CONCURRENCY):
        self.slots = asyncio.Semaphore(concurrency)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        async with self.slots:
            return await asyncio.to_thread(fn, *args)


class _Site:
    """One logged-in session and the datacenter it works in (blocking: threads only)."""

    def __init__(self, settings: VsphereSettings):
        self.session = Session(settings)
        self.settings = settings
        try:
            found = self.session.datacenters()
        except NotFound as exc:
            self.session.close()
            raise InvalidArgument(exc.message, field="recovery_site.vsphere.datacenter",
                                  reason="datacenter-not-found") from None
        if len(found) != 1:
            self.session.close()
            raise InvalidArgument(
                f"the vCenter at {settings.url} has {len(found)} datacenters "
                f"({', '.join(n for _, n in found)}): name the one to recover to in the "
                f"site's settings", field="recovery_site.vsphere.datacenter")
        self.dc, self.dc_name = found[0]

    def close(self) -> None:
        self.session.close()

    # -- inventory

    def datastores(self) -> dict[str, dict[str, Any]]:
        from pyVmomi import vim
        return {p["name"]: {"ref": ds, **p} for ds, p in self.session.retrieve(
            vim.Datastore, ["name", "summary.freeSpace", "summary.accessible"], root=self.dc)}

    def networks(self) -> dict[str, Any]:
        from pyVmomi import vim
        return {p["name"]: n for n, p in self.session.retrieve(vim.Network, ["name"],
                                                                root=self.dc)}

    def folder(self, path: str) -> Any:
        if not path:
            return self.session.get(self.dc, ["vmFolder"])["vmFolder"]
        found = self.session.content.searchIndex.FindByInventoryPath(
            f"{self.dc_name}/vm/{path}")
        return found

    def resource_pool(self, path: str) -> Any:
        from pyVmomi import vim
        if not path:
            computes = sorted(self.session.retrieve(vim.ComputeResource,
                                                    ["name", "resourcePool"], root=self.dc),
                              key=lambda c: (not isinstance(c[0], vim.ClusterComputeResource),
                                             c[1].get("name", "")))
            return computes[0][1].get("resourcePool") if computes else None
        if "/" not in path:
            path += "/Resources"
        found = self.session.content.searchIndex.FindByInventoryPath(
            f"{self.dc_name}/host/{path}")
        return found if isinstance(found, vim.ResourcePool) else None

    def vms_of(self, execution: str) -> list[tuple[Any, dict[str, Any]]]:
        """The execution's VMs (found by their annotation), with their state."""
        from pyVmomi import vim
        out = []
        for vm, p in self.session.retrieve(
                vim.VirtualMachine, ["name", "config.annotation", "runtime.powerState",
                                     "guest.toolsRunningStatus", "guest.ipAddress"],
                root=self.dc):
            tags = _tags_of(p.get("config.annotation", ""))
            if tags.get(TAG_EXECUTION) == execution:
                out.append((vm, {**p, "tags": tags}))
        return out

    # -- making a VM

    def backing(self, network: Any) -> Any:
        from pyVmomi import vim
        if isinstance(network, vim.dvs.DistributedVirtualPortgroup):
            p = self.session.get(network, ["key", "config.distributedVirtualSwitch"])
            switch = self.session.get(p["config.distributedVirtualSwitch"], ["uuid"])
            return vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
                port=vim.dvs.PortConnection(portgroupKey=p["key"], switchUuid=switch["uuid"]))
        name = self.session.get(network, ["name"])["name"]
        return vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName=name,
                                                                    network=network)

    def create_vm(self, execution: str, spec: WorkloadSpec, test_mode: bool) -> Any:
        from pyVmomi import vim
        v = spec.settings["vsphere"]
        ds = v["datastore"]
        Op = vim.vm.device.VirtualDeviceSpec.Operation
        changes = []
        controllers = -(-len(spec.disks) // len(SCSI_UNITS))
        for c in range(controllers):
            changes.append(vim.vm.device.VirtualDeviceSpec(
                operation=Op.add, device=vim.vm.device.VirtualLsiLogicController(
                    key=1000 + c, busNumber=c, sharedBus="noSharing")))
        for i, d in enumerate(spec.disks):
            padded = -(-d.size_bytes // SECTOR) * SECTOR
            # No fileOperation: the disk's files exist (the prepare step uploaded them).
            changes.append(vim.vm.device.VirtualDeviceSpec(
                operation=Op.add, device=vim.vm.device.VirtualDisk(
                    key=2000 + i, controllerKey=1000 + i // len(SCSI_UNITS),
                    unitNumber=SCSI_UNITS[i % len(SCSI_UNITS)],
                    capacityInKB=-(-padded // 1024), capacityInBytes=padded,
                    backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                        fileName=f"[{ds}] {disk_path(execution, spec.workload, i)}",
                        diskMode="persistent", thinProvisioned=False))))
        networks = self.networks()
        for i, pg in enumerate(_nic_port_groups(spec, test_mode)):
            changes.append(vim.vm.device.VirtualDeviceSpec(
                operation=Op.add, device=vim.vm.device.VirtualVmxnet3(
                    key=4000 + i, backing=self.backing(networks[pg]),
                    connectable=vim.vm.device.VirtualDevice.ConnectInfo(
                        startConnected=True, connected=True, allowGuestControl=True))))
        config = vim.vm.ConfigSpec(
            name=vm_name(execution, spec.workload), guestId=v["guest_id"],
            numCPUs=v["cpus"], memoryMB=v["memory_mib"],
            annotation=_annotation(execution, spec.workload, test_mode),
            files=vim.vm.FileInfo(vmPathName=f"[{ds}]"), deviceChange=changes)
        folder = self.folder(v["folder"])
        pool = self.resource_pool(v["resource_pool"])
        return self.session.call(f"create VM {config.name} for workload {spec.workload}",
                                 folder.CreateVM_Task, config=config, pool=pool)

    def set_attributes(self, vm: Any, tags: dict[str, str]) -> None:
        """The workload's tags as custom attributes (defined on first use)."""
        from pyVmomi import vim
        if not tags:
            return
        manager = self.session.content.customFieldsManager
        known = {f.name: f.key for f in (manager.field or [])
                 if f.managedObjectType in (None, vim.VirtualMachine)}
        for name, value in sorted(tags.items()):
            if name not in known:
                known[name] = manager.AddCustomFieldDef(name=name, moType=vim.VirtualMachine).key
            manager.SetField(entity=vm, key=known[name], value=value)


# --- the provider -----------------------------------------------------------------------

class VsphereProvider(RecoveryProvider):
    """Recovery into vSphere as the registry's `vsphere` provider."""

    kind = PROVIDER
    point_kinds = REPOSITORY_KINDS
    summary = "vSphere recovery uploads the disks of repository points to datastores"

    def __init__(self, settings: dict[str, Any], limiter: VcLimiter) -> None:
        self.settings = VsphereSettings(**settings)
        self.limiter = limiter

    @classmethod
    def new_limiter(cls, limits: RecoveryLimits = RecoveryLimits()) -> VcLimiter:
        return VcLimiter(limits.api_calls_in_flight or VC_CONCURRENCY)

    @classmethod
    def check_workload(cls, where: str, settings: dict[str, Any]) -> dict[str, Any]:
        refuse_foreign(where, settings, ("vsphere",), PROVIDER)
        return {"vsphere": check_settings(where, dict(settings.get("vsphere") or {}))}

    async def _with_site(self, work: Callable[[_Site], Any]) -> Any:
        """Runs `work(site)` in a worker thread on a fresh session, closed after."""
        def run() -> Any:
            site = _Site(self.settings)
            try:
                return work(site)
            finally:
                site.close()
        return await self.limiter.run(run)

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[_Site]:
        """One session for a whole step (its calls from worker threads: pyvmomi's stub
        pools its connections under a lock), logged out when the step ends."""
        site = await self.limiter.run(_Site, self.settings)
        try:
            yield site
        finally:
            await asyncio.to_thread(site.close)

    # -- check

    @staticmethod
    def _check_plan(execution: str, groups: Sequence[BootGroup], test_mode: bool) -> None:
        if not execution:
            raise InvalidArgument("an execution id is needed (it tags what recovery creates)",
                                  field="execution")
        specs = repository_workloads(groups, "vSphere")
        for spec in specs:
            v = spec.settings["vsphere"]
            if test_mode and v["networks"] and not v["isolated_port_group"]:
                raise InvalidArgument(
                    f"workload {spec.workload}: a test drill puts NICs on an isolated port "
                    f"group, so recovered VMs never meet production; set one",
                    field="vsphere.isolated_port_group")

    async def check(self, execution: str, groups: Sequence[BootGroup], *,
                    test_mode: bool = False) -> None:
        self._check_plan(execution, groups, test_mode)
        specs = [s for g in groups for s in g.instances]
        await self._with_site(lambda site: self._check_site(site, specs, test_mode))

    @staticmethod
    def _check_site(site: _Site, specs: list[WorkloadSpec], test_mode: bool) -> None:
        stores = site.datastores()
        networks = site.networks()
        need: dict[str, int] = {}
        users: dict[str, list[str]] = {}
        for spec in specs:
            v = spec.settings["vsphere"]
            ds = v["datastore"]
            if ds not in stores:
                raise InvalidArgument(
                    f"workload {spec.workload}: datastore {ds} is not in datacenter "
                    f"{site.dc_name} (it has {', '.join(sorted(stores)) or 'none'})",
                    field="vsphere.datastore")
            # The disks, and the swap file vSphere makes at power-on (memory's size).
            need[ds] = need.get(ds, 0) + sum(-(-d.size_bytes // SECTOR) * SECTOR
                                             for d in spec.disks) + v["memory_mib"] * MiB
            users.setdefault(ds, []).append(spec.workload)
            wanted = [("vsphere.isolated_port_group", v["isolated_port_group"])] if (
                test_mode and v["networks"]) else [
                (f"vsphere.networks[{k}].port_group", n["port_group"])
                for k, n in enumerate(v["networks"])]
            for field_, pg in wanted:
                if pg not in networks:
                    raise InvalidArgument(
                        f"workload {spec.workload}: port group {pg} is not in datacenter "
                        f"{site.dc_name} (it has {', '.join(sorted(networks)) or 'none'})",
                        field=field_)
            if v["folder"] and site.folder(v["folder"]) is None:
                raise InvalidArgument(f"workload {spec.workload}: VM folder {v['folder']} is "
                                      f"not in datacenter {site.dc_name}",
                                      field="vsphere.folder")
            if site.resource_pool(v["resource_pool"]) is None:
                raise InvalidArgument(
                    f"workload {spec.workload}: resource pool "
                    f"{v['resource_pool'] or '(the first cluster)'} is not in datacenter "
                    f"{site.dc_name}", field="vsphere.resource_pool")
        for ds, n in need.items():
            store = stores[ds]
            free = int(store.get("summary.freeSpace") or 0)
            if store.get("summary.accessible") is False:
                raise InvalidArgument(f"datastore {ds} is not accessible",
                                      field="vsphere.datastore")
            if free < n:
                raise InvalidArgument(
                    f"datastore {ds} has {free / MiB:.0f} MiB free; workloads "
                    f"{', '.join(users[ds])} need {n / MiB:.0f} MiB (their disks, and swap "
                    f"as large as their memory): free space or choose another datastore",
                    field="vsphere.datastore", reason="vsphere-insufficient-disk")

    # -- prepare: the uploads

    async def prepare(self, execution: str, groups: Sequence[BootGroup], *,
                      mover: DiskMover, on_event: EventSink) -> None:
        dc_name = self.settings.datacenter or await self._with_site(lambda s: s.dc_name)

        async def upload(spec: WorkloadSpec, index: int) -> tuple[str, str]:
            dest = nodes_pb2.RestoreDestination(vsphere=nodes_pb2.VsphereDatastoreFile(
                datacenter=dc_name, datastore=spec.settings["vsphere"]["datastore"],
                path=disk_path(execution, spec.workload, index), overwrite=True))
            result = await mover.restore(spec.disks[index], dest)
            return result.datastore_path, f"verified {result.verified}"

        await prepare_disks(groups, upload, on_event, in_flight=self.restores_in_flight(UPLOADS_IN_FLIGHT))

    # -- recover: the VMs, group by group

    async def recover(self, execution: str, groups: Sequence[BootGroup], *, test_mode: bool,
                      on_event: EventSink, running_timeout: float) -> list[RecoveredInstance]:
        self._check_plan(execution, groups, test_mode)
        async with self._session() as site:
            return await self._recover(site, execution, groups, test_mode, on_event,
                                       running_timeout)

    async def _recover(self, site: _Site, execution: str, groups: Sequence[BootGroup],
                       test_mode: bool, on_event: EventSink,
                       running_timeout: float) -> list[RecoveredInstance]:
        recovered: list[RecoveredInstance] = []
        for group in groups:
            results = await asyncio.gather(
                *(self._start(site, execution, group.name, spec, test_mode, on_event)
                  for spec in group.instances), return_exceptions=True)
            raise_group_failures(group, results, "VM(s)", execution, marked="annotated")
            recovered += await self._wait_up(site, execution, group, dict(zip(
                (s.workload for s in group.instances), results)), running_timeout, on_event)
            on_event(RecoveryEvent(time.monotonic(), group.name, "", "group-running",
                                   f"{len(group.instances)} VM(s) up"))
        return recovered

    async def _start(self, site: _Site, execution: str, group: str, spec: WorkloadSpec,
                     test_mode: bool, on_event: EventSink) -> str:
        """Creates (or finds) the workload's VM and powers it on; returns its moref."""
        def create(site: _Site) -> Any:
            existing = [vm for vm, p in site.vms_of(execution)
                        if p["tags"].get(TAG_WORKLOAD) == spec.workload]
            vm = existing[0] if existing else site.create_vm(execution, spec, test_mode)
            site.set_attributes(vm, {**spec.tags, TAG_EXECUTION: execution,
                                     TAG_TEST: "true" if test_mode else "false"})
            return vm

        def power_on(site: _Site) -> None:
            vm = next((vm for vm, p in site.vms_of(execution)
                       if p["tags"].get(TAG_WORKLOAD) == spec.workload), None)
            if vm is None:
                raise RecoveryFailed(f"the VM of workload {spec.workload} vanished after it "
                                     f"was created; retry the execution")
            if site.session.get(vm, ["runtime.powerState"]).get(
                    "runtime.powerState") != "poweredOn":
                site.session.call(f"power on VM {vm_name(execution, spec.workload)}",
                                  vm.PowerOnVM_Task)

        vm = await self.limiter.run(create, site)
        # Events are emitted here, on the event loop, never from a worker thread.
        on_event(RecoveryEvent(time.monotonic(), group, spec.workload, "instance-launched",
                               vm._moId))
        await self.limiter.run(power_on, site)
        return vm._moId

    async def _wait_up(self, site: _Site, execution: str, group: BootGroup,
                       vms: dict[str, str], timeout: float,
                       on_event: EventSink) -> list[RecoveredInstance]:
        specs = {s.workload: s for s in group.instances}
        up: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        delay = POLL_FIRST
        while True:
            seen = {p["tags"].get(TAG_WORKLOAD): (vm, p) for vm, p in
                    await self.limiter.run(site.vms_of, execution)}
            for workload, moref in vms.items():
                if workload in up or workload not in seen:
                    continue
                _, p = seen[workload]
                wait_for = specs[workload].settings["vsphere"]["wait_for"]
                powered = p.get("runtime.powerState") == "poweredOn"
                tools = p.get("guest.toolsRunningStatus") == "guestToolsRunning"
                if powered and (tools or wait_for == "powered-on"):
                    up[workload] = p
                    on_event(RecoveryEvent(time.monotonic(), group.name, workload,
                                           "instance-running",
                                           f"{moref} ({'tools running' if tools else 'powered on'})"))
            if len(up) == len(vms):
                return [RecoveredInstance(
                    workload=w, instance_id=vms[w], private_ip=up[w].get("guest.ipAddress", ""),
                    state="running",
                    volume_ids=tuple(f"[{specs[w].settings['vsphere']['datastore']}] "
                                     f"{disk_path(execution, w, i)}"
                                     for i in range(len(specs[w].disks))),
                    network_interface_ids=(), image_id="") for w in vms]
            if time.monotonic() + delay > deadline:
                late = ", ".join(
                    f"{w!r} ({vms[w]}: {seen.get(w, (None, {}))[1].get('runtime.powerState', 'not found')}, "
                    f"tools {seen.get(w, (None, {}))[1].get('guest.toolsRunningStatus', 'unknown')})"
                    for w in vms if w not in up)
                raise RecoveryFailed(
                    f"boot group {group.name!r}: not up after {timeout:g} s: {late}; check "
                    f"the VMs' consoles, set wait_for to powered-on for guests without "
                    f"VMware Tools, or raise the running timeout")
            await asyncio.sleep(delay)
            delay = min(POLL_CAP, delay * 2)

    # -- cleanup

    async def cleanup(self, execution: str, *, on_event: EventSink) -> dict[str, list[str]]:
        if not execution:
            raise InvalidArgument("which execution to clean up?", field="execution")

        def vms(site: _Site) -> list[str]:
            gone = []
            for vm, p in site.vms_of(execution):
                if p.get("runtime.powerState") == "poweredOn":
                    try:
                        site.session.call(f"power off VM {p['name']}", vm.PowerOffVM_Task)
                    except FailedPrecondition as exc:  # already off (InvalidPowerState)
                        log.info("power off skipped", vm=p["name"], reason=exc.message)
                try:
                    site.session.call(f"destroy VM {p['name']}", vm.Destroy_Task)
                except NotFound:
                    continue
                gone.append(p["name"])
            return sorted(gone)

        def files(site: _Site) -> list[str]:
            gone = []
            manager = site.session.content.fileManager
            for name in sorted(site.datastores()):
                path = f"[{name}] {upload_dir(execution)}"
                try:
                    site.session.call(f"delete {path}", manager.DeleteDatastoreFile_Task,
                                      name=path, datacenter=site.dc)
                except NotFound:
                    continue
                gone.append(path)
            return gone

        deleted: dict[str, list[str]] = {}
        async with self._session() as site:
            deleted["vms"] = await self.limiter.run(vms, site)
            on_event(RecoveryEvent(time.monotonic(), "", "", "cleanup-instances",
                                   ", ".join(deleted["vms"])))
            deleted["files"] = await self.limiter.run(files, site)
        on_event(RecoveryEvent(time.monotonic(), "", "", "cleanup-files",
                               ", ".join(deleted["files"])))
        log.info("recovery cleaned up", execution=execution,
                 **{k: len(v) for k, v in deleted.items()})
        return deleted



