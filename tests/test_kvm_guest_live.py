"""A running guest replicated while it writes (the kvm issue's must-show): the tiny guest
(tests/peers/kvm) writes numbered fsynced files to its two ext4 disks while five cycles
protect it through QMP; every recovery point, restored, is a clean filesystem holding a
prefix of the guest's files — every file fsynced before the point, nothing after it —
and the two disks of a point are of the same instant; incrementals read no more than
QEMU's frozen bitmap says changed."""

from __future__ import annotations

import json
import time

import pytest

from tests.helpers.cluster import completed_execution
from tests.peers.kvm import initramfs
from tests.peers.kvm.check import check_point, expected
from tests.peers.kvm.guest import Guest, GuestHttp, make_disk, require_guest
from tests.peers.tools import free_port, require_qemu
from tools.localcluster import Cluster, wait_for

pytestmark = pytest.mark.e2e
KIB = 64  # the guest's file size
GRANULE = 64 << 10


@pytest.fixture(autouse=True)
def _tools():
    require_qemu()
    require_guest()


def _views(guest: Guest) -> dict[str, int]:
    """QEMU's frozen bitmaps of the current point (node -> dirty bytes), if a cycle has
    one now."""
    return {n["node-name"]: b["count"] for n in guest.qmp("query-named-block-nodes", flat=True)
            for b in n.get("dirty-bitmaps") or [] if b.get("name", "").endswith("-view")}


def test_five_cycles_of_a_writing_guest_are_each_a_prefix_of_its_files(cluster: Cluster):
    c = cluster
    disks = [make_disk(c.root / f"vm1-{d}.qcow2") for d in "ab"]
    guest = Guest(disks, c.root / "guest", qmp_socket=c.src / "vm1.qmp", rate=5, kib=KIB)
    with guest:
        c.drctl("site", "add", "hv", "--kind", "kvm", "--path", str(c.src))
        c.drctl("site", "add", "dst", "--kind", "file", "--path", str(c.repo))
        wait_for(lambda: guest.count() >= 3, timeout=60, what="the guest writing")
        fsynced_before, seen_after, dirty, took = [guest.count()], [], [], []
        started = began = time.monotonic()
        c.drctl("plan", "create", "p1", "--source", "hv", "--target", "dst", "--workload",
                "hv/vm1", "--rpo", "1h", "--chunk-size", str(GRANULE))
        for n in range(1, 6):
            if n > 1:
                fsynced_before.append(guest.count())
                started = time.monotonic()
                c.drctl("plan", "run", "p1")
            # The point's frozen bitmaps live until the cycle ends: QEMU's count of what
            # changed since the previous point.
            if n > 1:
                dirty.append(sum(wait_for(lambda: _views(guest), interval=0.02,
                                          what=f"cycle {n}'s frozen bitmaps").values()))
            wait_for(lambda: len(c.points("p1")) >= n, timeout=120, what=f"point {n}")
            took.append(time.monotonic() - started)
            seen_after.append(guest.count())
            wait_for(lambda: not _views(guest), what=f"cycle {n}'s QEMU objects removed")
        assert guest.running()
        rate = (guest.count() - fsynced_before[0]) / (time.monotonic() - began)
    points = c.points("p1")
    stats = [{k: int(v) for k, v in cy["stats"].items()} for cy in c.cycles("p1")]
    assert [p["disks"][0].get("full_sync_reason", "") for p in points] == \
        ["first-cycle", "", "", "", ""]
    checked = []
    for i, point in enumerate(points):
        counts = []
        for disk in sorted(point["disks"], key=lambda d: d["disk"]):
            letter = "ab"[len(counts)]
            dest = c.out / f"rp{i}-{letter}.qcow2"
            c.drctl("restore", point["name"], "--disk", "/".join(disk["disk"].split("/")[1::2]),
                    "--to", str(dest), "--format", "qcow2")
            counts.append(check_point(dest, letter, KIB))  # e2fsck -n, exact prefix
        a, b = counts
        checked.append((a.count, b.count))
        # Every file fsynced on both disks before the cycle began is in the point; a
        # file is written to a, then to b: one instant holds b's files, or one more on a.
        assert fsynced_before[i] <= b.count <= a.count <= b.count + 1, (i, counts)
        assert a.count <= seen_after[i] + 1, (i, counts, seen_after[i])
    assert [n for n, _ in checked] == sorted(n for n, _ in checked)
    # Incrementals read what QEMU's bitmap says changed, at most; and at least the
    # files the guest wrote between the points.
    for i in range(1, 5):
        new_files = checked[i][0] - checked[i - 1][0] + checked[i][1] - checked[i - 1][1]
        assert new_files * KIB * 1024 <= stats[i]["bytes_read"] <= dirty[i - 1], \
            (i, stats[i], dirty[i - 1])
    print(json.dumps({"files_per_second_per_disk": round(rate, 2), "cycle_seconds": [round(t, 2) for t in took], "files": checked,
                      "bytes_read": [s["bytes_read"] for s in stats], "dirty_bytes": dirty}))


