"""The tiny test guest as a running QEMU (TCG): its virtio disks, its HTTP port on the
host's loopback, its QMP socket; and the empty ext4 disks it boots with.

What the guest does is in init.sh; what its disks must hold afterwards is in check.py."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

from dr_common.errors import DRError
from dr_common.qmp import Qmp
from tests.peers.kvm import initramfs
from tests.peers.tools import free_port, require_tool, unavailable

LETTERS = "abcdefgh"  # init.sh mounts /dev/vda../dev/vdh


class GuestError(RuntimeError):
    pass


def require_guest() -> None:
    """What booting and checking the guest needs; a skip, or a failure under CI=true."""
    for tool in ("qemu-system-x86_64", "qemu-img", "busybox", "mkfs.ext4", "e2fsck",
                 "debugfs"):
        require_tool(tool)
    try:
        initramfs.kernel_version()
    except initramfs.BuildError as e:
        unavailable(str(e))


def make_disk(path: str | os.PathLike, size_mib: int = 64) -> Path:
    """An empty ext4 filesystem as a qcow2 image at `path`: made on a raw file, then
    converted, as mkfs.ext4 cannot write qcow2 itself."""
    path = Path(path)
    raw = path.with_suffix(".mkfs.raw")
    with open(raw, "wb") as f:
        f.truncate(size_mib << 20)
    # Inode tables and journal written now, not by ext4lazyinit inside the guest, where
    # TCG makes that slow and its writes would be mixed into the workload's.
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E",
                    "lazy_itable_init=0,lazy_journal_init=0", str(raw)],
                   check=True, capture_output=True)
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(path)],
                   check=True, capture_output=True)
    raw.unlink()
    return path


class GuestHttp:
    """What the guest serves on a loopback port: its count, its files. Also for a guest
    this test did not start (one booted by a recovery site)."""

    def __init__(self, port: int):
        self.port = port

    def get(self, path: str, timeout: float = 10.0) -> bytes:
        url = f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()

    def count(self, timeout: float = 10.0) -> int:
        """The last file number fsynced on every disk."""
        return int(self.get("count", timeout))

    def files(self, disk: str) -> list[str]:
        """Disk `disk`'s numbered files (names), as the guest sees them."""
        return self.get(f"cgi-bin/ls?{disk}").decode().split()


class Guest:
    """One boot of the guest over `disks` (qcow2 paths: /dev/vda, /dev/vdb, ...). The
    disks are QMP block nodes disk0, disk1, ... on virtio-blk devices vd0, vd1, ...

    `write`, `rate` and `kib` are the workload's dr.write, dr.rate (files a second) and
    dr.kib (file size). The console goes to `workdir`/console.log. The QMP socket is in a
    short temporary directory unless `qmp_socket` is given, as a unix socket's path is
    limited to 107 bytes and pytest's tmp_path can be longer."""

    def __init__(self, disks: Sequence[str | os.PathLike], workdir: str | os.PathLike, *,
                 port: int | None = None, qmp_socket: str | os.PathLike | None = None,
                 write: bool = True, rate: int = 10, kib: int = 64,
                 memory_mib: int = 256) -> None:
        if not 1 <= len(disks) <= len(LETTERS):
            raise ValueError(f"a guest has 1 to {len(LETTERS)} disks, not {len(disks)}")
        self.disks = [Path(d) for d in disks]
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self._socket_dir = None if qmp_socket else tempfile.mkdtemp(prefix="kvm-qmp-")
        self.qmp_socket = str(qmp_socket or Path(self._socket_dir) / "qmp.sock")
        self.console = self.workdir / "console.log"
        self.kib = kib
        self.options = f"dr.write={int(write)} dr.rate={rate} dr.kib={kib}"
        self.memory_mib = memory_mib
        self._process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        append = f"console=ttyS0 panic=-1 edd=off quiet {self.options}"
        cmd = ["qemu-system-x86_64", "-accel", "tcg", "-m", str(self.memory_mib),
               "-nodefaults", "-display", "none", "-no-reboot",  # a panic ends QEMU
               "-kernel", str(initramfs.kernel()), "-initrd", str(initramfs.initrd()),
               "-append", append, "-serial", f"file:{self.console}",
               "-qmp", f"unix:{self.qmp_socket},server=on,wait=off",
               "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.port}-:80",
               "-device", "virtio-net-pci,netdev=n0"]
        for i, disk in enumerate(self.disks):
            cmd += ["-blockdev", f"driver=file,filename={disk},node-name=file{i}",
                    "-blockdev", f"driver=qcow2,file=file{i},node-name=disk{i}",
                    "-device", f"virtio-blk-pci,drive=disk{i},id=vd{i}"]
        return cmd

    def start(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "qemu.stderr", "wb") as stderr:
            self._process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=stderr)
        return self

    def __enter__(self) -> Self:
        self.start()
        try:
            return self.wait_ready()
        except BaseException:  # __exit__ is not called when __enter__ raises
            self.kill()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        return self._process.pid

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait_ready(self, timeout: float = 60.0) -> Self:
        """Returns when the guest answers GET /count (init.sh starts httpd once its disks
        are mounted); raises GuestError with the console's tail if QEMU exits first or
        `timeout` passes."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                raise GuestError(f"QEMU exited ({self._process.returncode}) before the "
                                 f"guest was ready\n{self.log_tail()}")
            try:
                # A short timeout: before the guest's eth0 is up, QEMU's user network
                # accepts the connection and nothing ever answers it.
                self.count(timeout=1.0)
                return self
            except (OSError, http.client.HTTPException, ValueError):
                pass  # not up yet: QEMU's user network refuses or resets until httpd is
            if time.monotonic() > deadline:
                raise GuestError(f"the guest did not answer on port {self.port} within "
                                 f"{timeout} s\n{self.log_tail()}")
            time.sleep(0.2)

    def get(self, path: str, timeout: float = 10.0) -> bytes:
        return GuestHttp(self.port).get(path, timeout)

    def count(self, timeout: float = 10.0) -> int:
        return GuestHttp(self.port).count(timeout)

    def files(self, disk: str) -> list[str]:
        return GuestHttp(self.port).files(disk)

    def qmp(self, command: str, **arguments: Any) -> Any:
        # A connection per command: QEMU's QMP server talks to one client at a time, and
        # the live source under test uses the same socket.
        with Qmp(self.qmp_socket) as q:
            return q.execute(command, **arguments)

    def kill(self) -> None:
        """SIGKILL: the disks are left as a power cut would leave them."""
        if self.running():
            os.kill(self.pid, signal.SIGKILL)
        self._wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        """QMP quit (QEMU flushes its images and exits), or SIGKILL if that fails."""
        if self.running():
            try:
                self.qmp("quit")
            except (OSError, DRError):
                pass  # QEMU may close the socket before it answers: its exit says
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._wait(10)

    def _wait(self, timeout: float) -> None:
        if self._process is not None:
            self._process.wait(timeout)
        if self._socket_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    def log_tail(self, lines: int = 30) -> str:
        text = self.console.read_text(errors="replace") if self.console.exists() else ""
        stderr = self.workdir / "qemu.stderr"
        text += stderr.read_text(errors="replace") if stderr.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
