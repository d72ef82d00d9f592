"""vSphere end to end, with real daemons and the vSphere peer (vcsim corrected to CBT and
snapshot semantics, tests/peers/vsphere/): a VM with two disks protected from the
`vsphere` source into an `fs` and an `s3` repository; three cycles with guest writes
between them; incrementals read exactly the changed areas (bytes counted at the peer);
every point restores equal to the disks at their snapshot; no snapshot is left behind.
Then lost tracking on one disk, a user's snapshot, vCenter going away mid-cycle, and the
errors an operator sees for bad input."""

from __future__ import annotations

import random
import uuid

import pytest

from tests.helpers.cluster import run_cycle
from tests.helpers.vsphere import add_disk, connect, disks, find_vm, site_args, snapshot
from tools.localcluster import Cluster, sha256, wait_for

pytestmark = pytest.mark.e2e

MiB = 1 << 20
VM = "DC0_H0_VM0"
WORKLOAD = "vc/dc0-h0-vm0"


class Guest:
    """The VM's two disks (the model's 64 MiB one, and a 32 MiB one added), written as
    a guest would, 1 MiB at a time (a whole chunk: an incremental then reads exactly
    what changed)."""

    def __init__(self, peer):
        self.peer = peer
        si = connect(peer)
        vm = find_vm(si, VM)
        self.keys = [disks(vm.config)[0].key, add_disk(vm, 32 * MiB)]
        self.rnd = random.Random(13)

    def write(self, key: int, mib: list[int]) -> None:
        for i in mib:
            self.peer.write(VM, key, i * MiB, self.rnd.randbytes(MiB))

    def state(self) -> dict[int, str]:
        return {k: self.peer.sha256(VM, k) for k in self.keys}

    def flat(self, key: int) -> str:
        return self.peer.disk_info(VM, key)["base"][:-len(".vmdk")] + "-flat.vmdk"


def _vsphere_site(c: Cluster, peer, monkeypatch, *extra: str) -> None:
    monkeypatch.setenv("VSPHERE_PASSWORD", peer.password)
    c.drctl("site", "add", "vc", *site_args(peer), *extra)


def _plan_to_files(c: Cluster, peer, monkeypatch, *extra: str) -> None:
    """Plan p1: the VM of site vc (the peer) to repository site dst (a directory)."""
    _vsphere_site(c, peer, monkeypatch)
    c.drctl("site", "add", "dst", "--kind", "file", "--path", str(c.repo))
    c.drctl("plan", "create", "p1", "--source", "vc", "--target", "dst", "--workload",
            WORKLOAD, "--rpo", "1h", *extra)


def _target(c: Cluster, kind: str, request) -> list[str]:
    if kind == "fs":
        c.drctl("site", "add", "dst", "--kind", "file", "--path", str(c.repo))
        return ["--target", "dst"]
    boto = request.getfixturevalue("boto")
    bucket = f"dr-vs-{uuid.uuid4().hex[:10]}"
    boto("s3").create_bucket(Bucket=bucket)
    c.drctl("site", "add", "dst", "--kind", "aws", "--region", boto.peer.region,
            "--endpoint-url", boto.peer.endpoint, "--access-key-id", boto.key,
            "--path", f"s3://{bucket}/vs")
    return ["--target", "dst", "--target-kind", "s3"]


def _no_snapshot_left(peer) -> None:
    """The cycle's drop_snapshots task ran (it is queued when the cycle ends)."""
    wait_for(lambda: peer.stats()["snapshots"].get(VM) == 0, timeout=60,
             what="the cycle's snapshot removed")


def _disk(point: dict, key: int) -> dict:
    return next(d for d in point["disks"] if d["disk"].endswith(f"/disks/disk-{key}"))


def _restored(c: Cluster, point: dict, key: int) -> str:
    dest = c.out / f"{uuid.uuid4().hex}.raw"
    c.drctl("restore", point["name"], "--disk", _disk(point, key)["disk"], "--to", str(dest))
    return sha256(dest)


