"""Disk images for tests: sparse files with random data where asked, holes elsewhere."""

from __future__ import annotations

import os
import random
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
