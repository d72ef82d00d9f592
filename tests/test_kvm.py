"""The kvm site kind against real qemu-img, qemu-io and qemu-nbd: dirty bitmaps drive
incremental cycles that read only what changed; every point restores to the image as
it was."""

from __future__ import annotations

import os
import random
import signal
import subprocess

import pytest

from dr_common.sources.kvm import bitmap_name, sentinel_name, untrusted_reason
from dr_common.sources.qemu import bitmaps, image_info
from tests.helpers.disks import MiB, qemu_io
from tests.peers.tools import require_qemu
from tools.localcluster import Cluster, sha256, wait_for

pytestmark = pytest.mark.e2e
KiB = 1 << 10
CHUNK = 64 * KiB  # the bitmap granularity: a dirty granule is exactly one chunk


@pytest.fixture(autouse=True)
def _tools():
    require_qemu()


def raw_sha(image, tmp_path) -> str:
    """sha256 of the image's guest-visible content (what a restore must equal)."""
    out = tmp_path / "snapshot.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(out)], check=True)
    digest = sha256(out)
    out.unlink()
    return digest


def _plan(c: Cluster, *extra: str) -> str:
    c.drctl("site", "add", "hv", "--kind", "kvm", "--path", str(c.src))
    c.drctl("site", "add", "dst", "--kind", "file", "--path", str(c.repo))
    c.drctl("plan", "create", "p1", "--source", "hv", "--target", "dst", "--workload",
            "hv/vm1", "--rpo", "1h", "--chunk-size", str(CHUNK), *extra)
    return "p1"


def _points(c: Cluster, n: int, timeout: float = 120) -> list[dict]:
    return wait_for(lambda: (lambda p: p if len(p) >= n else None)(c.points("p1")),
                    timeout=timeout, what=f"{n} recovery points")


def _stats(c: Cluster, i: int) -> dict:
    return {k: int(v) for k, v in c.cycles("p1")[i]["stats"].items()}


def _restore_sha(c: Cluster, point: str, name: str, fmt: str = "raw") -> str:
    dest = c.out / name
    c.drctl("restore", point, "--to", str(dest), "--format", fmt)
    if fmt == "qcow2":
        return raw_sha(dest, c.root)
    return sha256(dest)


