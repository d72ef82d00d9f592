"""What the guest's disks must hold, and checking a copy of one without the guest.

The guest (init.sh) writes files 000001, 000002, ... to each disk, each fsynced before
the next; a file's content is `expected(disk, n, kib)`. So any crash-consistent point of
a disk, after the journal replay a mount would do, is a clean ext4 filesystem holding
exactly 000001..k, and at most one more file, k+1, that the crash cut short."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

NAME = re.compile(r"^\d{6}$")
KIB = 64  # the guest's default file size (dr.kib)


def expected(disk: str, n: int, kib: int = KIB) -> bytes:
    """Disk `disk`'s file n as the guest writes it: `yes "disk a file 000017" | head -c`."""
    line = f"disk {disk} file {n:06d}\n".encode()
    size = kib * 1024
    return (line * (size // len(line) + 1))[:size]


@dataclass(frozen=True)
class PointCheck:
    count: int  # files 000001..count are complete
    torn: str | None  # the name of file count+1 when a crash left it incomplete


def check_point(image: str | os.PathLike, disk: str, kib: int = KIB,
                others: dict[str, bytes] | None = None) -> PointCheck:
    """Checks one disk image (raw or qcow2) as a recovered point of the guest's disk
    `disk`; raises AssertionError saying what is wrong. The image itself is not changed:
    the journal is replayed on a raw copy, as mounting it after a crash would.
    `others`: files the disk held before the guest wrote to it, and their bytes."""
    with tempfile.TemporaryDirectory(prefix="kvm-check-") as tmp:
        raw = Path(tmp) / "disk.raw"
        subprocess.run(["qemu-img", "convert", "-O", "raw", os.fspath(image), str(raw)],
                       check=True, capture_output=True)
        # e2fsck's exit 1 is "errors corrected": here, the journal replayed.
        _e2fsck(raw, image, ("-E", "journal_only", "-y"), ok=(0, 1))
        _e2fsck(raw, image, ("-f", "-n"), ok=(0,))
        files = Path(tmp) / "files"
        files.mkdir()
        subprocess.run(["debugfs", "-R", f"rdump / {files}", str(raw)], check=True,
                       capture_output=True)
        for name, data in (others or {}).items():
            path = files / name
            if not path.is_file() or path.read_bytes() != data:
                raise AssertionError(f"{image}: {name} is missing or differs")
            path.unlink()
        return _files(files, image, disk, kib)


def _e2fsck(raw: Path, image, options: tuple[str, ...], ok: tuple[int, ...]) -> None:
    result = subprocess.run(["e2fsck", *options, str(raw)], capture_output=True, text=True,
                            check=False)
    if result.returncode not in ok:
        raise AssertionError(f"{image}: e2fsck {' '.join(options)} exited "
                             f"{result.returncode}:\n{result.stdout}{result.stderr}")


def _files(files: Path, image, disk: str, kib: int) -> PointCheck:
    names = sorted(p.name for p in files.iterdir() if p.name != "lost+found")
    strange = [name for name in names if not NAME.match(name)]
    if strange:
        raise AssertionError(f"{image}: files the guest does not write: {strange}")
    count, torn = 0, None
    for name in names:
        n = int(name)
        if torn is not None or n != count + 1:
            raise AssertionError(f"{image}: file {name} after {count:06d}"
                                 + (f" and the torn {torn}" if torn else ""))
        if (files / name).read_bytes() == expected(disk, n, kib):
            count = n
        else:
            torn = name  # allowed once, as the last file
    return PointCheck(count, torn)
