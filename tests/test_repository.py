"""Repository format v1 against a real directory: encodings, dedup, manifests, verify,
recovery points. (What every object store must do, FsStore included, is the contract
suite's: tests/contracts/test_object_stores.py.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

import blake3
import pytest

from dr_common.errors import AlreadyExists, CorruptData, ObjectNotFound, RepositoryError
from dr_common.repository import (
    SEGMENT_CHUNKS,
    ZERO_ID,
    BadChunk,
    DiskManifest,
    FsStore,
    ManifestWriter,
    PointDisk,
    RecoveryPointRecord,
    Repository,
    chunk_id,
    chunk_key,
    compute_root,
    decode_chunk,
    decode_segment,
    encode_chunk,
    encode_segment,
    manifest_key,
    point_key,
    segment_key,
)
from tests.helpers.repository import CHUNK, chunk_data

CHUNKS = 2500  # three segments: 1024 + 1024 + 452
SIZE = CHUNK * CHUNKS - 100  # a short last chunk


async def store_disk(repo: Repository, compression: str = "zstd") -> list[bytes]:
    """Store the test disk's chunks the way a cycle does; return its chunk ids."""
    ids = []
    for i in range(CHUNKS):
        data = chunk_data(i, SIZE)
        if not any(data):
            ids.append(ZERO_ID)
            continue
        cid = repo.chunk_id(data)
        await repo.put_chunk(cid, encode_chunk(data, compression))
        ids.append(cid)
    return ids


async def write_manifest(repo: Repository, ids: list[bytes], disk: str = "disk-a") -> DiskManifest:
    w = ManifestWriter(repo, disk, SIZE, CHUNK)
    for start in range(0, len(ids), 300):
        await w.add(ids[start : start + 300])
    return await w.finish()


@pytest.fixture
def fs_store(tmp_path: Path) -> FsStore:
    """An FsStore in tmp_path/repo, without fsyncs (as the engine opens it)."""
    return FsStore(tmp_path / "repo", durable=False)


@pytest.fixture
async def repo(fs_store: FsStore) -> Repository:
    """A new repository on `fs_store`."""
    return await Repository.open_or_create(fs_store)


def object_path(store: FsStore, key: str) -> Path:
    return store.root / key


def flip_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


# -- encodings -----------------------------------------------------------------------


def test_chunk_encoding_raw_and_zstd_round_trip() -> None:
    compressible = b"abcd" * 4096
    raw = encode_chunk(compressible, "none")
    assert raw[0] == 0 and raw[1:] == compressible
    packed = encode_chunk(compressible, "zstd")
    assert packed[0] == 1 and len(packed) < len(compressible)
    assert decode_chunk(raw) == decode_chunk(packed) == compressible
    # zstd that does not shrink the data is dropped.
    noise = os.urandom(4096)
    assert encode_chunk(noise, "zstd") == b"\x00" + noise
    with pytest.raises(RepositoryError):
        encode_chunk(b"x", "lz4")


@pytest.mark.parametrize("blob", [b"", b"\x07data", b"\x01not a zstd frame"])
def test_decode_chunk_rejects_bad_blobs(blob: bytes) -> None:
    with pytest.raises(CorruptData):
        decode_chunk(blob)


def test_decode_chunk_rejects_truncated_zstd() -> None:
    packed = encode_chunk(b"abcd" * 4096, "zstd")
    with pytest.raises(CorruptData):
        decode_chunk(packed[:-4])


def test_segment_encoding() -> None:
    ids = [bytes([i]) * 32 for i in range(5)]
    blob = encode_segment(2048, ids)
    assert blob[:4] == b"DRSG" and blob[4] == 1 and len(blob) == 4 + 1 + 8 + 4 + 5 * 32
    assert int.from_bytes(blob[5:13], "little") == 2048
    assert int.from_bytes(blob[13:17], "little") == 5
    assert decode_segment(blob) == (2048, ids)
    bad_version = blob[:4] + b"\x02" + blob[5:]
    for bad in (b"XRSG" + blob[4:], blob[:-1], blob + b"\0", blob[:10], bad_version):
        with pytest.raises(CorruptData):
            decode_segment(bad)


