"""The libvirt flavour of the live kvm source against a real libvirtd: the tiny guest
(tests/peers/kvm) as a TCG domain writing fsynced files to its ext4 disk while cycles
take points through virDomainBackupBegin with checkpoints; every point, restored from
what the source read, is a clean filesystem holding a prefix of the guest's files;
incrementals read only the extents libvirt's frozen bitmap marks dirty; nothing of a
cycle (backup job, scratch files, NBD socket) is left when it is dropped.

The suite starts its own libvirtd, in session mode as user nobody with private XDG
directories under one temporary directory (no system service, no shared state); the
test connects to its socket as `qemu+unix:///session?socket=...`."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from dr_common.sources import kvm_libvirt
from dr_common.sources.kvm_live import LiveDisk
from tests.peers.kvm import initramfs
from tests.peers.kvm.check import check_point
from tests.peers.kvm.guest import make_disk, require_guest
from tests.peers.tools import require_qemu, require_tool, unavailable

pytestmark = pytest.mark.e2e
KIB = 64
USER = "nobody"
PREFIX = "hdr-p1-"


def require_libvirt() -> None:
    """What a test with a real libvirtd and the tiny guest needs (also test_kvm_stop)."""
    require_qemu()
    require_guest()
    require_tool("libvirtd")
    try:
        import libvirt  # noqa: F401
    except ImportError:
        unavailable("python3-libvirt is not importable: run tools/install-system-deps.sh")
    if os.geteuid() != 0:
        unavailable("the libvirt test starts libvirtd as user nobody: run it as root")


@pytest.fixture(autouse=True)
def _tools():
    require_libvirt()


class Libvirtd:
    """A session-mode libvirtd of our own (as `nobody`), in `root`."""

    def __init__(self, root: Path):
        self.root = root
        self.run = root / "run"
        self.uri = f"qemu+unix:///session?socket={self.run}/libvirt/libvirt-sock"
        pw = pwd.getpwnam(USER)
        for d in (root, self.run):
            d.mkdir(exist_ok=True)
            os.chown(d, pw.pw_uid, pw.pw_gid)
        env = {"PATH": os.environ["PATH"], "HOME": str(root), "XDG_RUNTIME_DIR": str(self.run),
               "XDG_CONFIG_HOME": str(root / "cfg"), "XDG_CACHE_HOME": str(root / "cache")}
        self.log = open(root / "libvirtd.log", "wb")
        self.process = subprocess.Popen(
            ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
             "libvirtd"], env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=root)
        deadline = time.monotonic() + 30
        import libvirt
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # raised, not printed
        while True:
            try:
                libvirt.open(self.uri).close()
                return
            except libvirt.libvirtError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"libvirtd did not start: {(root / 'libvirtd.log').read_text()}")
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # libvirtd spawned its own virtlogd (session mode): end it by its pid file.
        pidfile = self.run / "libvirt" / "virtlogd.pid"
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text().strip()), 15)
            except (ValueError, ProcessLookupError):
                pass
        self.log.close()


@pytest.fixture
def libvirtd():
    # Not pytest's tmp_path: its parents are root's only, and libvirtd runs as nobody.
    root = Path(tempfile.mkdtemp(prefix="dr-libvirt-"))
    os.chmod(root, 0o755)
    d = Libvirtd(root)
    yield d
    d.stop()
    shutil.rmtree(root, ignore_errors=True)


def _domain_xml(name: str, disk: Path, console: Path) -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{initramfs.kernel()}</kernel><initrd>{initramfs.initrd()}</initrd>
    <cmdline>console=ttyS0 panic=-1 edd=off quiet dr.write=1 dr.rate=10 dr.kib={KIB}</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='{disk}'/><target dev='vda' bus='virtio'/></disk>
    <serial type='file'><source path='{console}'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>"""


