"""Running VMs at a kvm site, against a real QEMU over QMP and its NBD server: a point
is the disks' state at the cycle's transaction, incrementals read only what changed,
tracking that cannot be trusted is a labelled full sync, and nothing a cycle made is
left in QEMU — after a cycle, a failed one, or a node that died holding it.

The VM here runs no guest (paused, writes through HMP qemu-io), so the content each
point must have is known exactly; tests/test_kvm_guest_live.py runs a booting guest
that writes while it is replicated."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from pathlib import Path

import pytest

from dr_common.proto.dr.v1 import nodes_pb2
from dr_common.sources import kvm, kvm_live
from dr_common.sources.base import SourceEnv
from tests.helpers.disks import MiB
from tests.helpers.qemuvm import PausedVm
from tests.peers.tools import require_qemu, require_tool
from tools.localcluster import Cluster, sha256, wait_for

pytestmark = pytest.mark.e2e
KiB = 1 << 10
GRANULE = 64 * KiB  # the bitmaps' granularity (the qcow2 cluster size)
SIZE = 64 * MiB


@pytest.fixture(autouse=True)
def _tools():
    require_qemu()
    require_tool("qemu-system-x86_64")


class Model:
    """What a disk must read as: the writes done to it, in memory."""

    def __init__(self, size: int):
        self.data = bytearray(size)

    def write(self, vm: PausedVm, disk: int, pattern: int, offset: int, length: int) -> None:
        vm.io(disk, f"write -P {pattern} {offset} {length}")
        self.data[offset:offset + length] = bytes([pattern]) * length

    def discard(self, vm: PausedVm, disk: int, offset: int, length: int) -> None:
        vm.io(disk, f"write -z {offset} {length}")
        self.data[offset:offset + length] = bytes(length)

    def sha(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _images(where: Path, n: int, size: int = SIZE) -> list[Path]:
    images = [where / f"vm1-{i}.qcow2" for i in range(n)]
    for image in images:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), str(size)],
                       check=True)
    return images


# --- the source on its own ---------------------------------------------------------------

class Cycles:
    """The snapshot, read and drop steps of cycles, as a node runs them."""

    def __init__(self, root: Path):
        self.root, self.env, self.n, self.keep = root, SourceEnv(roots=(str(root),)), 0, []
        self.disks = [nodes_pb2.SnapshotDisk(disk=f"{w.id}/{d.id}", workload=w.id,
                                              locator=d.locator)
                      for w in kvm.discover(root) for d in w.disks]

    def _spec(self, cls):
        spec = cls(plan="plans/p1", cycle=f"plans/p1/cycles/{self.n}", disks=self.disks)
        spec.source.kvm.SetInParent()
        return spec

    def take(self) -> list[nodes_pb2.SourceSnapshot]:
        self.n += 1
        spec = self._spec(nodes_pb2.SnapshotSpec)
        spec.keep_snapshot_ids.extend(self.keep)
        return asyncio.run(kvm.take_snapshots(spec, self.env))

    def read(self, snaps) -> dict[str, tuple[bytes, str, int]]:
        """disk -> (its content at the point, where unread ranges keep `base`'s bytes,
        the full-sync reason, bytes read)."""
        out = {}
        for s, d in zip(snaps, self.disks):
            disk = asyncio.run(kvm.open_source(
                nodes_pb2.KvmSource(path=d.locator, snapshot=s.snapshot_id), None, self.env))
            try:
                buf = bytearray(disk.size)
                for e in disk.extents():
                    if not e.zero and not e.clean:
                        disk.readinto(e.start, memoryview(buf)[e.start:e.end])
                out[s.disk] = (buf, disk.full_sync_reason, disk.bytes_read)
            finally:
                disk.close()
        self.keep = [s.snapshot_id for s in snaps]
        return out

    def drop(self) -> None:
        asyncio.run(kvm.drop_snapshots(self._spec(nodes_pb2.DropSnapshotsSpec), self.env))


NOTHING = {"exports": [], "jobs": [], "nodes": [], "temporary-bitmaps": []}


def test_inventory_lists_a_running_vm_with_its_disks_not_its_images(tmp_path):
    with PausedVm(tmp_path / "vm1.qmp", _images(tmp_path, 2)):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp_path / "idle.qcow2"),
                        "1M"], check=True)
        found = {w.id: w for w in kvm.discover(tmp_path)}
    assert sorted(found) == ["idle", "vm1"]
    assert [d.id for d in found["vm1"].disks] == ["vd0", "vd1"]
    assert all(d.size == SIZE and d.locator.startswith("qmp:") for d in found["vm1"].disks)


def test_a_point_is_the_state_at_the_transaction_and_incrementals_read_what_changed(tmp_path):
    models = [Model(SIZE), Model(SIZE)]
    with PausedVm(tmp_path / "vm1.qmp", _images(tmp_path, 2)) as vm:
        models[0].write(vm, 0, 0x11, 0, 8 * MiB)
        models[1].write(vm, 1, 0x22, 0, 2 * MiB)
        cycles = Cycles(tmp_path)
        for n in range(1, 5):
            snaps = cycles.take()
            at_point = [m.sha() for m in models]
            # The guest goes on writing after the point: none of it may show.
            models[0].write(vm, 0, 0x40 + n, 0, MiB)
            models[1].discard(vm, 1, 0, GRANULE)
            got = cycles.read(snaps)
            cycles.drop()
            assert vm.ours() == NOTHING
            for i, (disk, (content, reason, read)) in enumerate(sorted(got.items())):
                if n == 1:
                    assert reason == "first-cycle"
                    assert hashlib.sha256(content).hexdigest() == at_point[i]
                    assert read == [8 * MiB, 2 * MiB][i]  # allocated extents only
                else:
                    assert reason == ""
            # Between points 1 and 2 (and each later pair) exactly 1 MiB of disk 0 and
            # one granule of disk 1 (zeroed: recorded as zero, never read) changed.
            if n > 1:
                assert got["vm1/vd0"][2] == MiB, got["vm1/vd0"][2]
                assert got["vm1/vd1"][2] == 0
                assert bytes(got["vm1/vd0"][0][:MiB]) == bytes([0x40 + n - 1]) * MiB
            # Only this cycle's bitmap and the one it replaces remain.
            assert sorted(vm.bitmaps(0)) == sorted(
                {kvm.bitmap_name("p1", str(n)), kvm.bitmap_name("p1", str(max(n - 1, 1)))})
        assert not list(kvm_live.state_dir(str(tmp_path / "vm1.qmp")).glob("*.qcow2"))


def test_the_vms_of_a_group_are_taken_together(tmp_path):
    a = _images(tmp_path, 1)
    b = [tmp_path / "vm2-0.qcow2"]
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(b[0]), str(SIZE)], check=True)
    with PausedVm(tmp_path / "vm1.qmp", a) as vm1, PausedVm(tmp_path / "vm2.qmp", b) as vm2:
        vm1.io(0, "write -P 0x21 0 1M")
        vm2.io(0, "write -P 0x22 0 2M")
        cycles = Cycles(tmp_path)
        assert len(cycles.disks) == 2
        got = cycles.read(cycles.take())
        cycles.drop()
        assert vm1.ours() == NOTHING and vm2.ours() == NOTHING
    assert sorted((r, n) for _, r, n in got.values()) == [("first-cycle", MiB),
                                                          ("first-cycle", 2 * MiB)]


def test_what_a_dead_node_held_is_removed_by_the_next_cycle(tmp_path):
    with PausedVm(tmp_path / "vm1.qmp", _images(tmp_path, 1)) as vm:
        vm.io(0, "write -P 0x31 0 1M")
        cycles = Cycles(tmp_path)
        cycles.read(cycles.take())
        cycles.take()  # the node dies here: no read, no drop
        assert vm.ours()["exports"] and vm.ours()["jobs"]
        snaps = cycles.take()  # the cycle after it
        assert len(vm.ours()["exports"]) == 1
        got = cycles.read(snaps)
        cycles.drop()
        assert vm.ours() == NOTHING
        # The dead cycle's bitmap is gone; the point is still relative to point 1.
        assert got["vm1/vd0"][1] == "" and sorted(vm.bitmaps(0)) == [
            kvm.bitmap_name("p1", "1"), kvm.bitmap_name("p1", "3")]


@pytest.mark.parametrize("change, reason", [
    ("disable", "bitmap-disabled"), ("remove", "bitmap-missing"), ("grow", "disk-resized"),
    ("crash", "bitmap-inconsistent")])
def test_tracking_that_cannot_be_trusted_is_a_labelled_full_sync(tmp_path, change, reason):
    model = Model(SIZE)
    socket, images = tmp_path / "vm1.qmp", _images(tmp_path, 1)
    with PausedVm(socket, images) as vm:
        model.write(vm, 0, 0x51, 0, 4 * MiB)
        cycles = Cycles(tmp_path)
        cycles.read(cycles.take())
        cycles.drop()
    vm = PausedVm(socket, images)  # restarted cleanly: the bitmap was stored
    if change == "crash":
        vm.kill()  # dies with the stored bitmap open (flagged in use in the image)
        vm = PausedVm(socket, images)
    with vm:
        previous = kvm.bitmap_name("p1", "1")
        if change == "disable":
            vm.qmp("block-dirty-bitmap-disable", node="disk0", name=previous)
        elif change == "remove":
            vm.qmp("block-dirty-bitmap-remove", node="disk0", name=previous)
        elif change == "grow":
            vm.qmp("block_resize", **{"node-name": "disk0"}, size=2 * SIZE)
            model.data.extend(bytes(SIZE))
        model.write(vm, 0, 0x52, MiB, MiB)  # a write the disabled bitmap would miss
        got = cycles.read(cycles.take())["vm1/vd0"]
        cycles.drop()
    content, why, read = got
    assert why == reason
    assert read == 4 * MiB  # the allocated extents, all of them
    assert hashlib.sha256(content).hexdigest() == model.sha()


# --- through the daemons ------------------------------------------------------------------

def _plan(c: Cluster) -> None:
    c.drctl("site", "add", "hv", "--kind", "kvm", "--path", str(c.src))
    c.drctl("site", "add", "dst", "--kind", "file", "--path", str(c.repo))
    c.drctl("plan", "create", "p1", "--source", "hv", "--target", "dst", "--workload",
            "hv/vm1", "--rpo", "1h", "--chunk-size", str(GRANULE))


def _points(c: Cluster, n: int) -> list[dict]:
    return wait_for(lambda: (lambda p: p if len(p) >= n else None)(c.points("p1")),
                    timeout=120, what=f"{n} recovery points")


def test_cycles_of_a_running_vm_through_the_daemons_restore_every_point(cluster: Cluster):
    c = cluster
    models = [Model(SIZE), Model(SIZE)]
    with PausedVm(c.src / "vm1.qmp", _images(c.src, 2)) as vm:
        models[0].write(vm, 0, 0x61, 0, 6 * MiB)
        models[1].write(vm, 1, 0x62, 10 * MiB, 3 * MiB)
        expected = [[m.sha() for m in models]]
        _plan(c)
        _points(c, 1)
        for n in range(2, 5):
            models[0].write(vm, 0, 0x60 + n, n * MiB, GRANULE)
            models[1].discard(vm, 1, 10 * MiB, GRANULE * n)
            expected.append([m.sha() for m in models])
            c.drctl("plan", "run", "p1", "--wait")
        points = _points(c, 4)
        # The drop_snapshots task runs once the point is recorded.
        wait_for(lambda: vm.ours() == NOTHING, what="the last cycle's QEMU objects removed")
    assert [[d.get("full_sync_reason", "") for d in p["disks"]] for p in points] == \
        [["first-cycle"] * 2] + [["", ""]] * 3
    assert all(d["consistency"] == "crash-consistent" for p in points for d in p["disks"])
    stats = [{k: int(v) for k, v in cy["stats"].items()} for cy in c.cycles("p1")]
    assert [s["bytes_read"] for s in stats[1:]] == [GRANULE] * 3  # one granule of disk 0
    for i, point in enumerate(points):
        for j, disk in enumerate(sorted(point["disks"], key=lambda d: d["disk"])):
            dest = c.out / f"rp{i}-{j}.raw"
            c.drctl("restore", point["name"], "--disk", disk_arg(disk["disk"]),
                    "--to", str(dest))
            assert sha256(dest) == expected[i][j], f"point {i + 1} disk {j} differs"


def disk_arg(name: str) -> str:
    """SITE/WORKLOAD/DISK of a disk's resource name, sites/S/workloads/W/disks/D."""
    parts = name.split("/")
    return "/".join(parts[1::2])