@pytest.mark.parametrize("kind", ["fs", "s3"])
def test_three_cycles_restore_equal_and_incrementals_read_only_changed_areas(
        cluster: Cluster, vsphere_peer, monkeypatch, request, kind: str):
    c, peer = cluster, vsphere_peer
    g = Guest(peer)
    big, small = g.keys
    g.write(big, [0, 1, 7, 40])
    g.write(small, [3])
    _vsphere_site(c, peer, monkeypatch)
    c.drctl("plan", "create", "p1", "--source", "vc", *_target(c, kind, request),
            "--workload", WORKLOAD, "--rpo", "1h")
    expected, served = [], []
    changes = [None, ({big: [1, 20]}), ({small: [0, 31], big: [63]})]
    for n, change in enumerate(changes, start=1):
        for key, mib in (change or {}).items():
            g.write(key, mib)
        expected.append(g.state())
        peer.reset_stats()
        run_cycle(c, "p1", n)
        _no_snapshot_left(peer)
        served.append({k: peer.stats()["served"].get(g.flat(k), 0) for k in g.keys})
    # First cycle: the allocated areas only (CBT "*"), never the whole disk.
    assert served[0] == {big: 4 * MiB, small: MiB}
    # Incrementals: exactly the changed MiBs of each disk, nothing of an unchanged one.
    assert served[1] == {big: 2 * MiB, small: 0}
    assert served[2] == {big: MiB, small: 2 * MiB}
    points = c.points("p1")
    assert len(points) == 3
    for point, state in zip(points, expected):
        for key in g.keys:
            assert _restored(c, point, key) == state[key], (point["name"], key)
    reasons = [_disk(p, big)["full_sync_reason"] for p in points]
    assert reasons == ["first-cycle", "", ""]


def test_cbt_reset_on_one_disk_is_a_full_sync_of_that_disk_only(
        cluster: Cluster, vsphere_peer, monkeypatch):
    c, peer = cluster, vsphere_peer
    g = Guest(peer)
    big, small = g.keys
    g.write(big, [2, 5])
    g.write(small, [1])
    _plan_to_files(c, peer, monkeypatch)
    run_cycle(c, "p1", 1)
    _no_snapshot_left(peer)
    g.write(big, [9])
    g.write(small, [4])
    peer.cbt_reset(VM, small)
    state = g.state()
    peer.reset_stats()
    run_cycle(c, "p1", 2)
    point = c.points("p1")[-1]
    assert _disk(point, small)["full_sync_reason"] == "change-id-unknown"
    assert _disk(point, big)["full_sync_reason"] == ""
    served = peer.stats()["served"]
    assert served.get(g.flat(small)) == 2 * MiB  # its allocated areas, not 32 MiB
    assert served.get(g.flat(big)) == MiB  # still incremental
    _no_snapshot_left(peer)
    assert {k: _restored(c, point, k) for k in g.keys} == state


def test_quiesced_where_tools_run_and_crash_consistent_where_they_do_not(
        cluster: Cluster, vsphere_peer, monkeypatch):
    c, peer = cluster, vsphere_peer
    g = Guest(peer)
    g.write(g.keys[0], [0])
    _plan_to_files(c, peer, monkeypatch, "--quiesce")
    peer.set_tools(VM, True)
    run_cycle(c, "p1", 1)
    peer.set_tools(VM, False)  # the tools stopped: the next point is crash-consistent
    run_cycle(c, "p1", 2)
    peer.set_tools(VM, True)  # running, but the guest's quiescing fails: taken again
    peer.faults("CreateSnapshot_Task", fault="ApplicationQuiesceFault", in_task=True, count=1)
    run_cycle(c, "p1", 3)
    assert [{d["consistency"] for d in p["disks"]} for p in c.points("p1")] == [
        {"app-consistent"}, {"crash-consistent"}, {"crash-consistent"}]
    assert peer.stats()["faults"], "the quiesce fault was not injected"


