"""Azure end to end, with real daemons and the Azure peer (Azurite behind a Storage front
that answers page-range diffs correctly, and the harness ARM; tests/peers/azure/): a VM
with two managed disks protected from the `azure` source into the `azure-disk` target
(replica page blobs in the recovery site's storage account, a blob snapshot per point)
and into an azblob repository (a container of that account); three cycles with guest
writes and a discard between them; the first cycle reads only the valid pages,
incrementals exactly the changed ones (bytes counted at the Storage front); every point restores equal to the disks at their snapshot. Then a
deleted previous snapshot, a throttling, failing Azure (seen in /metrics), and bad
input."""

from __future__ import annotations

import uuid

import pytest

from tests.helpers.azblob import new_container
from tests.helpers.azure import MiB, SourceVM, sha256_of, site_args, site_env
from tests.helpers.cluster import daemon_metrics, run_cycle
from tools.localcluster import Cluster, sha256

pytestmark = pytest.mark.e2e

WORKLOAD = "az/vm1"


def _sites(c: Cluster, peer, monkeypatch, target: str) -> list[str]:
    """Site az (the peer's source group) and the target site dst; the plan's --target
    arguments."""
    for key, value in site_env(peer).items():
        monkeypatch.setenv(key, value)
    c.drctl("site", "add", "az", *site_args(peer, peer.source_group))
    path = []
    if target == "azblob":  # a container the operator owns (the target never makes one)
        path = ["--path", f"azblob://{new_container(peer.connection_string)}/plans"]
    c.drctl("site", "add", "dst", *site_args(peer, peer.recovery_group, storage=True), *path)
    return ["--target", "dst", "--target-kind", target]


def _disk(point: dict, disk: str) -> dict:
    return next(d for d in point["disks"] if d["disk"].endswith(f"/disks/{disk}"))


DISK_IDS = {"vm1-os": "os-disk", "vm1-data": "lun-0"}


def _restored(c: Cluster, peer, vm: SourceVM, point: dict, disk: str, target: str) -> str:
    entry = _disk(point, DISK_IDS[disk])
    if target == "azblob":
        dest = c.out / f"{uuid.uuid4().hex}.raw"
        c.drctl("restore", point["name"], "--disk", entry["disk"], "--to", str(dest))
        return sha256(dest)
    out = c.drctl_json("restore", point["name"], "--disk", entry["disk"])
    volume = out["restore_result"]["volume_id"]
    group, name = volume.split("/resourceGroups/")[1].split("/")[0], volume.rsplit("/", 1)[-1]
    assert group == peer.recovery_group
    return sha256_of(peer, name, vm.size, group)


def _read_per_disk(peer, vm: SourceVM) -> dict[str, int]:
    """Bytes read at the Storage front from the snapshots of each source disk (snapshot
    names start with the disk's)."""
    blobs = peer.stats()["blobs"]
    return {d: sum(s.get("bytes_read", 0) for name, s in blobs.items()
                   if name.startswith(f"{d}-")) for d in vm.disks}


def _source_snapshots(peer) -> dict[str, str]:
    """The source group's snapshots: {name: the cycle that took it}."""
    return {r["name"]: r["tags"].get("hybrid-dr:cycle", "") for r in peer.resources()
            if r["type"] == "Microsoft.Compute/snapshots"
            and f"/resourceGroups/{peer.source_group}/" in r["id"]}