def test_qemu_killed_mid_cycle_is_a_clear_error_and_after_a_restart_a_labelled_full_sync(
        single_try_cluster: Cluster):
    c = single_try_cluster
    size = 256 * MiB
    images = _images(c.src, 1, size)
    model = Model(size)
    socket = c.src / "vm1.qmp"
    with PausedVm(socket, images) as vm:
        model.write(vm, 0, 0x71, 0, MiB)
        _plan(c)
        _points(c, 1)
        wait_for(lambda: vm.ours() == NOTHING, what="cycle 1's QEMU objects removed")
    # A clean restart keeps tracking: QEMU stored the bitmap in the image.
    with PausedVm(socket, images) as vm:
        model.write(vm, 0, 0x72, 0, GRANULE)
        c.drctl("plan", "run", "p1", "--wait")
        assert _points(c, 2)[1]["disks"][0].get("full_sync_reason", "") == ""
        wait_for(lambda: vm.ours() == NOTHING, what="cycle 2's QEMU objects removed")
        model.write(vm, 0, 0x73, 0, 192 * MiB)  # a third cycle long enough to be hurt
        vm.io(0, "flush")  # what a guest's fsync does: the writes survive QEMU's death
        c.drctl("plan", "run", "p1")
        wait_for(lambda: vm.ours()["exports"], interval=0.01, what="cycle 3's exports")
        vm.kill()
    overlays = lambda: list(kvm_live.state_dir(str(socket)).glob("*.qcow2"))  # noqa: E731
    assert overlays(), "cycle 3 had no fleecing overlays"
    cycle = wait_for(lambda: (lambda cy: cy if cy["state"] == "failed" else None)(
        c.cycles("p1")[2]), timeout=120, what="cycle 3 to fail")
    assert cycle["error"]["reason"] == "source-unavailable", cycle["error"]
    assert "QEMU" in cycle["error"]["message"], cycle["error"]
    assert len(c.points("p1")) == 2
    # The drop task finds no QEMU, and removes the overlays it had been writing.
    wait_for(lambda: not overlays(), what="cycle 3's overlays removed")
    # Point 2's bitmap was added by the QEMU that died: it never reached the image.
    with PausedVm(socket, images) as vm:
        assert kvm.bitmap_name("p1", "2") not in vm.bitmaps(0)
        c.drctl("plan", "run", "p1", "--wait")
        point = _points(c, 3)[2]
        wait_for(lambda: vm.ours() == NOTHING, what="cycle 4's QEMU objects removed")
        assert sorted(vm.bitmaps(0)) == [kvm.bitmap_name("p1", "4")]
    assert point["disks"][0]["full_sync_reason"] == "bitmap-missing"
    dest = c.out / "rp3.raw"
    c.drctl("restore", point["name"], "--to", str(dest))
    assert sha256(dest) == model.sha()
