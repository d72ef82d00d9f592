"""Recovery into Azure against the Azure peer (tests/peers/azure/: the harness ARM with
disks, VMs, networks and NICs, driven by azure-mgmt-compute and -network, and Azurite
behind its Storage front): VMs recovered from an azure-disk point (its replicas' blob
snapshots imported as managed disks, content equal), with their NIC in the mapped subnet at the planned IP behind the
mapped NSG, tagged; boot groups one after the other; a drill in the isolated subnet
cleaned up by tag without touching the point's snapshots; a burst of 429s survived and
counted; wrong settings refused by check() naming the field, creating nothing; a
repository point's disks written into managed disks by the node-side writer."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote

import pytest
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.network import NetworkManagementClient

from dr_common.errors import FailedPrecondition, InvalidArgument
from dr_common.proto.dr.v1 import common_pb2, nodes_pb2
from dr_common.repository import Repository
from dr_common.repository.store import FsStore
from dr_common.targets.base import TargetEnv
from dr_common.targets.repository import RepositoryTarget
from dr_control.recovery.azure import AzureProvider, disk_name
from dr_control.recovery.azure_limiter import ArmLimiter
from dr_control.recovery.base import TAG_EXECUTION, BootGroup, RecoveredDisk, WorkloadSpec
from tests.helpers.repository import numbered_chunk, write_point
from dr_common import vhd
from dr_common.targets.azure_disk import DEFAULT_CONTAINER, snapshot_ref
from tests.helpers.azure import mgmt, sha256_of
from tests.peers.azure.azurite import ACCOUNT_KEY

MiB = 1 << 20
# A point's disks here: small, so hashing them is quick; a multiple of a MiB, as the
# VHDs Azure imports are.
DISK = 32 * MiB
PROD, TEST = "10.1.0.0/24", "10.99.0.0/24"


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    """The harness ends its operations at once: a second between polls is only waiting."""
    import dr_common.azure
    monkeypatch.setattr(dr_common.azure, "LRO_POLL_SECONDS", 0.05)


@pytest.fixture
def compute(azure_peer) -> ComputeManagementClient:
    return mgmt(ComputeManagementClient, azure_peer)


@pytest.fixture
def network(azure_peer) -> NetworkManagementClient:
    return mgmt(NetworkManagementClient, azure_peer)


def site(peer) -> dict:
    """The recovery site's settings: recoveries are made in its first group."""
    return {"subscription_id": peer.subscription_id, "resource_groups": [peer.recovery_group],
            "location": peer.location, "tenant_id": peer.tenant_id,
            "client_id": peer.client_id, "client_secret": peer.client_secret,
            "arm_endpoint": peer.arm_endpoint, "authority_host": peer.authority_host,
            "ca_file": str(peer.ca_file), "storage_account_url": peer.blob_endpoint,
            "storage_account_key": ACCOUNT_KEY}


class Net:
    """The recovery site's network: production and isolated subnets, an NSG."""

    def __init__(self, peer, network):
        group = peer.source_group
        vnet = network.virtual_networks.begin_create_or_update(group, "dr-net", {
            "location": peer.location,
            "properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/8"]},
                           "subnets": [{"name": "prod", "properties": {"addressPrefix": PROD}},
                                       {"name": "drill", "properties": {"addressPrefix": TEST}}]},
        }).result()
        by_name = {s.name: s.id for s in vnet.subnets}
        self.prod, self.test = by_name["prod"], by_name["drill"]
        self.nsg = network.network_security_groups.begin_create_or_update(
            group, "dr-nsg", {"location": peer.location}).result().id


