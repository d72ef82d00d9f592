"""Recovery into vSphere against the vSphere peer (vcsim behind tests/peers/vsphere/'s
front, driven through pyvmomi): a point of a `file` source, protected into an `fs`
repository by the real daemons, is recovered in a test drill — its disks uploaded to a
datastore by a node restore task, a VM created on them with its NIC on the isolated port
group, powered on — and cleaned up without a trace; the node-side writer uploads and
verifies a flat disk on its own; and wrong input (a wrong password, an unknown
datacenter, a datastore without space) fails with the field to fix, creating nothing."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dr_common.errors import (DRError, FailedPrecondition, InvalidArgument, NotFound,
                              PermissionDenied)
from dr_common.proto.dr.v1 import common_pb2, nodes_pb2
from dr_common.repository import Repository
from dr_common.repository.store import FsStore
from dr_common.targets.base import TargetEnv
from dr_common.targets.repository import RepositoryTarget
from dr_common.vsphere import Session, VsphereSettings
from dr_control.recovery.base import BootGroup, RecoveredDisk, WorkloadSpec
from dr_control.recovery.vsphere import VsphereProvider, check_settings, upload_dir, vm_name
from tests.helpers.cluster import completed_execution, protect_file_source
from tests.helpers.disks import MiB
from tests.helpers.repository import numbered_chunk, write_point
from tools.localcluster import Cluster, wait_for

ISOLATED = "DC0_DVPG0"  # vcsim's distributed port group: the drill's isolated network
PRODUCTION = "VM Network"


def settings_of(peer, **kw) -> VsphereSettings:
    return VsphereSettings(**{"url": peer.url, "user": peer.user, "password": peer.password,
                              "thumbprint": peer.thumbprint_sha256, **kw})


def vms(peer) -> dict[str, dict]:
    with Session(settings_of(peer)) as s:
        from pyVmomi import vim
        return {p["name"]: p for _, p in s.retrieve(
            vim.VirtualMachine, ["name", "runtime.powerState", "config.annotation"])}


def datastore_dirs(peer, pattern: str = "hybrid-dr-*", under: str = "") -> list[str]:
    """What the datastore holds matching `pattern` (in directory `under`), as vSphere's
    datastore browser lists it."""
    from pyVmomi import vim
    with Session(settings_of(peer)) as s:
        (ds,) = [d for d, p in s.retrieve(vim.Datastore, ["name"])
                 if p["name"] == peer.datastore]
        browser = s.get(ds, ["browser"])["browser"]
        try:
            result = s.call(
                "search", browser.SearchDatastore_Task,
                datastorePath=f"[{peer.datastore}] {under}".rstrip(),
                searchSpec=vim.host.DatastoreBrowser.SearchSpec(matchPattern=[pattern]))
        except NotFound:  # the directory itself is gone
            return []
        return sorted(f.path for f in (result.file or []))


# --- the node-side writer, on its own -----------------------------------------------------

async def test_a_point_disk_is_uploaded_as_a_flat_vmdk_and_verified(vsphere_peer, tmp_path):
    repo = await Repository.open_or_create(FsStore(tmp_path / "repo", durable=False))
    # Data, a zero chunk in the middle (it must be sent: a flat file has no holes), data.
    chunks = [1, 2, 0, 3] + [0] * 5 + [4]
    await write_point(repo, "pt1", {"d": chunks})
    disk = (await repo.get_recovery_point("pt1")).disks[0]
    spec = nodes_pb2.RestoreSpec(recovery_point="plans/p/recoveryPoints/pt1", disk="d",
                                 root_hash=disk.root_hash, destination=nodes_pb2.RestoreDestination(
                                     vsphere=nodes_pb2.VsphereDatastoreFile(
                                         datacenter="DC0", datastore=vsphere_peer.datastore,
                                         path="hybrid-dr-test/w/disk-0.vmdk")))
    spec.destination.site.vsphere.CopyFrom(common_pb2.VsphereSettings(
        url=vsphere_peer.url, user=vsphere_peer.user, password=vsphere_peer.password,
        thumbprint=vsphere_peer.thumbprint_sha256))
    seen = []

    async def progress(done, total):
        seen.append((done, total))

    with ThreadPoolExecutor(4) as pool:
        target = RepositoryTarget(repo, name="fs:test", env=TargetEnv(executor=pool, window=4))
        result = await target.restore(spec, progress)
    expected = b"".join(numbered_chunk(n) for n in chunks)
    assert result.datastore_path == f"[{vsphere_peer.datastore}] hybrid-dr-test/w/disk-0.vmdk"
    assert result.bytes_written == len(expected) and "chunks read back" in result.verified
    assert seen[-1] == (len(expected), len(expected))
    with Session(settings_of(vsphere_peer)) as s:
        url = s.files.url(f"[{vsphere_peer.datastore}] hybrid-dr-test/w/disk-0-flat.vmdk", "DC0")
        got = bytearray(len(expected))
        assert s.files.read_into(url, 0, memoryview(got)) == len(expected)
        assert bytes(got) == expected
        resp = s.files.request("GET", s.files.url(
            f"[{vsphere_peer.datastore}] hybrid-dr-test/w/disk-0.vmdk", "DC0"))
        text = resp.read().decode()
    assert 'createType="monolithicFlat"' in text
    assert f'RW {len(expected) // 512} FLAT "disk-0-flat.vmdk" 0' in text
    # Every byte was put, zeros included.
    received = vsphere_peer.stats()["received"]
    assert sum(v for k, v in received.items() if k.endswith("disk-0-flat.vmdk")) == len(expected)


async def test_an_upload_that_fails_verification_leaves_no_files(vsphere_peer, tmp_path):
    """The flat file and descriptor are written, then reading them back fails: the
    restore fails (retryable) and deletes both, so no half-made disk is left."""
    repo = await Repository.open_or_create(FsStore(tmp_path / "repo", durable=False))
    await write_point(repo, "pt1", {"d": [1, 2, 3]})
    disk = (await repo.get_recovery_point("pt1")).disks[0]
    spec = nodes_pb2.RestoreSpec(disk="d", root_hash=disk.root_hash,
                                 destination=nodes_pb2.RestoreDestination(
                                     vsphere=nodes_pb2.VsphereDatastoreFile(
                                         datacenter="DC0", datastore=vsphere_peer.datastore,
                                         path="hybrid-dr-fail/w/disk-0.vmdk", overwrite=True)))
    spec.destination.site.vsphere.CopyFrom(common_pb2.VsphereSettings(
        url=vsphere_peer.url, user=vsphere_peer.user, password=vsphere_peer.password,
        thumbprint=vsphere_peer.thumbprint_sha256))
    vsphere_peer.faults("GET /folder", reset=True)

    async def progress(done, total):
        pass

    with ThreadPoolExecutor(4) as pool:
        target = RepositoryTarget(repo, name="fs:test", env=TargetEnv(executor=pool, window=4))
        with pytest.raises(DRError) as e:
            await target.restore(spec, progress)
    vsphere_peer.clear_faults()
    assert e.value.retryable, e.value.message
    received = vsphere_peer.stats()["received"]
    assert any(k.endswith("disk-0-flat.vmdk") for k in received)  # it was written...
    assert datastore_dirs(vsphere_peer, "*.vmdk", "hybrid-dr-fail/w") == []  # ...and removed


# --- a test drill through the real daemons ------------------------------------------------

def _vsphere_site(c: Cluster, peer, monkeypatch, site: str = "vc") -> None:
    monkeypatch.setenv("VSPHERE_PASSWORD", peer.password)
    c.drctl("site", "add", site, "--kind", "vsphere", "--url", peer.url, "--user", peer.user,
            "--thumbprint", peer.thumbprint_sha256, "--datacenter", peer.datacenter)


def _plan_file(tmp_path: Path, **vsphere) -> Path:
    plan = {"protection_plan": "plans/p1", "recovery_site": "sites/vc", "boot_groups": [{
        "name": "apps", "workloads": [{
            "workload": "sites/src/workloads/vm1", "tags": {"team": "storefront"},
            "vsphere": {"cpus": 2, "memory_mib": 64, "datastore": "LocalDS_0",
                        "networks": [{"source": "lan", "port_group": PRODUCTION}],
                        "isolated_port_group": ISOLATED, "guest_id": "otherLinux64Guest",
                        "wait_for": "powered-on", **vsphere}}]}]}
    path = tmp_path / "rp.json"
    path.write_text(json.dumps(plan))
    return path


@pytest.mark.e2e
def test_a_drill_recovers_a_file_point_into_vsphere_and_cleans_up(
        cluster: Cluster, vsphere_peer, monkeypatch, tmp_path):
    c = cluster
    _, content, point = protect_file_source(c)
    _vsphere_site(c, vsphere_peer, monkeypatch)
    before = vms(vsphere_peer)
    c.drctl("recovery-plan", "create", "rp1", "--from-file",
            str(_plan_file(tmp_path, wait_for="tools")))
    plan = c.drctl_json("recovery-plan", "get", "rp1")
    assert plan["recovery_site"] == "sites/vc"
    assert plan["boot_groups"][0]["workloads"][0]["vsphere"]["datastore"] == "LocalDS_0"

    started = time.monotonic()
    name = c.drctl_json("recovery", "run", "rp1", "--test")["name"]
    short = name.split("/", 1)[1].replace("executions/", "")
    vm = vm_name(name, "sites/src/workloads/vm1")
    # The VM counts as up once VMware Tools runs in it (wait_for "tools"): the group
    # waits for that, and the peer's guest starts its tools once the VM is powered on.
    wait_for(lambda: any(v["name"] == vm and v["power"] == "poweredOn"
                         for v in vsphere_peer.vms()), timeout=60, what="the VM powered on")
    assert c.drctl_json("recovery", "get", short)["state"] == "running"
    vsphere_peer.set_tools(vm, True)
    execution = completed_execution(c, short, point)
    elapsed = time.monotonic() - started
    prepared = next(e for e in execution["events"] if e["step"] == "disk-prepared")
    print(f"\nupload: {prepared['detail']}; whole drill {elapsed:.1f} s")

    (recovered,) = execution["instances"]
    running = next(e for e in execution["events"] if e["step"] == "instance-running")
    assert "tools running" in running["detail"]
    from pyVmomi import vim
    with Session(settings_of(vsphere_peer)) as s:
        found = {p["name"]: (ref, p) for ref, p in s.retrieve(
            vim.VirtualMachine, ["name", "runtime.powerState", "config.hardware",
                                 "config.annotation", "config.guestId", "customValue"])}
        ref, p = found[vm]
        assert ref._moId == recovered["instance_id"]
        assert p["runtime.powerState"] == "poweredOn"
        hw = p["config.hardware"]
        assert (hw.numCPU, hw.memoryMB, p["config.guestId"]) == (2, 64, "otherLinux64Guest")
        assert f"hybrid-dr:execution={name}" in p["config.annotation"]
        disks = [d for d in hw.device if isinstance(d, vim.vm.device.VirtualDisk)]
        assert [d.backing.fileName for d in disks] == recovered["volume_ids"] == [
            f"[LocalDS_0] {upload_dir(name)}/{vm}/disk-0.vmdk"]
        # Test mode: the NIC is on the isolated port group, not the mapped production one.
        (nic,) = [d for d in hw.device if isinstance(d, vim.vm.device.VirtualEthernetCard)]
        pg = s.get(ref, ["network"])["network"]
        assert [s.get(n, ["name"])["name"] for n in pg] == [ISOLATED]
        assert isinstance(nic.backing,
                          vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo)
        fields = {f.key: f.name for f in s.content.customFieldsManager.field}
        attributes = {fields[v.key]: v.value for v in p["customValue"]}
        assert attributes["team"] == "storefront" and attributes["hybrid-dr:test"] == "true"
    # The VM's disk holds what the source held at the point, byte for byte.
    assert vsphere_peer.read(vm, disks[0].key, 0, len(content)) == content

    code, out, err = c.drctl("recovery", "cleanup", short, "--wait", "--output", "json")
    assert code == 0, err
    cleaned = json.loads(out)
    assert cleaned["state"] == "cleaned-up"
    assert [e["step"] for e in cleaned["events"]][-2:] == ["cleanup-instances", "cleanup-files"]
    assert vms(vsphere_peer).keys() == before.keys()
    assert datastore_dirs(vsphere_peer) == []
    # Cleanup is idempotent: again, it finds nothing left to delete.
    provider = VsphereProvider(settings_of(vsphere_peer).as_dict() | {
        "password": vsphere_peer.password}, VsphereProvider.new_limiter())
    assert asyncio.run(provider.cleanup(name, on_event=lambda e: None)) == {"vms": [],
                                                                            "files": []}


# --- wrong input: the field to fix, and nothing created -----------------------------------

def _groups(datastore: str = "LocalDS_0", size: int = 4 * MiB, **v) -> list[BootGroup]:
    settings = {"vsphere": check_settings("w", {
        "datastore": datastore, "memory_mib": 64,
        "networks": [{"source": "lan", "port_group": PRODUCTION}],
        "isolated_port_group": ISOLATED, **v})}
    disk = RecoveredDisk("", "", size, disk="sites/src/workloads/vm1/disks/vm1",
                         root_hash="ab" * 32)
    return [BootGroup("apps", (WorkloadSpec("sites/src/workloads/vm1", (disk,), settings),))]


def _nothing_made(peer, before: dict) -> None:
    assert vms(peer).keys() == before.keys()
    assert datastore_dirs(peer) == []
    assert not any(k.startswith("PUT") for k in peer.stats().get("calls", {}))
    assert "CreateVM_Task" not in peer.stats().get("calls", {})


async def test_a_wrong_password_is_refused_naming_the_account(vsphere_peer):
    before = vms(vsphere_peer)
    provider = VsphereProvider(settings_of(vsphere_peer).as_dict() | {
        "password": "Wr0ng-s3cret"}, VsphereProvider.new_limiter())
    with pytest.raises(PermissionDenied) as e:
        await provider.check("x", _groups(), test_mode=True)
    assert e.value.reason == "invalid-credentials"
    assert vsphere_peer.user in e.value.message and "Wr0ng-s3cret" not in e.value.message
    assert "wrong user name or password" in e.value.message
    _nothing_made(vsphere_peer, before)


async def test_a_certificate_that_is_not_pinned_shows_its_fingerprint(vsphere_peer):
    provider = VsphereProvider(settings_of(vsphere_peer, thumbprint="AB" * 32).as_dict() | {
        "password": vsphere_peer.password}, VsphereProvider.new_limiter())
    with pytest.raises(FailedPrecondition) as e:
        await provider.check("x", _groups(), test_mode=True)
    assert e.value.reason == "certificate-untrusted"
    shown = e.value.message.replace(":", "").upper()
    assert vsphere_peer.thumbprint_sha256.replace(":", "").upper() in shown, e.value.message
    assert "AB" * 32 in shown  # and the pin it does not match


@pytest.mark.parametrize("change, field, words", [
    ({"datacenter": "DC9"}, "recovery_site.vsphere.datacenter", "DC9"),
    ({"datastore": "NoSuchDS"}, "vsphere.datastore", "NoSuchDS"),
    ({"port_group": "no-such-net"}, "vsphere.networks[0].port_group", "no-such-net"),
    ({"isolated": ""}, "vsphere.isolated_port_group", "isolated"),
    ({"resource_pool": "DC0_C9"}, "vsphere.resource_pool", "DC0_C9"),
])
async def test_wrong_settings_name_the_field_and_create_nothing(vsphere_peer, change, field,
                                                                 words):
    before = vms(vsphere_peer)
    site = settings_of(vsphere_peer, datacenter=change.get("datacenter", "DC0"))
    provider = VsphereProvider(site.as_dict() | {"password": vsphere_peer.password},
                               VsphereProvider.new_limiter())
    v: dict = {}
    if "datastore" in change:
        v["datastore"] = change["datastore"]
    if "port_group" in change:
        v["networks"] = [{"port_group": change["port_group"]}]
    if "isolated" in change:
        v["isolated_port_group"] = change["isolated"]
    if "resource_pool" in change:
        v["resource_pool"] = change["resource_pool"]
    with pytest.raises(InvalidArgument) as e:
        await provider.check("x", _groups(**v), test_mode="port_group" not in change)
    assert e.value.field == field and words in e.value.message, e.value.message
    _nothing_made(vsphere_peer, before)


@pytest.mark.e2e
def test_a_datastore_without_space_fails_the_run_with_the_field_and_creates_nothing(
        cluster: Cluster, vsphere_peer, monkeypatch, tmp_path):
    c = cluster
    protect_file_source(c)
    _vsphere_site(c, vsphere_peer, monkeypatch)
    c.drctl("recovery-plan", "create", "rp1", "--from-file", str(_plan_file(tmp_path)))
    vsphere_peer.set_datastore("LocalDS_0", capacity=1 << 30, free=2 * MiB)
    before = vms(vsphere_peer)
    vsphere_peer.reset_stats()
    code, out, err = c.drctl("recovery", "run", "rp1", "--test", "--wait", check=False)
    assert code == 1, (out, err)
    assert "INVALID_ARGUMENT" in err and "field vsphere.datastore" in err, err
    assert "LocalDS_0 has 2 MiB free" in err and "Traceback" not in err
    assert c.drctl_json("recovery", "list", "rp1") == []
    _nothing_made(vsphere_peer, before)
    # A setting of another provider is refused when the plan is made, naming it.
    plan = json.loads(_plan_file(tmp_path).read_text())
    plan["boot_groups"][0]["workloads"][0]["instance_type"] = "t3.small"
    (tmp_path / "bad.json").write_text(json.dumps(plan))
    code, _, err = c.drctl("recovery-plan", "create", "rp2", "--from-file",
                           str(tmp_path / "bad.json"), check=False)
    assert code == 1 and "field recovery_plan.boot_groups[0].workloads[0].instance_type" in err

    # With room on the datastore, a failover puts the NIC on the mapped port group.
    vsphere_peer.set_datastore("LocalDS_0", capacity=1 << 30, free=512 * MiB)
    code, out, err = c.drctl("recovery", "run", "rp1", "--failover", "--wait", "--output",
                             "json")
    assert code == 0, err
    execution = json.loads(out)
    assert execution["state"] == "completed" and execution["mode"] == "failover"
    from pyVmomi import vim
    with Session(settings_of(vsphere_peer)) as s:
        (ref,) = [r for r, p in s.retrieve(vim.VirtualMachine, ["name"]) if p["name"] == vm_name(
            execution["name"], "sites/src/workloads/vm1")]
        assert [s.get(n, ["name"])["name"] for n in s.get(ref, ["network"])["network"]] == [
            PRODUCTION]
        assert "hybrid-dr:test=false" in s.get(ref, ["config.annotation"])["config.annotation"]


async def test_a_failed_create_task_reports_vspheres_fault_and_leaves_nothing(vsphere_peer):
    """CreateVM_Task fails in vSphere: the execution's error carries the fault's name and
    message, and cleanup finds nothing to remove."""
    from dr_control.recovery.base import RecoveryFailed
    before = vms(vsphere_peer)
    provider = VsphereProvider(settings_of(vsphere_peer).as_dict() | {
        "password": vsphere_peer.password}, VsphereProvider.new_limiter())
    vsphere_peer.faults("CreateVM_Task", fault="InsufficientResourcesFault", in_task=True,
                        message="Insufficient resources to satisfy the configured CPU count")
    events = []
    with pytest.raises(RecoveryFailed) as e:
        await provider.recover("exec-f", _groups(), test_mode=True, on_event=events.append,
                               running_timeout=10)
    vsphere_peer.clear_faults()
    # (The peer's failed tasks carry the fault's name; its message only for faults the
    # call itself answers, so only the name is asserted.)
    assert "vSphere fault InsufficientResourcesFault" in e.value.message, e.value.message
    assert "create VM vm1-dr-" in e.value.message
    assert "sites/src/workloads/vm1" in e.value.message
    assert [ev.step for ev in events] == []
    assert await provider.cleanup("exec-f", on_event=events.append) == {"vms": [], "files": []}
    assert vms(vsphere_peer).keys() == before.keys()