def test_a_users_snapshot_fails_the_cycle_clearly_and_reads_no_old_data(
        cluster: Cluster, vsphere_peer, monkeypatch):
    c, peer = cluster, vsphere_peer
    g = Guest(peer)
    g.write(g.keys[0], [0])
    _plan_to_files(c, peer, monkeypatch)
    si = connect(peer)
    user_snap = snapshot(find_vm(si, VM), "before upgrade")
    g.write(g.keys[0], [1])  # after the user's snapshot: not in the frozen base
    cycle = run_cycle(c, "p1", 1, state="failed")
    assert "before upgrade" in cycle["error"]["message"], cycle
    assert cycle["error"]["reason"] == "vsphere-other-snapshots"
    assert c.points("p1") == []
    # Ours is dropped; the user's is theirs to keep.
    wait_for(lambda: peer.stats()["snapshots"].get(VM) == 1, timeout=60,
             what="only the user's snapshot left")
    user_snap.RemoveSnapshot_Task(removeChildren=False)
    wait_for(lambda: peer.stats()["snapshots"].get(VM) == 0, timeout=30, what="removal")
    state = g.state()
    run_cycle(c, "p1", 2)
    assert {k: _restored(c, c.points("p1")[0], k) for k in g.keys} == state


def test_vcenter_gone_mid_cycle_fails_clearly_and_leaves_no_snapshot(
        tmp_path, vsphere_peer, monkeypatch):
    peer = vsphere_peer
    g = Guest(peer)
    g.write(g.keys[0], list(range(0, 64, 2)))
    with Cluster(tmp_path, lease_seconds=3) as c:
        _plan_to_files(c, peer, monkeypatch)
        # The snapshot exists while its task still runs: vCenter goes away then.
        peer.faults("CreateSnapshot_Task", task_seconds=3, count=1)
        c.drctl("plan", "run", "p1", check=False)
        wait_for(lambda: peer.stats()["snapshots"].get(VM) == 1, timeout=60,
                 interval=0.01, what="the cycle's snapshot")
        peer.outage(True)
        cycle = wait_for(lambda: (lambda cy: cy[0] if cy and cy[0]["state"] in (
            "completed", "failed") else None)(c.cycles("p1")), timeout=180, what="cycle 1")
        assert cycle["state"] == "failed"
        assert "vSphere unreachable" in cycle["error"]["message"], cycle
        peer.outage(False)
        peer.clear_faults()
        state = g.state()
        second = run_cycle(c, "p1", 2)
        assert second["state"] == "completed"
        _no_snapshot_left(peer)
        point = c.points("p1")[-1]
        assert {k: _restored(c, point, k) for k in g.keys} == state


def test_bad_input_gives_clear_errors_and_creates_nothing(cluster: Cluster, vsphere_peer,
                                                         monkeypatch):
    c, peer = cluster, vsphere_peer
    monkeypatch.setenv("VSPHERE_PASSWORD", "not-the-password")
    code, _, err = c.drctl("site", "add", "vc", *site_args(peer), check=False)
    assert code != 0 and "refused the login" in err and "not-the-password" not in err
    monkeypatch.setenv("VSPHERE_PASSWORD", peer.password)
    code, _, err = c.drctl("site", "add", "vc", *site_args(peer), "--datacenter", "DC9",
                           check=False)
    assert code != 0 and "datacenter DC9" in err
    # No CA given: the system's CAs do not trust the peer; the error shows its fingerprint.
    args = [a for a in site_args(peer) if a not in ("--vsphere-ca-file", str(peer.ca_file))]
    code, _, err = c.drctl("site", "add", "vc", *args, check=False)
    assert code != 0 and peer.thumbprint_sha256 in err, err
    monkeypatch.delenv("VSPHERE_PASSWORD")
    code, _, err = c.drctl("site", "add", "vc", *site_args(peer), check=False)
    assert code != 0 and "VSPHERE_PASSWORD" in err
    assert [s for s in c.drctl_json("site", "list") if s["name"] == "sites/vc"] == []
    # With the right settings the site and its VMs are there, the password nowhere.
    monkeypatch.setenv("VSPHERE_PASSWORD", peer.password)
    c.drctl("site", "add", "vc", *site_args(peer))
    site = next(s for s in c.drctl_json("site", "list") if s["name"] == "sites/vc")
    assert peer.password not in str(site) and site["vsphere"]["user"] == peer.user
    workloads = c.drctl_json("workload", "list", "--site", "sites/vc")
    assert len(workloads) == 4 and all(w["disks"] for w in workloads)