class Point:
    """An azure-disk point as the target leaves it: per disk a replica page blob (a
    fixed VHD) in the site's storage account and a blob snapshot of it."""

    def __init__(self, peer):
        from azure.storage.blob import BlobServiceClient
        self.service = BlobServiceClient.from_connection_string(peer.connection_string)
        self.container = self.service.get_container_client(DEFAULT_CONTAINER)
        if not self.container.exists():
            self.container.create_container()
        self.content: dict[str, bytes] = {}

    def disk(self, name: str, writes: dict[int, bytes]) -> RecoveredDisk:
        blob_name = f"replicas/hdr-{name}.vhd"
        blob = self.container.get_blob_client(blob_name)
        blob.create_page_blob(DISK + vhd.FOOTER_SIZE)
        data = bytearray(DISK)
        for offset, chunk in writes.items():
            blob.upload_page(chunk, offset=offset, length=len(chunk))
            data[offset:offset + len(chunk)] = chunk
        blob.upload_page(vhd.footer(DISK), offset=DISK, length=vhd.FOOTER_SIZE)
        snap = blob.create_snapshot()["snapshot"]
        blob.upload_page(b"x" * 512, offset=0, length=512)  # after the point: not recovered
        ref = snapshot_ref(DEFAULT_CONTAINER, blob_name, snap)
        self.content[ref] = bytes(data)
        return RecoveredDisk("", ref, DISK, disk=f"sites/src/workloads/{name.split('-')[0]}/"
                                                 f"disks/{name}")

    def snapshots(self) -> list[str]:
        """The refs of the snapshots that exist, and are as they were made."""
        out = []
        for ref, data in self.content.items():
            blob_name, snap = ref.split(f"{DEFAULT_CONTAINER}/", 1)[1].split("?snapshot=")
            client = self.container.get_blob_client(blob_name, snapshot=unquote(snap))
            if client.exists() and client.download_blob(offset=0, length=DISK).readall() == data:
                out.append(ref)
        return sorted(out)


def workload(name: str, disks, net: Net, ip: str = "", **azure) -> WorkloadSpec:
    settings = AzureProvider.check_workload(f"w.{name}", {"azure": {
        "vm_size": "Standard_D2s_v3", "subnet_id": net.prod, "private_ip": ip,
        "network_security_group_id": net.nsg, "test_subnet_id": net.test, **azure}})
    return WorkloadSpec(workload=f"sites/src/workloads/{name}", disks=tuple(disks),
                        settings=settings, tags={"app": "shop"})


class NoMover:
    """azure-disk points need no node: a restore asked for is a failure."""

    async def restore(self, disk, destination):
        raise AssertionError(f"a node was asked to move {disk.disk}")


def by_type(peer, type_: str, execution: str | None = None) -> dict[str, dict]:
    return {r["name"]: r for r in peer.resources() if r["type"] == type_
            and (execution is None or (r.get("tags") or {}).get(TAG_EXECUTION) == execution)}


async def run(provider, execution, groups, *, test_mode=False, timeout=30.0):
    events = []
    await provider.check(execution, groups, test_mode=test_mode)
    await provider.prepare(execution, groups, mover=NoMover(), on_event=events.append)
    instances = await provider.recover(execution, groups, test_mode=test_mode,
                                       on_event=events.append, running_timeout=timeout)
    return instances, events


# --- recovery from an azure-disk point ---------------------------------------------------