def test_five_cycles_with_bitmaps_restore_every_point(cluster: Cluster, tmp_path):
    c = cluster
    image = c.src / "vm1.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    qemu_io(image, "write -P 0x11 0 4M", "write -P 0x22 20M 2M", "write -P 0x33 60M 1M")
    _plan(c)
    expected = [raw_sha(image, tmp_path)]
    _points(c, 1)
    rnd = random.Random(7)
    for cycle in range(2, 6):
        granules = sorted(rnd.sample(range(64 * MiB // CHUNK), 12))
        cmds = [f"write -P {rnd.randrange(1, 255)} {g * CHUNK} {CHUNK}" for g in granules[:8]]
        cmds += [f"write -z {granules[8] * CHUNK} {CHUNK}",      # zero a written range
                 f"discard {granules[9] * CHUNK} {CHUNK}",       # and discard one
                 f"write -P 0x44 {granules[10] * CHUNK} {2 * CHUNK}"]
        qemu_io(image, *cmds)
        expected.append(raw_sha(image, tmp_path))
        c.drctl("plan", "run", "p1", "--wait")
    points = _points(c, 5)
    assert [p["disks"][0].get("full_sync_reason", "") for p in points] == \
        ["first-cycle", "", "", "", ""]
    for i, point in enumerate(points):
        fmt = "qcow2" if i % 2 else "raw"
        assert _restore_sha(c, point["name"], f"rp{i}.{fmt}", fmt) == expected[i], \
            f"recovery point {i + 1} differs from the image as it was"
    # Only our newest bitmap, the one it replaces and the plan's sentinel remain.
    ours = sorted(n for n in bitmaps(image_info(image)) if n.startswith("hdr-"))
    assert ours == [bitmap_name("p1", "4"), bitmap_name("p1", "5"),
                    sentinel_name(bitmap_name("p1", "5"))]


def test_incremental_reads_only_dirty_extents(cluster: Cluster):
    c = cluster
    image = c.src / "vm1.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "256M"],
                   check=True)
    qemu_io(image, "write -P 0x5a 0 128M")
    _plan(c)
    _points(c, 1)
    assert _stats(c, 0)["bytes_read"] == 128 * MiB   # full sync: allocated data only
    # 10 data granules, one zeroed granule, one discarded: 10 granules to read.
    offsets = [i * 7 * MiB for i in range(10)]
    qemu_io(image, *[f"write -P 0x77 {o} {CHUNK}" for o in offsets],
            f"write -z {100 * MiB} {CHUNK}", f"discard {110 * MiB} {CHUNK}")
    c.drctl("plan", "run", "p1", "--wait")
    s = _stats(c, 1)
    assert s["bytes_read"] == 10 * CHUNK, s
    assert s["chunks_sent"] == 10
    # Clean granules, data or holes, are never read; the zeroed and the discarded one
    # changed to zeros: recorded as zero without reading.
    assert s["chunks_unchanged"] == 256 * MiB // CHUNK - 12
    assert s["chunks_zero"] == 2


def test_removed_bitmap_means_a_labelled_full_sync(cluster: Cluster, tmp_path):
    c = cluster
    image = c.src / "vm1.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "32M"], check=True)
    qemu_io(image, "write -P 0x61 0 8M")
    _plan(c)
    _points(c, 1)
    subprocess.run(["qemu-img", "bitmap", "--remove", str(image), bitmap_name("p1", "1")],
                   check=True)
    qemu_io(image, "write -P 0x62 4M 1M")
    c.drctl("plan", "run", "p1", "--wait")
    point = _points(c, 2)[1]
    assert point["disks"][0]["full_sync"] and \
        point["disks"][0]["full_sync_reason"] == "bitmap-missing"
    _, table, _ = c.drctl("point", "list", "p1")
    assert "bitmap-missing (1)" in table
    assert _stats(c, 1)["bytes_read"] == 8 * MiB     # every allocated extent, read again
    assert _restore_sha(c, point["name"], "rp2.raw") == raw_sha(image, tmp_path)


def test_qemu_nbd_dying_mid_cycle_is_a_clear_error_and_the_next_cycle_works(
        single_try_cluster: Cluster, tmp_path):
    c = single_try_cluster
    image = c.src / "vm1.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1G"], check=True)
    qemu_io(image, "write -P 0x71 0 768M")
    _plan(c)

    def qemu_nbd_pid():
        found = subprocess.run(["pgrep", "-f", f"qemu-nbd.*{image}"], capture_output=True,
                               text=True).stdout.split()
        return int(found[0]) if found else None
    os.kill(wait_for(qemu_nbd_pid, interval=0.005, what="qemu-nbd to export the image"),
            signal.SIGKILL)
    cycle = wait_for(lambda: (lambda cy: cy if cy["state"] == "failed" else None)(
        c.cycles("p1")[0]), timeout=120, what="the cycle to fail")
    assert cycle["error"]["reason"] == "source-unavailable", cycle["error"]
    assert "qemu-nbd" in cycle["error"]["message"], cycle["error"]
    assert c.points("p1") == []
    c.drctl("plan", "run", "p1", "--wait")
    point = _points(c, 1)[0]
    assert _restore_sha(c, point["name"], "rp.raw") == raw_sha(image, tmp_path)


