"""Shared fixtures: a running cluster of real daemons, and disk images with holes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tools.localcluster import Cluster

MiB = 1 << 20


@pytest.fixture
def cluster(tmp_path: Path):
    with Cluster(tmp_path) as c:
        yield c


def write_at(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def make_disk(path: Path, size: int, data_extents: list[tuple[int, int]], seed: int = 1) -> None:
    """A sparse image of `size` bytes with random data in `data_extents` (offset, length)."""
    import random
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
    for off, length in data_extents:
        for pos in range(off, off + length, MiB):  # randbytes is limited to < 256 MiB
            write_at(path, pos, rnd.randbytes(min(MiB, off + length - pos)))