def test_root_depends_on_every_field() -> None:
    key, other_key = bytes(range(32)), bytes(32)
    segs = ["ab" * 32, "cd" * 32]
    base = compute_root(key, 10 << 20, 1 << 20, 1024, segs)
    assert len(base) == 64 and base == compute_root(key, 10 << 20, 1 << 20, 1024, segs)
    variants = [
        compute_root(other_key, 10 << 20, 1 << 20, 1024, segs),
        compute_root(key, (10 << 20) - 1, 1 << 20, 1024, segs),
        compute_root(key, 10 << 20, 1 << 19, 1024, segs),
        compute_root(key, 10 << 20, 1 << 20, 512, segs),
        compute_root(key, 10 << 20, 1 << 20, 1024, segs[::-1]),
        compute_root(key, 10 << 20, 1 << 20, 1024, segs[:1]),
    ]
    assert base not in variants and len(set(variants)) == len(variants)


def test_format_test_vectors_in_the_spec() -> None:
    """docs/FORMAT.md section 13: pins the format so it cannot drift silently."""
    key = bytes(range(32))
    hello = chunk_id(key, b"hello")
    assert hello.hex() == "23278c18c8c9fe0fbfadfb940af5f08d3fd1802bf919dd6d77ebd211a19fbe29"
    seg = encode_segment(1024, [hello, ZERO_ID])
    assert seg[:17].hex() == "4452534701" "0004000000000000" "02000000" and len(seg) == 81
    seg_id = blake3.blake3(seg, key=key).hexdigest()
    assert seg_id == "f42be5c9687b9c225441ad290b34d75daf57d1678248f05d1e145cacd3f3d75f"
    root = compute_root(key, 1024 * 4096 + 100, 4096, 1024, ["11" * 32, seg_id])
    assert root == "e15a6d1b4c798064c56df8f0f232544934226962b18ed9bcb3f7edadbe0db243"
    assert compute_root(key, 0, 1 << 20, 1024, []) == (
        "274978dd0da0d05ea36e1bfcb9037a18784ce6515a1170acf6fe78437f5fef59"
    )
    spec = (Path(__file__).parent.parent / "docs" / "FORMAT.md").read_text()
    for value in (hello.hex(), seg_id, root):
        assert value in spec


def test_object_keys() -> None:
    cid = bytes.fromhex("ab" + "01" * 31)
    assert chunk_key(cid) == "chunks/ab/ab" + "01" * 31
    assert segment_key("cd" * 32) == "segments/cd/" + "cd" * 32
    assert manifest_key("ef" * 32) == "manifests/" + "ef" * 32 + ".json"
    assert point_key("plan-1_2024.01") == "points/plan-1_2024.01.json"
    with pytest.raises(RepositoryError):
        chunk_key(b"short")
    for bad in ("AB" * 32, "ab" * 31, "zz" * 32, "../" + "a" * 61):
        with pytest.raises(RepositoryError):
            segment_key(bad)
        with pytest.raises(RepositoryError):
            manifest_key(bad)


@pytest.mark.parametrize("point_id", ["", "a/b", "../x", "a b", "p\u00e9", ".hidden", "x" * 201])
def test_point_key_rejects_bad_ids(point_id: str) -> None:
    with pytest.raises(RepositoryError):
        point_key(point_id)


# -- opening -----------------------------------------------------------------------


async def test_open_without_config_says_so(fs_store: FsStore) -> None:
    with pytest.raises(RepositoryError, match="no repository at"):
        await Repository.open(fs_store)


@pytest.mark.parametrize("change", [{"version": 2}, {"format": "restic"}])
async def test_open_refuses_other_format_or_version(fs_store: FsStore, change: dict) -> None:
    await Repository.open_or_create(fs_store)
    config = json.loads(await fs_store.get("config")) | change
    await fs_store.put("config", json.dumps(config).encode())
    with pytest.raises(RepositoryError):
        await Repository.open(fs_store)
    with pytest.raises(RepositoryError):
        await Repository.open_or_create(fs_store)


async def test_repositories_name_the_same_data_differently(tmp_path: Path) -> None:
    a = await Repository.open_or_create(FsStore(tmp_path / "a", durable=False))
    b = await Repository.open_or_create(FsStore(tmp_path / "b", durable=False))
    assert a.chunk_id(b"data") != b.chunk_id(b"data")