def test_bitmap_left_in_use_by_a_crashed_qemu_means_a_labelled_full_sync(
        cluster: Cluster, tmp_path):
    c = cluster
    image = c.src / "vm1.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "32M"], check=True)
    qemu_io(image, "write -P 0x61 0 8M")
    _plan(c)
    _points(c, 1)
    # A QEMU that dies with the image open leaves its bitmaps flagged in-use: they may
    # have missed writes, so they must not be trusted.
    crashed = subprocess.Popen(["qemu-io", "-f", "qcow2", "-c", "write -P 0x62 1M 1M",
                                "-c", "sleep 600000", str(image)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # (read with --force-share while QEMU rewrites the header: it may miss a moment)
        wait_for(lambda: "in-use" in bitmaps(image_info(image)).get(
            bitmap_name("p1", "1"), {}).get("flags", []), what="QEMU to open the image")
    finally:
        crashed.kill()
        crashed.wait()
    c.drctl("plan", "run", "p1", "--wait")
    point = _points(c, 2)[1]
    assert point["disks"][0]["full_sync_reason"] == "bitmap-inconsistent"
    assert _restore_sha(c, point["name"], "rp2.raw") == raw_sha(image, tmp_path)


def _protect_then_change(c: Cluster, image, size: str, *change: list[str],
                         writes: tuple[str, ...] = ()) -> dict:
    """A first point of a fresh image (written in full), then `change` (qemu-img
    commands) and `writes` (qemu-io commands), and a second cycle: the second point."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), size], check=True)
    qemu_io(image, f"write -P 0x61 0 {size}")
    _plan(c)
    _points(c, 1)
    for args in change:
        subprocess.run(["qemu-img", *args], check=True)
    if writes:
        qemu_io(image, *writes)
    c.drctl("plan", "run", "p1", "--wait")
    return _points(c, 2)[1]


def test_shrink_and_grow_back_between_cycles_means_a_labelled_full_sync(
        cluster: Cluster, tmp_path):
    c = cluster
    image = c.src / "vm1.qcow2"
    # The same virtual size again, but the truncated half now reads zeros; every bitmap
    # was truncated with it and does not say so.
    point = _protect_then_change(c, image, "64M",
                                 ["resize", "-q", "--shrink", str(image), "32M"],
                                 ["resize", "-q", str(image), "64M"])
    assert _restore_sha(c, point["name"], "rp2.raw") == raw_sha(image, tmp_path)
    assert point["disks"][0]["full_sync_reason"] == "disk-resized"
    # The sentinel made anew: the next cycle is incremental again.
    qemu_io(image, "write -P 0x62 40M 1M")
    c.drctl("plan", "run", "p1", "--wait")
    point = _points(c, 3)[2]
    assert point["disks"][0].get("full_sync_reason", "") == ""
    assert _stats(c, 2)["bytes_read"] == 1 * MiB
    assert _restore_sha(c, point["name"], "rp3.raw") == raw_sha(image, tmp_path)


def test_disabled_bitmap_means_a_labelled_full_sync(cluster: Cluster, tmp_path):
    c = cluster
    image = c.src / "vm1.qcow2"
    # A disabled bitmap records no writes: the one below must not be trusted.
    point = _protect_then_change(
        c, image, "32M", ["bitmap", "--disable", str(image), bitmap_name("p1", "1")],
        writes=("write -P 0x62 4M 1M",))
    assert _restore_sha(c, point["name"], "rp2.raw") == raw_sha(image, tmp_path)
    assert point["disks"][0]["full_sync_reason"] == "bitmap-disabled"


def test_grown_disk_means_a_labelled_full_sync_of_its_new_size(cluster: Cluster, tmp_path):
    c = cluster
    image = c.src / "vm1.qcow2"
    point = _protect_then_change(c, image, "32M", ["resize", "-q", str(image), "64M"])
    assert point["disks"][0]["full_sync_reason"] == "disk-resized"
    assert int(point["disks"][0]["size_bytes"]) == 64 * MiB
    assert _restore_sha(c, point["name"], "rp2.raw") == raw_sha(image, tmp_path)
    _, table, _ = c.drctl("point", "show", point["name"])
    assert "64.0 MiB" in table, table
    _, table, _ = c.drctl("workload", "list", "--site", "sites/hv")
    assert "64.0 MiB" in table, table


@pytest.mark.parametrize("flags,previous_size,reason", [
    (["auto"], 64 * MiB, ""),
    (["auto"], 0, ""),                        # no previous size known: not a resize
    (["auto", "in-use"], 64 * MiB, "bitmap-inconsistent"),
    (["auto", "inconsistent"], 64 * MiB, "bitmap-inconsistent"),
    ([], 64 * MiB, "bitmap-disabled"),
    (["auto"], 32 * MiB, "disk-resized"),
    (None, 64 * MiB, "bitmap-missing"),
])
def test_untrusted_reason(flags, previous_size, reason):
    info = None if flags is None else {"name": "b", "granularity": CHUNK, "flags": flags}
    assert untrusted_reason(info, previous_size=previous_size, size=64 * MiB) == reason
