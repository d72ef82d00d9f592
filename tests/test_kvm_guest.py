"""The tiny kvm test guest (tests/peers/kvm) really works: it boots over two ext4 qcow2
disks, writes its fsynced files while it runs and serves them, and a clean stop or a
SIGKILL leaves disks that check_point accepts, which is what the live kvm source's and
the recovery site's tests rely on."""

from __future__ import annotations

import pytest

from tests.peers.kvm.check import check_point, expected
from tests.peers.kvm.guest import Guest, make_disk, require_guest
from tools.localcluster import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _tools():
    require_guest()


@pytest.fixture
def disks(tmp_path):
    return [make_disk(tmp_path / f"{letter}.qcow2") for letter in "ab"]


def _grows(guest: Guest, beyond: int) -> int:
    return wait_for(lambda: (lambda n: n if n > beyond else 0)(guest.count()), timeout=30,
                    interval=0.2, what=f"the guest's count beyond {beyond}")


def test_writes_serves_stops_and_boots_again(disks, tmp_path):
    with Guest(disks, tmp_path / "boot1") as guest:
        first = guest.count()
        seen = _grows(guest, max(first, 3))
        assert guest.get(f"a/{seen:06d}") == expected("a", seen)
        assert guest.get(f"b/000001") == expected("b", 1)
        names = guest.files("b")
        assert names[:seen] == [f"{n:06d}" for n in range(1, seen + 1)]
        nodes = {b["qdev"]: b["inserted"]["node-name"] for b in guest.qmp("query-block")}
        assert nodes == {"/machine/peripheral/vd0/virtio-backend": "disk0",
                         "/machine/peripheral/vd1/virtio-backend": "disk1"}
    points = {letter: check_point(disk, letter) for letter, disk in zip("ab", disks)}
    assert all(p.count >= seen for p in points.values()), points

    with Guest(disks, tmp_path / "boot2", write=False) as guest:
        # Not writing: the count is what was complete on both disks, and stays.
        assert guest.count() == min(p.count for p in points.values())
        for letter, point in points.items():
            assert guest.files(letter)[:point.count] == [
                f"{n:06d}" for n in range(1, point.count + 1)]
            assert guest.get(f"{letter}/{point.count:06d}") == expected(letter, point.count)
    assert {letter: check_point(disk, letter) for letter, disk in zip("ab", disks)} == points


def test_killed_guest_leaves_consistent_disks(disks, tmp_path):
    # Large files at full speed: SIGKILL most likely lands in the middle of one.
    guest = Guest(disks, tmp_path / "boot1", rate=1000, kib=256)
    with guest:
        seen = _grows(guest, 5)
        guest.kill()
    points = [check_point(disk, letter, kib=256) for letter, disk in zip("ab", disks)]
    assert all(p.count >= seen for p in points), points

    # The next boot goes on after the last complete file, rewriting a torn one.
    with Guest(disks, tmp_path / "boot2", rate=1000, kib=256) as guest:
        assert guest.count() == min(p.count for p in points)
        again = _grows(guest, guest.count() + 2)
        guest.kill()
    points = [check_point(disk, letter, kib=256) for letter, disk in zip("ab", disks)]
    assert all(p.count >= again for p in points), points