def _boot(d: Libvirtd):
    import libvirt
    vms = d.root / "vms"
    vms.mkdir()
    disk = make_disk(vms / "vm1-a.qcow2")
    pw = pwd.getpwnam(USER)
    for p in (vms, disk):
        os.chown(p, pw.pw_uid, pw.pw_gid)
    conn = libvirt.open(d.uri)
    dom = conn.createXML(_domain_xml("vm1", disk, d.root / "console.log"), 0)
    deadline = time.monotonic() + 60
    while "dr-guest: ready" not in _console(d):
        assert time.monotonic() < deadline, _console(d)[-2000:]
        time.sleep(0.2)
    return conn, dom


def _console(d: Libvirtd) -> str:
    p = d.root / "console.log"
    return p.read_text(errors="replace") if p.exists() else ""


def _read(ref, into: Path, base: Path | None) -> int:
    """Applies the point `ref` onto a copy of `base` (the previous restored point), as a
    target would; returns the bytes read."""
    if base:
        shutil.copyfile(base, into)
    with open(into, "r+b" if base else "wb") as out, LiveDisk(ref, connections=2) as disk:
        out.truncate(disk.size)
        for e in disk.extents():
            if e.clean:
                continue
            out.seek(e.start)
            if e.zero:
                out.write(bytes(e.length))
                continue
            buf = bytearray(e.length)
            disk.readinto(e.start, memoryview(buf))
            out.write(buf)
        return disk.bytes_read


def _leftovers(dom, sdir: Path) -> list[str]:
    import libvirt
    left = [f.name for f in sdir.iterdir()] if sdir.is_dir() else []
    try:
        dom.backupGetXMLDesc(0)
        left.append("backup job")
    except libvirt.libvirtError:
        pass
    return left


def _cycle(d: Libvirtd, dom, n: int, previous: dict) -> dict:
    return kvm_libvirt.take(d.uri, dom.UUIDString(), [("a", "vda")], plan_prefix=PREFIX,
                            checkpoint=f"{PREFIX}{n}", previous=previous)


def test_three_cycles_of_a_writing_domain_restore_each_point(libvirtd, tmp_path):
    conn, dom = _boot(libvirtd)
    sdir = kvm_libvirt.state_dir(dom)
    try:
        previous, base, counts, reads = {}, None, [], []
        for n in range(1, 4):
            time.sleep(3)  # the guest writes ~30 files between points
            refs = _cycle(libvirtd, dom, n, previous)
            ref = refs["a"]
            assert ref.export == f"{PREFIX}{n}-vda" and ref.bitmap == f"{PREFIX}{n}"
            restored = tmp_path / f"rp{n}.raw"
            reads.append((ref.full_sync_reason, _read(ref, restored, base)))
            assert kvm_libvirt.drop(libvirtd.uri, dom.UUIDString())
            assert _leftovers(dom, sdir) == []
            counts.append(check_point(restored, "a", KIB).count)  # e2fsck, exact prefix
            previous, base = refs, restored
        # The previous point's checkpoint and this one's stay; older ones are deleted.
        checkpoints = sorted(c.getName() for c in dom.listAllCheckpoints(0))
        assert checkpoints == [f"{PREFIX}2", f"{PREFIX}3"]
    finally:
        dom.destroy()
        conn.close()
    assert [r for r, _ in reads] == ["first-cycle", "", ""]
    assert counts[0] > 0 and counts[0] < counts[1] < counts[2], counts
    # An incremental reads the files written since (and their metadata), not the disk.
    for i in (1, 2):
        new = (counts[i] - counts[i - 1]) * KIB * 1024
        assert new <= reads[i][1] < reads[0][1], (counts, reads)
    print({"counts": counts, "bytes_read": [b for _, b in reads]})