async def test_vms_from_an_azure_disk_point_in_two_boot_groups_then_cleanup(
        azure_peer, compute, network):
    net, point = Net(azure_peer, network), Point(azure_peer)
    db_os = point.disk("db-os", {0: b"boot" * 128, 5 * MiB: b"o" * 4096})
    db_data = point.disk("db-data", {MiB: b"rows" * 1024})
    web_os = point.disk("web-os", {0: b"web!" * 128})
    groups = [BootGroup("databases", (workload("db", [db_os, db_data], net, ip="10.1.0.10"),)),
              BootGroup("web", (workload("web", [web_os], net),))]
    # Group 1's VM takes a while to provision: group 2 must wait for it.
    azure_peer.set_vm_provisioning_delay(1.5)
    provider = AzureProvider(site(azure_peer), AzureProvider.new_limiter())
    execution = "recoveryPlans/rp/executions/e1"
    instances, events = await run(provider, execution, groups)

    # Disks: imported from the snapshots, in the recovery group, content equal.
    disks = by_type(azure_peer, "Microsoft.Compute/disks", execution)
    for i, d in enumerate([db_os, db_data]):
        name = disk_name(execution, "sites/src/workloads/db", i)
        assert name in disks
        assert sha256_of(azure_peer, name, DISK, azure_peer.recovery_group) == \
            hashlib.sha256(point.content[d.snapshot_id]).hexdigest()
        assert disks[name]["tags"]["hybrid-dr:workload"] == "sites/src/workloads/db"
    # No data went through a node: Azure copied and imported the snapshots.
    assert all("imported from snapshot" in e.detail for e in events
               if e.step == "disk-prepared")
    # The staging copies are gone; the replicas and their snapshots stay.
    assert not [b.name for b in point.container.list_blobs() if "/restores/" in b.name]

    db, web = instances
    assert (db.workload, web.workload) == ("sites/src/workloads/db", "sites/src/workloads/web")
    assert db.private_ip == "10.1.0.10" and web.private_ip.startswith("10.1.0.")
    assert len(db.volume_ids) == 2 and db.state == "running"
    vm = compute.virtual_machines.get(azure_peer.recovery_group, db.instance_id.rsplit("/", 1)[-1])
    assert vm.provisioning_state == "Succeeded"
    assert vm.tags["hybrid-dr:execution"] == execution and vm.tags["app"] == "shop"
    assert vm.tags["hybrid-dr:test"] == "false"
    assert vm.storage_profile.os_disk.managed_disk.id.lower() == db.volume_ids[0].lower()
    assert [d.lun for d in vm.storage_profile.data_disks] == [0]
    nic = network.network_interfaces.get(azure_peer.recovery_group,
                                         db.network_interface_ids[0].rsplit("/", 1)[-1])
    config = nic.ip_configurations[0]
    assert config.subnet.id.lower() == net.prod.lower()
    assert config.private_ip_allocation_method == "Static"
    assert nic.network_security_group.id.lower() == net.nsg.lower()
    assert nic.tags["hybrid-dr:execution"] == execution

    # Boot order: web is launched only once every VM of databases is provisioned.
    at = {(e.group, e.step): e.time for e in events}
    assert at[("web", "instance-launched")] >= at[("databases", "group-running")]
    assert at[("databases", "group-running")] - at[("databases", "instance-launched")] >= 1.4

    # A retry of the same execution reuses everything it made.
    again, _ = await run(provider, execution, groups)
    assert [i.instance_id for i in again] == [i.instance_id for i in instances]
    assert len(by_type(azure_peer, "Microsoft.Compute/virtualMachines")) == 2

    deleted = await provider.cleanup(execution, on_event=events.append)
    assert len(deleted["vms"]) == 2 and len(deleted["network_interfaces"]) == 2
    assert len(deleted["disks"]) == 3
    assert not [r for r in azure_peer.resources()
                if (r.get("tags") or {}).get(TAG_EXECUTION) == execution]
    # The point's snapshots are untouched, content and all.
    assert point.snapshots() == sorted(point.content)
    assert await provider.cleanup(execution, on_event=events.append) == {
        "vms": [], "network_interfaces": [], "disks": []}


