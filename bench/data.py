"""Test images, built fast and reproducibly.

Data is the BLAKE3 extendable output of a seed (a stream that reads as random, so it is
incompressible and never deduplicates by accident, at several GB/s). Byte `i` of the
stream for seed `s` is always the same, so a region can be rewritten to its original
content: that is how P2 undoes its scattered writes between runs. Images are written in
4 MiB blocks; sparse images are made with truncate, then data written at their extents.
A JSON sidecar (`<image>.json`) records how an image was made, so later runs reuse it,
and marks it dirty while it is being modified.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import blake3

from bench import KiB, MiB

BLOCK = 4 * MiB


def stream(seed: str, offset: int, length: int) -> bytes:
    """`length` bytes of seed's stream from `offset`."""
    return blake3.blake3(seed.encode()).digest(length=length, seek=offset)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _is_ready(path: Path, recipe: dict) -> bool:
    try:
        meta = json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return False
    return meta == {**recipe, "state": "clean"} and path.is_file() and \
        path.stat().st_size == recipe["size"]


def _mark(path: Path, recipe: dict, state: str) -> None:
    _sidecar(path).write_text(json.dumps({**recipe, "state": state}, sort_keys=True))


def _write_extent(fd: int, seed: str, offset: int, length: int) -> None:
    end = offset + length
    while offset < end:
        n = min(BLOCK, end - offset)
        data = stream(seed, offset, n)
        view = memoryview(data)
        pos = offset
        while view:
            w = os.pwrite(fd, view, pos)
            view, pos = view[w:], pos + w
        offset += n


def make_image(path: Path, size: int, seed: str,
               extents: list[tuple[int, int]] | None = None) -> Path:
    """A raw image of `size` bytes. `extents` None: all data (dense); otherwise a sparse
    file holding seed's data only at those (offset, length) extents, holes elsewhere.
    Reuses an existing image made by the same recipe."""
    recipe = {"size": size, "seed": seed, "extents": extents}
    if _is_ready(path, recipe):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    _mark(path, recipe, "building")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.ftruncate(fd, size)
        for off, length in extents if extents is not None else [(0, size)]:
            _write_extent(fd, seed, off, length)
        os.fsync(fd)
    finally:
        os.close(fd)
    _mark(path, recipe, "clean")
    return path


def sparse_extents(size: int, data_bytes: int, extent: int = 4 * MiB) -> list[tuple[int, int]]:
    """`data_bytes` of data as `extent`-sized extents spread evenly over `size` bytes."""
    count = max(1, data_bytes // extent)
    stride = size // count
    return [(i * stride, min(extent, data_bytes - i * extent)) for i in range(count)]


WRITE_SIZE = 64 * KiB


def scattered_offsets(size: int, fraction: float, seed: int,
                      write_size: int = WRITE_SIZE) -> list[int]:
    """Offsets of `fraction` x size worth of `write_size` writes: a seeded random set of
    distinct write_size-aligned offsets, uniform over the image, sorted."""
    slots = size // write_size
    count = max(1, round(size * fraction / write_size))
    return sorted(o * write_size for o in random.Random(seed).sample(range(slots), count))


def apply_writes(path: Path, offsets: list[int], seed: str,
                 write_size: int = WRITE_SIZE) -> int:
    """Overwrites `write_size` bytes at each offset with seed's stream at that offset
    (new, random data). Returns the bytes written. Marks the image dirty until
    `restore_writes` puts the original data back."""
    meta = json.loads(_sidecar(path).read_text())
    meta["state"] = "dirty"
    _sidecar(path).write_text(json.dumps(meta, sort_keys=True))
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        for off in offsets:
            os.pwrite(fd, stream(seed, off, write_size), off)
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(offsets) * write_size


def restore_writes(path: Path, offsets: list[int], write_size: int = WRITE_SIZE) -> None:
    """Rewrites the original data at `offsets` (the image's own seed) and marks it clean."""
    meta = json.loads(_sidecar(path).read_text())
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        for off in offsets:
            os.pwrite(fd, stream(meta["seed"], off, write_size), off)
        os.fsync(fd)
    finally:
        os.close(fd)
    meta["state"] = "clean"
    _sidecar(path).write_text(json.dumps(meta, sort_keys=True))


def file_hash(path: Path) -> str:
    """BLAKE3 of a file's contents (multi-threaded; holes read as zeros)."""
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    buf = bytearray(16 * MiB)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def allocated_bytes(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def tree_bytes(path: Path) -> int:
    """Bytes allocated under a directory (like `du -s --block-size=1`)."""
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
        total += sum(os.lstat(os.path.join(root, d)).st_blocks * 512 for d in dirs)
    return total


def tree_file_bytes(path: Path) -> int:
    """Sum of file sizes under a directory (apparent size: what was stored)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total