# -- chunks ------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["none", "zstd"])
async def test_chunk_round_trip_and_dedup(
    repo: Repository, fs_store: FsStore, compression: str
) -> None:
    data = b"0123456789abcdef" * 65536  # 1 MiB: decoded off the event loop
    cid = repo.chunk_id(data)
    assert not await repo.has_chunk(cid)
    assert await repo.put_chunk(cid, encode_chunk(data, compression)) is True
    assert await repo.has_chunk(cid)
    assert await repo.get_chunk(cid) == data
    # The same data, e.g. from another disk, dedups to the same object.
    assert repo.chunk_id(bytes(data)) == cid
    assert await repo.put_chunk(cid, encode_chunk(data, compression)) is False
    assert [k async for k in fs_store.list("chunks/")] == [chunk_key(cid)]
    stored = (fs_store.root / chunk_key(cid)).read_bytes()
    assert stored[0] == (1 if compression == "zstd" else 0)


async def test_zero_id_is_never_stored(repo: Repository, fs_store: FsStore) -> None:
    assert await repo.has_chunk(ZERO_ID)
    assert await repo.put_chunk(ZERO_ID, encode_chunk(bytes(4096), "none")) is False
    assert [k async for k in fs_store.list("chunks/")] == []
    with pytest.raises(RepositoryError):
        await repo.get_chunk(ZERO_ID)


# -- manifests ---------------------------------------------------------------------


async def test_manifest_writer_builds_a_verifiable_manifest(
    repo: Repository, fs_store: FsStore
) -> None:
    ids = await store_disk(repo)
    m = await write_manifest(repo, ids)
    assert m.chunk_count == CHUNKS and m.segment_chunks == SEGMENT_CHUNKS
    assert len(m.segments) == 3
    assert m.chunk_length(0) == CHUNK and m.chunk_length(CHUNKS - 1) == CHUNK - 100
    assert await repo.get_manifest(m.root_hash) == m
    got = []
    for s in range(3):
        got += await repo.segment_ids(m, s)
    assert got == ids
    assert [len(await repo.segment_ids(m, s)) for s in range(3)] == [1024, 1024, 452]
    # Zero chunks took no storage: one object per distinct non-zero chunk.
    stored = [k async for k in fs_store.list("chunks/")]
    assert len(stored) == len({c for c in ids if c != ZERO_ID}) == CHUNKS - len(range(3, CHUNKS, 7))
    # Each chunk reads back as the disk's data.
    for i in (0, 1023, 1024, CHUNKS - 1):
        assert await repo.get_chunk(ids[i], disk="disk-a", offset=i * CHUNK) == chunk_data(i, SIZE)


@pytest.mark.parametrize("stop", [0, 1, 1023, 1024, 1500, 2048, CHUNKS])
async def test_resume_from_checkpoint_gives_the_same_root(repo: Repository, fs_store: FsStore,
                                                          stop: int) -> None:
    ids = await store_disk(repo)
    uninterrupted = await write_manifest(repo, ids)

    first = ManifestWriter(repo, "disk-a", SIZE, CHUNK)
    for start in range(0, stop, 100):
        await first.add(ids[start : min(start + 100, stop)])
    watermark, segments, tail = first.checkpoint()
    assert watermark == stop == first.next_chunk
    assert len(segments) == stop // SEGMENT_CHUNKS and len(tail) == 32 * (stop % SEGMENT_CHUNKS)
    # A restarted node: a fresh Repository and writer from the persisted state only.
    state = json.loads(json.dumps({"segments": segments, "tail": tail.hex()}))
    reopened = await Repository.open(fs_store)
    resumed = ManifestWriter(reopened, "disk-a", SIZE, CHUNK,
                             segments=state["segments"], tail=bytes.fromhex(state["tail"]))
    assert resumed.next_chunk == stop
    await resumed.add(ids[stop:])
    m = await resumed.finish()
    assert m == uninterrupted
    assert await resumed.finish() == m  # finishing again is harmless


async def test_manifest_writer_refuses_gaps_and_overruns(repo: Repository) -> None:
    w = ManifestWriter(repo, "disk-a", SIZE, CHUNK)
    await w.add([ZERO_ID] * 10)
    with pytest.raises(RepositoryError):
        await w.finish()
    with pytest.raises(RepositoryError):
        await w.add([ZERO_ID] * (CHUNKS - 9))
    assert w.next_chunk == 10  # a refused add changes nothing
    with pytest.raises(ValueError):
        await w.add([b"short"])
    with pytest.raises(RepositoryError):
        ManifestWriter(repo, "disk-a", SIZE, CHUNK, tail=b"x" * 33)
    with pytest.raises(RepositoryError):
        ManifestWriter(repo, "disk-a", CHUNK * 10, CHUNK, tail=ZERO_ID * 11)