async def test_a_drill_uses_the_isolated_subnet_and_cleanup_removes_only_its_own(
        azure_peer, compute, network):
    net, point = Net(azure_peer, network), Point(azure_peer)
    d = point.disk("app-os", {0: b"app." * 128})
    groups = [BootGroup("all", (workload("app", [d], net, ip="10.99.0.20"),))]
    provider = AzureProvider(site(azure_peer), AzureProvider.new_limiter())
    drill, other = "recoveryPlans/rp/executions/t1", "recoveryPlans/rp/executions/t2"
    (inst,), _ = await run(provider, drill, groups, test_mode=True)
    nic = network.network_interfaces.get(azure_peer.recovery_group,
                                         inst.network_interface_ids[0].rsplit("/", 1)[-1])
    assert nic.ip_configurations[0].subnet.id.lower() == net.test.lower()
    assert inst.private_ip == "10.99.0.20"
    assert by_type(azure_peer, "Microsoft.Compute/virtualMachines", drill)[
        inst.instance_id.rsplit("/", 1)[-1]]["tags"]["hybrid-dr:test"] == "true"
    # The VM lost (deleted by hand, or its PUT never landed): a retry makes it again on
    # the NIC and disks the first attempt made.
    vm_n = inst.instance_id.rsplit("/", 1)[-1]
    compute.virtual_machines.begin_delete(azure_peer.recovery_group, vm_n).result()
    (again,), _ = await run(provider, drill, groups, test_mode=True)
    assert again.network_interface_ids == inst.network_interface_ids
    assert again.volume_ids == inst.volume_ids and again.private_ip == "10.99.0.20"
    # A second drill of the same point, then only the first is cleaned up.
    groups2 = [BootGroup("all", (workload("app", [d], net, ip="10.99.0.21"),))]
    await run(provider, other, groups2, test_mode=True)
    await provider.cleanup(drill, on_event=lambda e: None)
    assert not by_type(azure_peer, "Microsoft.Compute/virtualMachines", drill)
    assert not by_type(azure_peer, "Microsoft.Network/networkInterfaces", drill)
    assert not by_type(azure_peer, "Microsoft.Compute/disks", drill)
    assert len(by_type(azure_peer, "Microsoft.Compute/virtualMachines", other)) == 1
    assert point.snapshots() == [d.snapshot_id]


async def test_a_burst_of_429s_is_survived_and_counted(azure_peer, compute, network):
    net, point = Net(azure_peer, network), Point(azure_peer)
    d = point.disk("api-os", {0: b"api." * 128})
    groups = [BootGroup("all", (workload("api", [d], net),))]
    limiter = ArmLimiter()
    provider = AzureProvider(site(azure_peer), limiter)
    azure_peer.faults(arm={"throttle": 0.15, "retry_after": 1}, seed=3)
    (inst,), _ = await run(provider, "recoveryPlans/rp/executions/b1", groups)
    assert inst.state == "running"
    injected = azure_peer.stats()["faults"].get("arm.throttle", 0)
    assert injected > 0 and limiter.throttled == injected
    # The budget ARM reported on its answers reached the limiter.
    assert 0 < limiter.remaining["subscription-writes"] < 1200
    azure_peer.clear_faults()
    await provider.cleanup("recoveryPlans/rp/executions/b1", on_event=lambda e: None)


async def test_a_nearly_spent_write_budget_slows_the_recovery_down(azure_peer, compute,
                                                                     network):
    """ARM's bucket of writes (x-ms-ratelimit-remaining-subscription-writes) runs low,
    then empty: the limiter spaces its calls, waits out the 429s, and the VM comes up."""
    net, point = Net(azure_peer, network), Point(azure_peer)
    d = point.disk("low-os", {0: b"low." * 128})
    groups = [BootGroup("all", (workload("low", [d], net),))]
    limiter = ArmLimiter()
    provider = AzureProvider(site(azure_peer), limiter)
    azure_peer.set_arm_budget(writes=2, refill_seconds=1)  # two writes a second, 2 in hand
    (inst,), _ = await run(provider, "recoveryPlans/rp/executions/l1", groups)
    assert inst.state == "running" and limiter.low()
    assert limiter.throttled == azure_peer.stats()["throttled"]


# --- check(): wrong settings fail naming the field, and nothing is made --------------------