@pytest.mark.parametrize("target", ["azure-disk", "azblob"])
def test_three_cycles_restore_equal_and_incrementals_read_only_changed_pages(
        cluster: Cluster, azure_peer, monkeypatch, target: str):
    c, peer = cluster, azure_peer
    vm = SourceVM(peer)
    os_disk, data = vm.disks
    vm.write(os_disk, [0, 1, 7, 40])
    vm.write(data, [3])
    plan_target = _sites(c, peer, monkeypatch, target)
    expected, read = [vm.state()], []
    peer.reset_stats()
    # The scheduler starts the first cycle as soon as the plan exists (its RPO is due).
    c.drctl("plan", "create", "p1", "--source", "az", *plan_target, "--workload", WORKLOAD,
            "--rpo", "1h", "--chunk-size", "1MiB")
    for n in (1, 2, 3):
        if n == 2:
            vm.write(os_disk, [1, 20])
            vm.discard(os_disk, 7)
        if n == 3:
            vm.write(data, [0, 31])
            vm.write(os_disk, [63])
        if n > 1:
            expected.append(vm.state())
            peer.reset_stats()
        run_cycle(c, "p1", n)
        read.append(_read_per_disk(peer, vm))
    # First cycle: the valid pages only, never the whole 1 GiB disk.
    assert read[0] == {os_disk: 4 * MiB, data: MiB}
    # Incrementals: exactly the changed MiBs (a discarded one is not read), nothing of
    # an unchanged disk.
    assert read[1] == {os_disk: 2 * MiB, data: 0}
    assert read[2] == {os_disk: MiB, data: 2 * MiB}
    points = c.points("p1")
    assert len(points) == 3
    for point, state in zip(points, expected):
        for disk in vm.disks:
            assert _restored(c, peer, vm, point, disk, target) == state[disk], (
                point["name"], disk)
    assert [_disk(p, "os-disk")["full_sync_reason"] for p in points] == ["first-cycle", "", ""]
    for p in points:  # one VM's snapshots, started together: the spread is the VM's
        spreads = {_disk(p, d).get("spread_seconds", 0.0) for d in DISK_IDS.values()}
        assert len(spreads) == 1 and 0 <= spreads.pop() < 30, p
        assert _disk(p, "os-disk")["consistency"] == "crash-consistent"
    # Each cycle first deletes the source snapshots no point needs: after three, those
    # of cycle 1 are gone; cycle 3's are the next incremental's base.
    cycles = [cy["name"] for cy in c.cycles("p1")]
    assert sorted(_source_snapshots(peer).values()) == sorted([cycles[1]] * 2 + [cycles[2]] * 2)
    if target == "azure-disk":  # a blob snapshot of each replica per point
        assert sorted(_disk(p, d)["snapshot_id"].split("?snapshot=")[0] for p in points
                      for d in DISK_IDS.values()) == sorted(
            [_disk(points[0], d)["snapshot_id"].split("?snapshot=")[0]
             for d in DISK_IDS.values()] * 3)
        assert len({_disk(p, d)["snapshot_id"] for p in points for d in DISK_IDS.values()}) == 6


def test_a_deleted_previous_snapshot_is_a_full_sync_of_that_disk_only(
        cluster: Cluster, azure_peer, monkeypatch):
    from azure.mgmt.compute import ComputeManagementClient

    from tests.helpers.azure import mgmt
    c, peer = cluster, azure_peer
    vm = SourceVM(peer)
    os_disk, data = vm.disks
    vm.write(os_disk, [0, 5])
    vm.write(data, [2])
    plan_target = _sites(c, peer, monkeypatch, "azure-disk")
    c.drctl("plan", "create", "p1", "--source", "az", *plan_target, "--workload", WORKLOAD,
            "--rpo", "1h", "--chunk-size", "1MiB")
    run_cycle(c, "p1", 1)
    compute = mgmt(ComputeManagementClient, peer)
    gone = next(s for s in _source_snapshots(peer) if s.startswith(f"{data}-"))
    compute.snapshots.begin_delete(peer.source_group, gone).result()
    vm.write(os_disk, [9])
    state = vm.state()
    peer.reset_stats()
    run_cycle(c, "p1", 2)
    point = c.points("p1")[-1]
    assert _disk(point, "lun-0")["full_sync_reason"] == "previous-snapshot-missing"
    assert _disk(point, "os-disk")["full_sync_reason"] == ""
    # The full sync reads the disk's valid pages, the incremental only the changed MiB.
    assert _read_per_disk(peer, vm) == {os_disk: MiB, data: MiB}
    for disk in vm.disks:
        assert _restored(c, peer, vm, point, disk, "azure-disk") == state[disk]


