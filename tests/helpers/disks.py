"""Disk images for tests: sparse files with random data where asked, holes elsewhere."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import random
import subprocess
from pathlib import Path

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30


def write_at(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def make_disk(path: Path, size: int, data_extents: list[tuple[int, int]], seed: int = 1) -> None:
    """A sparse image of `size` bytes with random data in `data_extents` (offset, length)."""
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
    for off, length in data_extents:
        for pos in range(off, off + length, MiB):  # randbytes is limited to < 256 MiB
            write_at(path, pos, rnd.randbytes(min(MiB, off + length - pos)))


def block_content(blocks: dict[int, bytes], block_size: int, offset: int, length: int) -> bytes:
    """Bytes [offset, offset + length) of a disk that holds `blocks` ({index: the block's
    `block_size` bytes}) and zeros elsewhere: what reading that range must return."""
    out = bytearray(length)
    for index in range(offset // block_size, -(-(offset + length) // block_size)):
        data = blocks.get(index)
        if data is not None:
            lo = max(offset, index * block_size)
            hi = min(offset + length, (index + 1) * block_size)
            out[lo - offset:hi - offset] = data[lo - index * block_size:hi - index * block_size]
    return bytes(out)


_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def punch_hole(path: Path, offset: int, length: int) -> None:
    """Deallocates a range (what a discard or TRIM does): it reads as zeros and is a hole
    to SEEK_DATA. Python has no punch-hole call, so fallocate(2) it is."""
    fd = os.open(path, os.O_WRONLY)
    try:
        if _libc.fallocate(fd, _FALLOC_FL_KEEP_SIZE | _FALLOC_FL_PUNCH_HOLE, offset, length):
            err = ctypes.get_errno()
            raise OSError(err, f"fallocate(PUNCH_HOLE) on {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def qemu_io(image: Path, *commands: str) -> None:
    """Runs qemu-io `commands` (`write -P 0x11 0 4M`, `discard ...`) on a qcow2 image."""
    args = ["qemu-io", "-f", "qcow2"]
    for c in commands:
        args += ["-c", c]
    done = subprocess.run([*args, str(image)], capture_output=True, text=True)
    assert done.returncode == 0 and "error" not in done.stdout.lower(), done.stdout + done.stderr
