"""Repository content for tests, written the way a cycle writes it."""

from __future__ import annotations

from dr_common.repository import (ZERO_ID, ManifestWriter, PointDisk, RecoveryPointRecord,
                                  Repository, chunk_key, encode_chunk, manifest_key,
                                  segment_key)

CHUNK = 4096  # small chunks: many of them, and segments of several levels, in little data


def chunk_data(index: int, size: int) -> bytes:
    """Unique, compressible content for chunk `index` of a disk of `size` bytes (the last
    chunk may be short); every 7th chunk is zeros."""
    length = min(CHUNK, size - index * CHUNK)
    if index % 7 == 3:
        return bytes(length)
    return ((index + 1).to_bytes(8, "little") * (CHUNK // 8))[:length]


def numbered_chunk(n: int) -> bytes:
    """Chunk number n: distinct content for each n; n == 0 is a zero chunk."""
    return bytes(CHUNK) if n == 0 else (n.to_bytes(4, "little") * (CHUNK // 4))


async def write_point(repo: Repository, point_id: str, disks: dict[str, list[int]]) -> set[str]:
    """Writes a point as a cycle does (chunks, segments, manifest, point) whose disks are
    made of `numbered_chunk`s, and returns the keys of every object it references,
    computed from what was written."""
    keys: set[str] = set()
    entries = []
    for disk, chunks in disks.items():
        ids = []
        for n in chunks:
            if n == 0:
                ids.append(ZERO_ID)
                continue
            cid = repo.chunk_id(numbered_chunk(n))
            await repo.put_chunk(cid, encode_chunk(numbered_chunk(n), "none"))
            ids.append(cid)
            keys.add(chunk_key(cid))
        w = ManifestWriter(repo, disk, len(chunks) * CHUNK, CHUNK)
        await w.add(ids)
        m = await w.finish()
        keys.add(manifest_key(m.root_hash))
        keys.update(segment_key(s) for s in m.segments)
        entries.append(PointDisk(disk=disk, size=m.size, root_hash=m.root_hash, full_sync=True))
    await repo.put_recovery_point(RecoveryPointRecord(
        id=point_id, plan="p", cycle="c", create_time="2025-01-01T00:00:00Z",
        disks=tuple(entries)))
    return keys
