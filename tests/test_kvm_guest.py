"""The tiny kvm test guest (tests/peers/kvm) really works: it boots over two ext4 qcow2
disks, writes its fsynced files while it runs and serves them, and a clean stop or a
SIGKILL leaves disks that check_point accepts, which is what the live kvm source's and
the recovery site's tests rely on."""

from __future__ import annotations

import random
import subprocess
import time

import pytest

from tests.peers.kvm.check import PointCheck, check_point, expected
from tests.peers.kvm.guest import Guest, make_disk, require_guest
from tools.localcluster import wait_for


@pytest.fixture(autouse=True)
def _tools():
    require_guest()


@pytest.fixture
def disks(tmp_path):
    return [make_disk(tmp_path / f"{letter}.qcow2") for letter in "ab"]


def _grows(guest: Guest, beyond: int) -> int:
    """Waits until the guest's count passes `beyond`; returns it."""
    def passed() -> int:
        n = guest.count()
        return n if n > beyond else 0
    return wait_for(passed, timeout=30, interval=0.2, what=f"the guest's count beyond {beyond}")


def put_files(image, files: dict[str, bytes], tmp_path) -> None:
    """Writes `files` (name: bytes) into the qcow2 ext4 image's root, with no guest."""
    raw = tmp_path / "put.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True)
    commands = []
    for name, data in files.items():
        (tmp_path / f"put-{name}").write_bytes(data)
        commands.append(f"write {tmp_path}/put-{name} {name}")
    subprocess.run(["debugfs", "-w", "-f", "-", str(raw)], input="\n".join(commands),
                   text=True, check=True, capture_output=True)
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(image)], check=True)
    raw.unlink()


def _complete(disk: str, *numbers: int) -> dict[str, bytes]:
    return {f"{n:06d}": expected(disk, n) for n in numbers}


@pytest.mark.parametrize("files, wrong", [
    ({**_complete("a", 1, 2), "000004": expected("a", 4)}, "file 000004 after 000002"),
    ({**_complete("a", 1), "000002": b"", "000003": expected("a", 3)},
     "file 000003 after 000001 and the torn 000002"),
    ({**_complete("a", 1), "000002": expected("b", 2), "000003": b""}, "file 000003"),
    ({**_complete("a", 1), "notes": b"x"}, "files the guest does not write: ['notes']"),
])
def test_check_point_names_what_is_wrong(tmp_path, files, wrong):
    disk = make_disk(tmp_path / "a.qcow2", 16)
    put_files(disk, files, tmp_path)
    with pytest.raises(AssertionError, match=wrong.replace("[", r"\[").replace("]", r"\]")):
        check_point(disk, "a")


def test_check_point_accepts_one_torn_last_file(tmp_path):
    disk = make_disk(tmp_path / "a.qcow2", 16)
    assert check_point(disk, "a") == PointCheck(0, None)
    put_files(disk, {**_complete("a", 1, 2), "000003": expected("a", 3)[:1000]}, tmp_path)
    assert check_point(disk, "a") == PointCheck(2, "000003")


@pytest.mark.e2e
def test_boot_rewrites_a_torn_file(tmp_path):
    """A crash's torn file is rewritten by the next boot, not left behind a newer one."""
    disks = [make_disk(tmp_path / f"{letter}.qcow2", 16) for letter in "ab"]
    put_files(disks[0], {**_complete("a", 1, 2), "000003": b"torn"}, tmp_path)
    put_files(disks[1], _complete("b", 1, 2, 3), tmp_path)
    with Guest(disks, tmp_path / "boot") as guest:
        _grows(guest, 4)
    assert check_point(disks[0], "a").count >= 4
    assert check_point(disks[1], "b").count >= 4


@pytest.mark.e2e
def test_writes_serves_stops_and_boots_again(disks, tmp_path):
    with Guest(disks, tmp_path / "boot1") as guest:
        first = guest.count()
        seen = _grows(guest, max(first, 3))
        assert guest.get(f"a/{seen:06d}") == expected("a", seen)
        assert guest.get("b/000001") == expected("b", 1)
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


@pytest.mark.e2e
def test_killed_guest_leaves_consistent_disks(disks, tmp_path):
    # Large files at full speed: SIGKILL most likely lands in the middle of one.
    guest = Guest(disks, tmp_path / "boot1", rate=1000, kib=256)
    with guest:
        seen = _grows(guest, 5)
        time.sleep(random.uniform(0, 1))  # not a wait: a kill at a point no test chose
        guest.kill()
    points = [check_point(disk, letter, kib=256) for letter, disk in zip("ab", disks)]
    print("after SIGKILL:", points)
    assert all(p.count >= seen for p in points), points

    # The next boot goes on after the last complete file, rewriting a torn one.
    with Guest(disks, tmp_path / "boot2", rate=1000, kib=256) as guest:
        # (its count at boot is in the console: by now it may have written more)
        assert f"count={min(p.count for p in points)}\n" in guest.console.read_text()
        again = _grows(guest, guest.count() + 2)
        guest.kill()
    points = [check_point(disk, letter, kib=256) for letter, disk in zip("ab", disks)]
    assert all(p.count >= again for p in points), points