def test_a_throttling_failing_azure_loses_nothing(metered: Cluster, azure_peer, monkeypatch):
    c, peer = metered, azure_peer
    vm = SourceVM(peer)
    os_disk, data = vm.disks
    vm.write(os_disk, list(range(0, 24, 3)))
    vm.write(data, [1, 2])
    plan_target = _sites(c, peer, monkeypatch, "azure-disk")
    # 20 % throttling (Storage's 503 ServerBusy, ARM's 429), 2 % resets, some timeouts.
    peer.faults(storage={"server_busy": 0.2, "timeout": 0.02, "reset": 0.02},
                arm={"throttle": 0.2, "retry_after": 1}, seed=3)
    c.drctl("plan", "create", "p1", "--source", "az", *plan_target, "--workload", WORKLOAD,
            "--rpo", "1h", "--chunk-size", "1MiB")
    run_cycle(c, "p1", 1)
    vm.write(data, [2, 30])
    vm.discard(os_disk, 3)
    state = vm.state()
    run_cycle(c, "p1", 2)
    faults = peer.stats()["faults"]
    peer.clear_faults()
    assert faults.get("arm.throttle", 0) > 0 and faults.get("storage.server_busy", 0) > 0, faults
    # Both show in /metrics: throttling answers counted, and the calls tried again.
    seen = daemon_metrics(c, "dr_target_throttles_total", "dr_target_retries_total")
    assert seen["dr_target_throttles_total"] > 0 and seen["dr_target_retries_total"] > 0, seen
    point = c.points("p1")[-1]
    for disk in vm.disks:
        assert _restored(c, peer, vm, point, disk, "azure-disk") == state[disk]


def test_bad_input_gives_clear_errors_and_creates_nothing(cluster: Cluster, azure_peer,
                                                         monkeypatch):
    from datetime import datetime, timedelta, timezone

    from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

    from tests.peers.azure.azurite import ACCOUNT, ACCOUNT_KEY
    c, peer = cluster, azure_peer
    for key, value in site_env(peer).items():
        monkeypatch.setenv(key, value)
    SourceVM(peer)
    args = site_args(peer, peer.source_group)
    unknown = "11111111-2222-3333-4444-555555555555"
    code, _, err = c.drctl("site", "add", "az", *[unknown if a == peer.subscription_id else a
                                                  for a in args], check=False)
    assert code != 0 and "SubscriptionNotFound" in err and unknown in err, err
    code, _, err = c.drctl("site", "add", "az", *[
        "no-such-group" if a == peer.source_group else a for a in args], check=False)
    assert code != 0 and "ResourceGroupNotFound" in err and "no-such-group" in err, err
    assert [s for s in c.drctl_json("site", "list") if s["name"] == "sites/az"] == []
    assert peer.client_secret not in err
    # A principal that may read but not snapshot: the site and its VM are listed, the
    # cycle fails with ARM's code, and no snapshot is left behind.
    monkeypatch.setenv("AZURE_CLIENT_SECRET", peer.reader_client_secret)
    c.drctl("site", "add", "az", *[peer.reader_client_id if a == peer.client_id else a
                                   for a in args])
    c.drctl("site", "add", "dst", "--kind", "file", "--path", str(c.repo))
    c.drctl("plan", "create", "p1", "--source", "az", "--target", "dst", "--workload",
            WORKLOAD, "--rpo", "1h")
    failed = run_cycle(c, "p1", 1, state="failed")
    error = failed["error"]
    assert error["reason"] == "permission-denied" and not error["retryable"], error
    assert "AuthorizationFailed" in error["message"] and "managed disk vm1-" in error["message"], error
    assert peer.reader_client_secret not in str(failed)
    assert _source_snapshots(peer) == {} and c.points("p1") == []
    # An azblob repository reached through a SAS that has expired: the cycle names the
    # account and says to check the SAS; the signature is never shown; no point.
    monkeypatch.setenv("AZURE_CLIENT_SECRET", peer.client_secret)
    monkeypatch.delenv("AZURE_STORAGE_KEY")
    sas = generate_account_sas(ACCOUNT, ACCOUNT_KEY, ResourceTypes(container=True, object=True),
                               AccountSasPermissions(read=True, write=True, list=True),
                               expiry=datetime.now(timezone.utc) - timedelta(hours=1))
    c.drctl("site", "add", "az2", *site_args(peer, peer.source_group))
    c.drctl("site", "add", "blobs", *site_args(peer, peer.recovery_group), "--storage-account-url",
            f"{peer.blob_endpoint}?{sas}", "--path",
            f"azblob://{new_container(peer.connection_string)}/plans")
    c.drctl("plan", "create", "p2", "--source", "az2", "--target", "blobs", "--target-kind",
            "azblob", "--workload", "az2/vm1", "--rpo", "1h")
    failed = run_cycle(c, "p2", 1, state="failed")
    sig = sas.split("sig=")[1].split("&")[0]
    assert "devstoreaccount1" in failed["error"]["message"], failed
    assert "SAS" in failed["error"]["message"], failed
    assert sig not in str(failed) and c.points("p2") == []