async def test_empty_disk_has_an_empty_manifest(repo: Repository) -> None:
    m = await ManifestWriter(repo, "empty", 0, CHUNK).finish()
    assert m.segments == () and m.chunk_count == 0
    assert await repo.get_manifest(m.root_hash) == m
    assert (await repo.verify_disk(m)).ok


def test_manifest_json_round_trip_and_validation() -> None:
    m = DiskManifest("d", 10, 4, 1024, ("ab" * 32,), "cd" * 32)
    assert DiskManifest.from_json(m.to_json()) == m
    with pytest.raises(CorruptData):
        DiskManifest.from_json(b"{not json")
    obj = json.loads(m.to_json())
    with pytest.raises(CorruptData):
        DiskManifest.from_json(json.dumps(obj | {"segments": []}).encode())  # too few
    with pytest.raises(CorruptData):
        DiskManifest.from_json(json.dumps({k: v for k, v in obj.items() if k != "size"}).encode())
    with pytest.raises(RepositoryError):
        DiskManifest.from_json(json.dumps(obj | {"version": 2}).encode())


# -- corruption and verify ---------------------------------------------------------


async def test_verify_clean_disk(repo: Repository) -> None:
    ids = await store_disk(repo)
    m = await write_manifest(repo, ids)
    progress: list[int] = []
    report = await repo.verify_disk(m, concurrency=4, on_progress=progress.append)
    assert report.ok and report.bad_chunks == () and report.disk == "disk-a"
    assert report.chunks_checked == sum(1 for c in ids if c != ZERO_ID)
    assert progress == sorted(progress) and progress[-1] == CHUNKS and len(progress) == CHUNKS


async def test_flipped_byte_is_reported_with_its_offset(repo: Repository,
                                                        fs_store: FsStore) -> None:
    ids = await store_disk(repo, compression="none")
    m = await write_manifest(repo, ids)
    index = 1500
    offset = index * CHUNK
    flip_byte(object_path(fs_store, chunk_key(ids[index])), 100)

    with pytest.raises(CorruptData) as e:
        await repo.get_chunk(ids[index], disk="disk-a", offset=offset)
    assert f"chunk at offset {offset} of disk disk-a is corrupt: hash mismatch" in str(e.value)
    assert e.value.offset == offset and e.value.disk == "disk-a"

    report = await repo.verify_disk(m)
    assert not report.ok
    assert report.bad_chunks == (BadChunk("disk-a", offset, CHUNK, "hash-mismatch"),)
    assert report.chunks_checked == sum(1 for c in ids if c != ZERO_ID)


async def test_all_bad_chunks_are_collected(repo: Repository, fs_store: FsStore) -> None:
    ids = await store_disk(repo)
    m = await write_manifest(repo, ids)
    await fs_store.delete(chunk_key(ids[5]))
    await fs_store.put(chunk_key(ids[2000]), b"\x09garbage")  # unknown header
    await fs_store.put(chunk_key(ids[CHUNKS - 1]), encode_chunk(b"other data", "none"))

    with pytest.raises(CorruptData, match="missing") as e:
        await repo.get_chunk(ids[5], disk="disk-a", offset=5 * CHUNK)
    assert e.value.reason == "missing" and e.value.offset == 5 * CHUNK

    report = await repo.verify_disk(m, concurrency=3)
    assert report.bad_chunks == (
        BadChunk("disk-a", 5 * CHUNK, CHUNK, "missing"),
        BadChunk("disk-a", 2000 * CHUNK, CHUNK, "undecodable"),
        BadChunk("disk-a", (CHUNKS - 1) * CHUNK, CHUNK - 100, "hash-mismatch"),
    )