def test_a_missing_checkpoint_is_a_labelled_full_sync_and_a_stale_job_is_ended(libvirtd,
                                                                                tmp_path):
    conn, dom = _boot(libvirtd)
    sdir = kvm_libvirt.state_dir(dom)
    try:
        first = _cycle(libvirtd, dom, 1, {})
        # A node died holding cycle 1's job: the next take ends it first.
        dom.checkpointLookupByName(f"{PREFIX}1").delete(0)  # tracking lost
        time.sleep(1)
        second = _cycle(libvirtd, dom, 2, first)
        assert second["a"].full_sync_reason == "bitmap-missing"
        assert second["a"].view == ""
        _read(second["a"], tmp_path / "rp2.raw", None)
        kvm_libvirt.drop(libvirtd.uri, dom.UUIDString())
        assert _leftovers(dom, sdir) == []
        check_point(tmp_path / "rp2.raw", "a", KIB)
    finally:
        dom.destroy()
        conn.close()


def test_a_kvm_site_naming_a_libvirt_uri_lists_its_domains_and_cycles_through_them(
        libvirtd, tmp_path):
    """The kvm source's own entry points (what a node runs): inventory of a site whose
    directory holds `libvirt.uri`, the snapshot task, reading, the drop task."""
    import asyncio

    from dr_common.proto.dr.v1 import nodes_pb2
    from dr_common.sources import kvm
    from dr_common.sources.base import SourceEnv

    conn, dom = _boot(libvirtd)
    site = libvirtd.root / "vms"
    (site / kvm_libvirt.URI_FILE).write_text(libvirtd.uri + "\n")
    try:
        workloads = kvm.discover(site)
        assert [(w.id, [(d.id, d.locator) for d in w.disks]) for w in workloads] == [
            ("vm1", [("vda", f"libvirt:{libvirtd.uri}#{dom.UUIDString()}#vda")])]
        env = SourceEnv(roots=(str(site),))
        disks = [nodes_pb2.SnapshotDisk(disk="a", workload="vm1",
                                        locator=workloads[0].disks[0].locator)]
        keep, base, reasons = [], None, []
        for n in (1, 2):
            time.sleep(2)
            spec = nodes_pb2.SnapshotSpec(plan="plans/p1", cycle=f"plans/p1/cycles/{n}",
                                          disks=disks)
            spec.source.kvm.SetInParent()
            spec.keep_snapshot_ids.extend(keep)
            snaps = asyncio.run(kvm.take_snapshots(spec, env))
            disk = asyncio.run(kvm.open_source(
                nodes_pb2.KvmSource(path=disks[0].locator, snapshot=snaps[0].snapshot_id),
                None, env))
            reasons.append(disk.full_sync_reason)
            ref = disk.ref
            disk.close()
            restored = tmp_path / f"rp{n}.raw"
            _read(ref, restored, base)
            drop = nodes_pb2.DropSnapshotsSpec(plan="plans/p1", cycle=spec.cycle, disks=disks)
            drop.source.kvm.SetInParent()
            asyncio.run(kvm.drop_snapshots(drop, env))
            assert _leftovers(dom, kvm_libvirt.state_dir(dom)) == []
            check_point(restored, "a", KIB)
            keep, base = [s.snapshot_id for s in snaps], restored
        assert reasons == ["first-cycle", ""]
    finally:
        dom.destroy()
        conn.close()


def test_a_disk_resized_between_points_is_a_labelled_full_sync(libvirtd, tmp_path):
    import libvirt
    conn, dom = _boot(libvirtd)
    try:
        first = _cycle(libvirtd, dom, 1, {})
        kvm_libvirt.drop(libvirtd.uri, dom.UUIDString())
        dom.blockResize("vda", first["a"].size + (16 << 20),
                        libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
        second = _cycle(libvirtd, dom, 2, first)
        assert (second["a"].full_sync_reason, second["a"].size) == (
            "disk-resized", first["a"].size + (16 << 20))
        _read(second["a"], tmp_path / "rp2.raw", None)
        kvm_libvirt.drop(libvirtd.uri, dom.UUIDString())
        check_point(tmp_path / "rp2.raw", "a", KIB)
    finally:
        dom.destroy()
        conn.close()