async def test_wrong_settings_fail_check_naming_the_field_and_create_nothing(
        azure_peer, compute, network):
    net, point = Net(azure_peer, network), Point(azure_peer)
    d = point.disk("chk-os", {0: b"chk." * 128})
    provider = AzureProvider(site(azure_peer), AzureProvider.new_limiter())
    before = sorted(r["id"] for r in azure_peer.resources())
    missing_subnet = net.prod.replace("/subnets/prod", "/subnets/nope")
    missing_nsg = net.nsg.replace("dr-nsg", "no-nsg")
    gone = RecoveredDisk("", snapshot_ref(DEFAULT_CONTAINER, "replicas/hdr-chk-os.vhd",
                                          "2020-01-01T00:00:00.0000000Z"), DISK, disk="x")
    cases = [
        ({"subnet_id": missing_subnet}, [d], False, "azure.subnet_id"),
        ({"network_security_group_id": missing_nsg}, [d], False,
         "azure.network_security_group_id"),
        ({"private_ip": "10.2.0.9"}, [d], False, "azure.private_ip"),
        ({"private_ip": "10.1.0.1"}, [d], False, "azure.private_ip"),  # Azure's own
        ({"private_ip": "10.1.0.9"}, [d], True, "azure.private_ip"),  # not in the drill's
        ({"test_subnet_id": ""}, [d], True, "azure.test_subnet_id"),
        ({"test_subnet_id": missing_subnet}, [d], False, "azure.test_subnet_id"),
        ({}, [gone], False, "disks.snapshot_id"),
    ]
    for azure, disks, test_mode, field in cases:
        groups = [BootGroup("g", (workload("chk", disks, net, **azure),))]
        with pytest.raises(InvalidArgument) as e:
            await provider.check("recoveryPlans/rp/executions/c1", groups, test_mode=test_mode)
        assert e.value.field == field, (azure, e.value.message)
    with pytest.raises(FailedPrecondition, match="neither a snapshot nor"):
        await provider.check("recoveryPlans/rp/executions/c1", [BootGroup("g", (workload(
            "chk", [RecoveredDisk("", "", DISK, disk="d")], net),))])
    with pytest.raises(InvalidArgument) as e:
        await AzureProvider({**site(azure_peer), "location": ""}, ArmLimiter()).check(
            "recoveryPlans/rp/executions/c1", [BootGroup("g", (workload("chk", [d], net),))])
    assert e.value.field == "recovery_site.azure.location"
    with pytest.raises(InvalidArgument) as e:
        await AzureProvider({**site(azure_peer), "storage_account_url": "",
                             "storage_account_key": ""}, ArmLimiter()).check(
            "recoveryPlans/rp/executions/c1", [BootGroup("g", (workload("chk", [d], net),))])
    assert e.value.field == "recovery_site.azure.storage_account_url"
    assert sorted(r["id"] for r in azure_peer.resources()) == before


@pytest.mark.parametrize("azure, field", [
    ({}, "w.azure.vm_size"),
    ({"vm_size": "B1s"}, "w.azure.subnet_id"),
    ({"vm_size": "B1s", "subnet_id": "subnet-1"}, "w.azure.subnet_id"),
    ({"vm_size": "B1s", "subnet_id": "/subscriptions/s/resourceGroups/g/providers/"
      "Microsoft.Network/virtualNetworks/v/subnets/n", "private_ip": "10.1.0.300"},
     "w.azure.private_ip"),
    ({"vm_size": "B1s", "subnet_id": "/subscriptions/s/resourceGroups/g/providers/"
      "Microsoft.Network/virtualNetworks/v/subnets/n", "os_type": "BeOS"}, "w.azure.os_type"),
    ({"vm_size": "B1s", "subnet_id": "/subscriptions/s/resourceGroups/g/providers/"
      "Microsoft.Network/virtualNetworks/v/subnets/n", "network_security_group_id": "nsg-1"},
     "w.azure.network_security_group_id"),
    ({"vm_size": "B1s", "zone": "1"}, "w.azure.zone"),
])
def test_workload_settings_are_checked_naming_the_field(azure, field):
    with pytest.raises(InvalidArgument) as e:
        AzureProvider.check_workload("w", {"azure": azure})
    assert e.value.field == field, e.value.message


# --- repository points: nodes write the disks -----------------------------------------------