async def test_tampered_or_missing_segment_is_detected(repo: Repository, fs_store: FsStore) -> None:
    ids = await store_disk(repo)
    m = await write_manifest(repo, ids)
    flip_byte(object_path(fs_store, segment_key(m.segments[1])), 200)
    await fs_store.delete(segment_key(m.segments[2]))

    with pytest.raises(CorruptData, match="hash mismatch"):
        await repo.get_segment(m.segments[1])
    with pytest.raises(CorruptData) as e:
        await repo.segment_ids(m, 2)
    assert e.value.reason == "missing" and e.value.offset == 2048 * CHUNK

    report = await repo.verify_disk(m)
    assert report.bad_chunks == (
        BadChunk("disk-a", 1024 * CHUNK, 1024 * CHUNK, "segment-corrupt"),
        BadChunk("disk-a", 2048 * CHUNK, SIZE - 2048 * CHUNK, "segment-missing"),
    )
    # Only segment 0's chunks could be read.
    assert report.chunks_checked == sum(1 for c in ids[:1024] if c != ZERO_ID)


async def test_tampered_manifest_is_detected(repo: Repository, fs_store: FsStore) -> None:
    ids = await store_disk(repo)
    m = await write_manifest(repo, ids)
    path = object_path(fs_store, manifest_key(m.root_hash))
    original = json.loads(path.read_bytes())

    tampered = [
        original | {"size": SIZE - 1},
        original | {"chunk_size": CHUNK * 2, "size": SIZE * 2},
        original | {"segments": [original["segments"][1], original["segments"][0],
                                 original["segments"][2]]},
    ]
    for obj in tampered:
        path.write_bytes(json.dumps(obj).encode())
        with pytest.raises(CorruptData):
            await repo.get_manifest(m.root_hash)
    path.write_bytes(b"\x00garbage")
    with pytest.raises(CorruptData):
        await repo.get_manifest(m.root_hash)

    # A hand-made manifest that does not match its root is refused before any read.
    forged = DiskManifest(m.disk, m.size, m.chunk_size, m.segment_chunks,
                          (m.segments[1], m.segments[0], m.segments[2]), m.root_hash)
    with pytest.raises(CorruptData):
        await repo.verify_disk(forged)
    with pytest.raises(RepositoryError):
        await repo.put_manifest(forged)


# -- recovery points ---------------------------------------------------------------


def point(root: str, *, cycle: str = "cycle-1") -> RecoveryPointRecord:
    return RecoveryPointRecord(
        id="plan-1.0001", plan="plan-1", cycle=cycle, create_time="2025-01-31T12:00:00Z",
        disks=(PointDisk(disk="disk-a", size=SIZE, root_hash=root, full_sync=True),),
    )


async def test_recovery_point_is_written_once(repo: Repository) -> None:
    ids = await store_disk(repo)
    rec = point("ab" * 32)
    with pytest.raises(RepositoryError, match="manifest"):
        await repo.put_recovery_point(rec)  # its manifest is not stored yet
    assert await repo.list_recovery_points() == []

    m = await write_manifest(repo, ids)
    rec = point(m.root_hash)
    assert await repo.put_recovery_point(rec) is True
    assert await repo.put_recovery_point(rec) is False  # an idempotent retry
    with pytest.raises(AlreadyExists):
        await repo.put_recovery_point(point(m.root_hash, cycle="cycle-2"))
    assert await repo.get_recovery_point(rec.id) == rec
    assert await repo.list_recovery_points() == [rec.id]
    with pytest.raises(ObjectNotFound):
        await repo.get_recovery_point("plan-1.0002")


async def test_recovery_point_size_must_match_manifest(repo: Repository) -> None:
    m = await write_manifest(repo, await store_disk(repo))
    rec = RecoveryPointRecord(
        id="p2", plan="plan-1", cycle="c", create_time="2025-01-31T12:00:00+00:00",
        disks=(PointDisk(disk="disk-a", size=SIZE + 1, root_hash=m.root_hash, full_sync=False),),
    )
    with pytest.raises(RepositoryError, match="size"):
        await repo.put_recovery_point(rec)
    assert await repo.list_recovery_points() == []


def test_recovery_point_record_validation() -> None:
    rec = point("ab" * 32)
    assert RecoveryPointRecord.from_json(rec.to_json()) == rec
    with pytest.raises(ValueError):
        RecoveryPointRecord(id="p", plan="x", cycle="c", create_time="2025-01-31T12:00:00+02:00",
                            disks=())
    with pytest.raises(ValueError):
        RecoveryPointRecord(id="p", plan="x", cycle="c", create_time="yesterday", disks=())
    with pytest.raises(RepositoryError):
        RecoveryPointRecord(id="a/b", plan="x", cycle="c", create_time="2025-01-31T12:00:00Z",
                            disks=())