def test_a_point_of_the_running_guest_boots_at_the_kvm_recovery_site(short_cluster):
    """The point's disks, recovered as qcow2 at a kvm site, boot the tiny guest (not
    writing: dr.write=0), which serves exactly the point's files while the protected
    guest goes on writing others."""
    c = short_cluster
    disks = [make_disk(c.root / f"vm1-{d}.qcow2") for d in "ab"]
    source = Guest(disks, c.root / "guest", qmp_socket=c.src / "vm1.qmp", rate=5, kib=KIB)
    with source:
        c.drctl("site", "add", "hv", "--kind", "kvm", "--path", str(c.src))
        c.drctl("site", "add", "dst", "--kind", "file", "--path", str(c.repo))
        wait_for(lambda: source.count() >= 2, timeout=60, what="the guest writing")
        c.drctl("plan", "create", "p1", "--source", "hv", "--target", "dst", "--workload",
                "hv/vm1", "--rpo", "1h", "--chunk-size", str(GRANULE))
        wait_for(lambda: c.points("p1"), timeout=120, what="point 1")
        wait_for(lambda: source.count() >= 6, timeout=60, what="more files")
        c.drctl("plan", "run", "p1", "--wait")
        point = c.points("p1")[1]
        assert point["disks"][0].get("full_sync_reason", "") == ""  # an incremental
        # What the point holds, checked on a plain restore of it.
        held = []
        for letter, disk in zip("ab", sorted(point["disks"], key=lambda d: d["disk"])):
            dest = c.out / f"{letter}.qcow2"
            c.drctl("restore", point["name"], "--disk", "/".join(disk["disk"].split("/")[1::2]),
                    "--to", str(dest), "--format", "qcow2")
            held.append(check_point(dest, letter, KIB).count)

        site = c.root / "kvm"
        site.mkdir()
        c.drctl("site", "add", "rs", "--kind", "kvm", "--path", str(site))
        port = free_port()
        plan = {"protection_plan": "plans/p1", "recovery_site": "sites/rs", "boot_groups": [
            {"name": "all", "workloads": [{
                "workload": "sites/hv/workloads/vm1",
                "kvm": {"memory_mib": 256, "kernel": str(initramfs.kernel()),
                        "initrd": str(initramfs.initrd()),
                        "append": "console=ttyS0 panic=-1 edd=off quiet dr.write=0",
                        "wait_for": "http",
                        "networks": [{"network": "user",
                                      "forwards": [f"tcp:127.0.0.1:{port}-:80"]}]}}]}]}
        (c.root / "rp.json").write_text(json.dumps(plan))
        code, _, err = c.drctl("recovery-plan", "create", "rp1", "--from-file",
                               str(c.root / "rp.json"))
        assert code == 0, err
        name = c.drctl_json("recovery", "run", "rp1", "--test")["name"]
        short = name.split("/", 1)[1].replace("executions/", "")
        completed_execution(c, short, point)
        recovered = GuestHttp(port)
        for letter, k in zip("ab", held):
            names = recovered.files(letter)
            assert names[:k] == [f"{n:06d}" for n in range(1, k + 1)], (letter, names, k)
            assert len(names) <= k + 1  # at most the torn file the check named
            for n in (1, k // 2 or 1, k):
                assert recovered.get(f"{letter}/{n:06d}") == expected(letter, n, KIB)
        assert source.count() > held[0], "the protected guest stopped writing"
        code, _, err = c.drctl("recovery", "cleanup", short, "--wait")
        assert code == 0, err
        assert list(site.iterdir()) == []
