"""Blocks of the AWS peer: 512 KiB blocks, the sparse block maps it keeps on moto's EC2
`Volume` and `Snapshot` objects, and a volume's content as the /_peer/volumes/ endpoints
write, discard, read and hash it."""

from __future__ import annotations

import base64
import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any

from tests.peers.aws.wire import PeerError

BLOCK_SIZE = 524288  # bytes; the only block size the EBS direct APIs use
GiB = 1 << 30
ZERO_BLOCK = bytes(BLOCK_SIZE)
ZERO_RUN = bytes(16 * BLOCK_SIZE)  # hashing runs of absent blocks without allocating GiBs

# One lock for every change to block maps: the server is threaded, and a volume write is
# a read-modify-write of whole blocks.
LOCK = threading.RLock()


@dataclass(frozen=True, eq=False)
class Block:
    """One 512 KiB block. Identity is the block's version: a block written again is a
    new object, which is how ListChangedBlocks tells written blocks from inherited ones."""

    data: bytes
    digest: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", hashlib.sha256(self.data).digest())

    @property
    def checksum(self) -> str:
        return base64.b64encode(self.digest).decode()


def blocks_of(obj: Any) -> dict[int, Block]:
    """The block map of a moto Volume or Snapshot (created empty on first use)."""
    return obj.__dict__.setdefault("peer_blocks", {})


def blocks_put(snapshot: Any) -> dict[int, Block]:
    """Blocks written into a snapshot by PutSnapshotBlock (not the inherited ones)."""
    return snapshot.__dict__.setdefault("peer_put", {})


def block_count(size_gib: int) -> int:
    return size_gib * GiB // BLOCK_SIZE


# -- volume content (the /_peer/volumes/ endpoints)


def write_volume(volume: Any, offset: int, data: bytes) -> None:
    check_range(volume, offset, len(data))
    blocks = blocks_of(volume)
    pos = 0
    while pos < len(data):
        index, within = divmod(offset + pos, BLOCK_SIZE)
        n = min(BLOCK_SIZE - within, len(data) - pos)
        old = blocks[index].data if index in blocks else ZERO_BLOCK
        blocks[index] = Block(old[:within] + data[pos:pos + n] + old[within + n:])
        pos += n


def discard_volume(volume: Any, offset: int, length: int) -> None:
    """Whole blocks in the range become unallocated; partial ones are zeroed."""
    check_range(volume, offset, length)
    blocks = blocks_of(volume)
    end = offset + length
    for index in range(offset // BLOCK_SIZE, -(-end // BLOCK_SIZE)):
        lo, hi = max(offset, index * BLOCK_SIZE), min(end, (index + 1) * BLOCK_SIZE)
        if hi - lo == BLOCK_SIZE:
            blocks.pop(index, None)
        elif index in blocks:
            write_volume(volume, lo, bytes(hi - lo))


def read_volume(volume: Any, offset: int, length: int) -> bytes:
    check_range(volume, offset, length)
    blocks = blocks_of(volume)
    out = bytearray()
    while len(out) < length:
        index, within = divmod(offset + len(out), BLOCK_SIZE)
        n = min(BLOCK_SIZE - within, length - len(out))
        data = blocks[index].data if index in blocks else ZERO_BLOCK
        out += data[within:within + n]
    return bytes(out)


def volume_sha256(volume: Any) -> str:
    blocks = dict(blocks_of(volume))
    h = hashlib.sha256()
    zeros = 0  # absent blocks are hashed in runs from one shared zero buffer

    def flush() -> None:
        nonlocal zeros
        while zeros:
            n = min(zeros, len(ZERO_RUN) // BLOCK_SIZE)
            h.update(memoryview(ZERO_RUN)[:n * BLOCK_SIZE])
            zeros -= n

    for index in range(block_count(volume.size)):
        if index in blocks:
            flush()
            h.update(blocks[index].data)
        else:
            zeros += 1
    flush()
    return h.hexdigest()


def check_range(volume: Any, offset: int, length: int) -> None:
    if offset < 0 or length < 0 or offset + length > volume.size * GiB:
        raise PeerError(400, f"range {offset}+{length} is outside the {volume.size} GiB volume")

