"""What tests of recovery to a kvm site share: disks holding ext4 filesystems with known
files, the tiny guest's kernel command line for a recovered VM, and looking at its QEMU
and its HTTP server from the host."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from pathlib import Path

MiB = 1 << 20
# The guest's kernel command line: serial console, no EDD probe (slow under TCG), and
# dr.write=0: the recovered VM only serves its files, so what it serves is the point's.
APPEND = "console=ttyS0 panic=-1 edd=off quiet dr.write=0"


def ext4_image(path: Path, files: dict[str, bytes], size: int = 16 * MiB) -> None:
    """A raw disk image holding an ext4 filesystem with `files` at its root (mkfs.ext4 -d
    populates it from a directory)."""
    content = path.parent / f"{path.stem}-files"
    content.mkdir()
    for name, data in files.items():
        (content / name).write_bytes(data)
    with open(path, "wb") as f:
        f.truncate(size)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E",
                    "lazy_itable_init=0,lazy_journal_init=0", "-d", str(content), str(path)],
                   check=True, capture_output=True)
    shutil.rmtree(content)


def http_get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read()


def pid_of(pidfile: Path) -> int:
    return int(pidfile.read_text().strip())


def alive(pid: int) -> bool:
    """A zombie is not alive: a daemonized QEMU's parent is whatever reaps orphans here."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False
