"""A running QEMU with qcow2 disks and a QMP socket, for live-source tests that need no
guest: the VM is started paused (no firmware runs), and writes reach its disks through
HMP `qemu-io`, exactly as a guest's would (through the block layer, its bitmaps and any
backup job's copy-before-write). The booting guest is tests/peers/kvm."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from dr_common.qmp import Qmp
from tools.localcluster import wait_for


class PausedVm:
    def __init__(self, qmp_socket: Path, disks: list[Path]):
        self.socket, self.disks = qmp_socket, disks
        qmp_socket.unlink(missing_ok=True)  # a killed QEMU leaves its socket behind
        args = ["qemu-system-x86_64", "-S", "-display", "none", "-nodefaults", "-m", "32",
                "-qmp", f"unix:{qmp_socket},server=on,wait=off"]
        for i, image in enumerate(disks):
            args += ["-blockdev", f"driver=file,filename={image},node-name=file{i}",
                     "-blockdev", f"driver=qcow2,file=file{i},node-name=disk{i}",
                     "-device", f"virtio-blk-pci,drive=disk{i},id=vd{i}"]
        self.log = open(qmp_socket.with_suffix(".log"), "w+")
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.process.poll() is not None or qmp_socket.exists(),
                 timeout=30, what="QEMU's QMP socket")
        if self.process.poll() is not None:
            raise AssertionError(f"QEMU exited: {self.console()}")

    def console(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-2000:]

    def qmp(self, command: str, **args):
        with Qmp(str(self.socket)) as q:
            return q.execute(command, **args)

    def io(self, disk: int, *commands: str) -> None:
        """qemu-io commands on disk `disk`, as the guest would write."""
        for c in commands:
            out = self.qmp("human-monitor-command", **{
                "command-line": f'qemu-io -d /machine/peripheral/vd{disk}/virtio-backend "{c}"'})
            assert "error" not in out.lower(), f"qemu-io {c}: {out}"

    def ours(self) -> dict[str, list[str]]:
        """What a cycle may have left in QEMU: exports, jobs, hdr- nodes, temporary
        bitmaps."""
        nodes = self.qmp("query-named-block-nodes", flat=True)
        return {
            "exports": [e["id"] for e in self.qmp("query-block-exports")],
            "jobs": [j["device"] for j in self.qmp("query-block-jobs")],
            "nodes": [n["node-name"] for n in nodes if n["node-name"].startswith("hdr-")],
            "temporary-bitmaps": [b.get("name", "") for n in nodes
                                  for b in n.get("dirty-bitmaps") or []
                                  if not b.get("persistent") and b.get("name")]}

    def bitmaps(self, disk: int) -> dict[str, dict]:
        for n in self.qmp("query-named-block-nodes", flat=True):
            if n["node-name"] == f"disk{disk}":
                return {b["name"]: b for b in n.get("dirty-bitmaps") or [] if b.get("name")}
        return {}

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """A clean exit: QEMU stores persistent bitmaps in the images."""
        if self.process.poll() is None:
            try:
                self.qmp("quit")
            except Exception:
                pass
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()

    def __enter__(self) -> "PausedVm":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