async def test_a_repository_point_is_written_by_nodes_into_managed_disks(azure_peer, tmp_path):
    """prepare asks the mover for an AzureManagedDisk per disk (named, sized and tagged
    for the execution); the node-side writer behind it makes the disk by direct upload
    and reads back what it wrote."""
    repo = await Repository.open_or_create(FsStore(tmp_path / "repo", durable=False))
    chunks = [1, 0, 2, 0, 0, 3]
    await write_point(repo, "pt1", {"d0": chunks})
    manifest_disk = (await repo.get_recovery_point("pt1")).disks[0]
    expected = b"".join(numbered_chunk(n) for n in chunks)
    disk = RecoveredDisk("", "", len(expected), disk="sites/src/workloads/vm/disks/d0",
                         root_hash=manifest_disk.root_hash)
    site_settings = common_pb2.SiteSettings(azure=common_pb2.AzureSettings(**{
        k: v for k, v in site(azure_peer).items() if k != "resource_groups"},
        resource_groups=[azure_peer.recovery_group]))

    class NodeMover:
        """What the recovery service's mover has a node do: restore_to the destination."""

        def __init__(self):
            self.asked = []

        async def restore(self, d, destination):
            self.asked.append(destination)
            spec = nodes_pb2.RestoreSpec(recovery_point="plans/p/recoveryPoints/pt1",
                                         disk="d0", root_hash=d.root_hash,
                                         destination=destination)
            spec.destination.site.CopyFrom(site_settings)
            with ThreadPoolExecutor(2) as pool:
                target = RepositoryTarget(repo, name="fs:test",
                                          env=TargetEnv(executor=pool, window=4))
                return await target.restore(spec, _progress)

    mover = NodeMover()
    settings = AzureProvider.check_workload("w", {"azure": {
        "vm_size": "B1s", "subnet_id": "/subscriptions/s/resourceGroups/g/providers/"
        "Microsoft.Network/virtualNetworks/v/subnets/n"}})
    groups = [BootGroup("g", (WorkloadSpec("sites/src/workloads/vm", (disk,), settings),))]
    provider = AzureProvider(site(azure_peer), ArmLimiter())
    events = []
    execution = "recoveryPlans/rp/executions/r1"
    await provider.prepare(execution, groups, mover=mover, on_event=events.append)
    (dest,) = mover.asked
    name = disk_name(execution, "sites/src/workloads/vm", 0)
    assert dest.azure.name == name and dest.azure.size_bytes == len(expected)
    assert dest.azure.tags[TAG_EXECUTION] == execution
    assert "uploaded by a node" in events[0].detail
    got = by_type(azure_peer, "Microsoft.Compute/disks", execution)[name]
    assert got["state"] == "Unattached"
    assert azure_peer.read(name, 0, len(expected), group=azure_peer.recovery_group) == expected
    # A second prepare asks for the same destination: the recovery service's mover
    # reuses the restore done for it (only a restore knows it verified its disk).
    mover.restore = lambda d, destination: _done(mover.asked, destination)
    await provider.prepare(execution, groups, mover=mover, on_event=events.append)
    assert mover.asked == [dest, dest]
    await provider.cleanup(execution, on_event=events.append)
    assert not by_type(azure_peer, "Microsoft.Compute/disks", execution)


async def _progress(done, total):
    pass


async def _done(asked, destination):
    asked.append(destination)
    return common_pb2.RestoreResult(verified="reused")


# --- the limiter on its own -----------------------------------------------------------------

async def test_the_limiter_holds_every_call_after_a_429_and_slows_on_a_low_budget(monkeypatch):
    from dr_common.errors import Throttled
    from dr_control.recovery import azure_limiter
    sleeps: list[float] = []

    async def sleep(seconds):
        sleeps.append(seconds)
    monkeypatch.setattr(azure_limiter.asyncio, "sleep", sleep)
    limiter = ArmLimiter()
    answers = [Throttled("busy", retry_after=2.0), "ok"]

    async def once():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer
    assert await limiter.call("put", once) == "ok"
    assert limiter.throttled == 1 and max(sleeps) >= 1.9  # the retry waited Retry-After
    sleeps.clear()

    async def sibling():
        return "ok"
    await limiter.call("get", sibling)  # another call of the site is held back too
    assert sleeps and sleeps[0] > 1.5
    sleeps.clear()
    limiter._hold_until = 0.0
    limiter.observe({"x-ms-ratelimit-remaining-subscription-writes": "7", "Other": "x",
                     "x-ms-ratelimit-remaining-subscription-reads": "n/a"})
    assert limiter.remaining == {"subscription-writes": 7} and limiter.low()
    await limiter.call("get", sibling)
    assert sleeps == [azure_limiter.LOW_BUDGET_SPACING]
