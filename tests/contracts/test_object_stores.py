"""The ObjectStore contract (dr_common.repository.store), and the repository format over
it: what every object store under a repository must do, run against each store on its
real peer: `fs` (FsStore on a directory), `s3` (S3Store on the AWS peer's S3) and
`azblob` (AzblobStore on a container of Azurite).

Each store is built by its backend factory below; a backend also looks behind the store
(reads and plants objects in its namespace directly) so the suite can check where objects
really went and that foreign ones are ignored. A new store joins with one backend class,
its factory and one line in BACKENDS.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Protocol

import pytest

from dr_common.errors import ObjectNotFound, RepositoryError
from dr_common.repository import (SEGMENT_CHUNKS, ZERO_ID, FsStore, ManifestWriter, ObjectStore,
                                  Repository, chunk_key, encode_chunk, gc)
from dr_common.targets.azblob import AzblobStore
from dr_common.targets.s3 import S3Store
from tests.helpers.repository import CHUNK, chunk_data, write_point

# Where the suite's store lives in its backend's namespace (a directory, a bucket): a
# prefix with a parent, so that escaping it and its neighbours can be checked.
ROOT = "repo/one"


class Backend(Protocol):
    """A store's backend: opens stores on it, and reads and writes it directly."""

    where: str  # what the store's error messages name: its directory, its bucket
    # Names the backend may hold that the store at ROOT must never list: another tool's
    # objects, a neighbour prefix, a crashed write's temporary object.
    foreign: tuple[str, ...]
    # Why the peer cannot hold or order non-ASCII keys as the real service does, if it
    # cannot (repository keys are ASCII; the contract's listing test says so as xfail).
    ascii_only: str

    def open(self, root: str = ROOT, *, small_pages: bool = False) -> ObjectStore:
        """A store at `root`; `small_pages`: it lists in pages of two keys, if it pages."""

    def raw_get(self, name: str) -> bytes:
        """The object `name` of the namespace, read without the store."""

    def plant(self, name: str, data: bytes) -> None:
        """Writes object `name` of the namespace without the store."""

    def names(self) -> set[str]:
        """Every object in the namespace, temporary ones included."""


# -- one backend per store ---------------------------------------------------------------


class FsBackend:
    """Directories under one base directory; names are paths relative to it."""

    foreign = ("repo/one/points/.tmp-deadbeef", "repo/one-other/a")
    ascii_only = ""

    def __init__(self, base: Path):
        self.base, self.where = base, str(base)

    def open(self, root: str = ROOT, *, small_pages: bool = False) -> FsStore:
        return FsStore(self.base / root)  # lists a directory at a time: no pages

    def raw_get(self, name: str) -> bytes:
        return (self.base / name).read_bytes()

    def plant(self, name: str, data: bytes) -> None:
        (self.base / name).parent.mkdir(parents=True, exist_ok=True)
        (self.base / name).write_bytes(data)

    def names(self) -> set[str]:
        if not self.base.exists():
            return set()
        return {p.relative_to(self.base).as_posix() for p in self.base.rglob("*")
                if p.is_file()}


class S3Backend:
    """One bucket of the AWS peer; names are its keys."""

    foreign = ("repo/one/points/.tmp-deadbeef", "repo/one-other/a", "repo/one/a//bad")
    ascii_only = ""

    def __init__(self, boto: Any, aws_settings: Any, bucket: str):
        self.s3, self.aws, self.bucket, self.where = boto("s3"), aws_settings, bucket, bucket

    def open(self, root: str = ROOT, *, small_pages: bool = False) -> S3Store:
        return S3Store(self.bucket, root, aws=self.aws, **({"list_page": 2} if small_pages else {}))

    def raw_get(self, name: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=name)["Body"].read()

    def plant(self, name: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=name, Body=data)

    def names(self) -> set[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return {o["Key"] for page in pages for o in page.get("Contents", ())}


class AzblobBackend:
    """One container of Azurite's development account; names are its blob names."""

    foreign = ("repo/one/points/.tmp-deadbeef", "repo/one-other/a", "repo/one/a//bad")
    ascii_only = ("Azurite lists names in UTF-16 order (Azure: UTF-8 binary) and answers "
                  "HTTP 500 to a listing with U+FFFF in a name")

    def __init__(self, azurite: Any, container: str):
        from azure.storage.blob import BlobServiceClient

        from tests.helpers.azblob import azurite_settings
        from tests.peers.azure.azurite import connection_string
        self.azure, self.container = azurite_settings(azurite.endpoint), container
        self.blobs = BlobServiceClient.from_connection_string(
            connection_string(azurite.endpoint)).get_container_client(container)
        self.where = f"container {container}"

    def open(self, root: str = ROOT, *, small_pages: bool = False) -> AzblobStore:
        return AzblobStore(self.container, root, azure=self.azure,
                           **({"list_page": 2} if small_pages else {}))

    def raw_get(self, name: str) -> bytes:
        return self.blobs.download_blob(name).readall()

    def plant(self, name: str, data: bytes) -> None:
        self.blobs.upload_blob(name, data, overwrite=True)

    def names(self) -> set[str]:
        return set(self.blobs.list_blob_names())


def fs_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return FsBackend(tmp_path / "backend")


def s3_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return S3Backend(*(request.getfixturevalue(f) for f in ("boto", "aws_settings", "bucket")))


def azblob_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return AzblobBackend(*(request.getfixturevalue(f) for f in ("azurite", "azure_container")))


BACKENDS = {"fs": fs_backend, "s3": s3_backend, "azblob": azblob_backend}


@pytest.fixture(params=list(BACKENDS))
def store_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """The backend of each kind of object store in turn."""
    return BACKENDS[request.param](request, tmp_path)


@pytest.fixture
async def object_store(store_backend: Backend) -> Any:
    """The store at ROOT of each backend in turn, closed after the test."""
    store = store_backend.open()
    try:
        yield store
    finally:
        await store.close()


async def close_all(stores: list[Any]) -> None:
    await asyncio.gather(*(s.close() for s in stores))


# -- objects -----------------------------------------------------------------------------


async def test_put_get_exists_delete(object_store: Any, store_backend: Backend) -> None:
    store = object_store
    assert await store.put("a/b/c", b"hello") is True
    assert await store.get("a/b/c") == b"hello"
    assert await store.exists("a/b/c")
    assert not await store.exists("a/b")  # a prefix (a directory) is not an object
    # Plain puts overwrite, and take any bytes-like object.
    assert await store.put("a/b/c", memoryview(b"xxworldxx")[2:7]) is True
    assert await store.get("a/b/c") == b"world"
    assert await store.put("a/b/c", bytearray(b"again")) is True
    assert await store.get("a/b/c") == b"again"
    # Keys live under the store's root.
    assert store_backend.raw_get(f"{ROOT}/a/b/c") == b"again"
    await store.delete("a/b/c")
    await store.delete("a/b/c")  # missing is fine
    assert not await store.exists("a/b/c")
    with pytest.raises(ObjectNotFound) as e:
        await store.get("a/b/c")
    assert "'a/b/c'" in e.value.message and store_backend.where in e.value.message
    assert isinstance(e.value, RepositoryError)
    with pytest.raises(ObjectNotFound):
        await store.get("a/b")


async def test_conditional_put_never_overwrites(object_store: Any,
                                                store_backend: Backend) -> None:
    assert await object_store.put("config", b"first", if_absent=True) is True
    assert await object_store.put("config", b"second", if_absent=True) is False
    assert await object_store.get("config") == b"first"
    assert store_backend.names() == {f"{ROOT}/config"}  # no temporary object left behind


async def test_concurrent_conditional_puts_have_one_winner(object_store: Any) -> None:
    results = await asyncio.gather(
        *(object_store.put("x/key", f"writer {i}".encode(), if_absent=True) for i in range(16)))
    assert results.count(True) == 1
    assert await object_store.get("x/key") == f"writer {results.index(True)}".encode()


async def test_list_is_sorted_paged_and_stays_under_the_root(store_backend: Backend) -> None:
    keys = ["a.b", "a/x", "a-c", "a0", "points/p1.json", "points/p2.json", "chunks/ab/1",
            "chunks/ac/2", "chunks/b0/3", "a-b", "a/y/z", "b", "A", "z/\u00e9", "z/\uffff",
            "z/\U0001f600"]
    if store_backend.ascii_only:
        keys = [k for k in keys if k.isascii()]
    for name in store_backend.foreign:
        store_backend.plant(name, b"partial")
    store = store_backend.open(small_pages=True)
    try:
        await asyncio.gather(*(store.put(k, k.encode()) for k in keys))
        listed = [k async for k in store.list("")]
        # Keys list in UTF-8 byte order, which is Python's string (code point) order:
        # "a.b" < "a/x" because '.' < '/', and U+FFFF < U+1F600 (not so in UTF-16).
        assert listed == sorted(keys)
        assert listed.index("a.b") < listed.index("a/x")
        if not store_backend.ascii_only:
            assert listed.index("z/\uffff") < listed.index("z/\U0001f600")
        assert [k async for k in store.list("a/")] == ["a/x", "a/y/z"]
        assert [k async for k in store.list("a")] == ["a-b", "a-c", "a.b", "a/x", "a/y/z", "a0"]
        assert [k async for k in store.list("points/")] == ["points/p1.json", "points/p2.json"]
        assert [k async for k in store.list("chunks/a")] == ["chunks/ab/1", "chunks/ac/2"]
        assert [k async for k in store.list("nothing/")] == []
        with pytest.raises(RepositoryError):
            [k async for k in store.list("/a")]
        with pytest.raises(RepositoryError):
            [k async for k in store.list("../a")]
    finally:
        await store.close()
    if store_backend.ascii_only:
        pytest.xfail(f"non-ASCII keys not checked: {store_backend.ascii_only}")


@pytest.mark.parametrize("key", ["", "/abs", "../x", "a/../b", "a//b", "a/", "./a", ".tmp-x",
                                 "a/.tmp-x", "a\\b"])
async def test_rejects_keys_that_escape_or_collide(object_store: Any, store_backend: Backend,
                                                   key: str) -> None:
    with pytest.raises(RepositoryError):
        await object_store.put(key, b"x")
    with pytest.raises(RepositoryError):
        await object_store.get(key)
    with pytest.raises(RepositoryError):
        await object_store.exists(key)
    with pytest.raises(RepositoryError):
        await object_store.delete(key)
    assert store_backend.names() == set()  # nothing written, under the root or beside it


async def test_touch_and_delete_if_older(object_store: Any) -> None:
    """Garbage collection's primitives: the modification time moves on touch, the bytes
    stay, and delete_if_older spares what is younger than the cutoff."""
    store = object_store
    await store.put("chunks/ab/x", b"data")
    [info] = [i async for i in store.list_info("chunks/")]
    assert info.key == "chunks/ab/x" and info.size == 4
    assert await store.delete_if_older("chunks/ab/x", info.mtime) is None  # not older
    assert await store.touch("chunks/ab/x")
    [touched] = [i async for i in store.list_info("chunks/")]
    assert touched.mtime >= info.mtime and await store.get("chunks/ab/x") == b"data"
    assert await store.delete_if_older("chunks/ab/x", touched.mtime + 1) == 4
    assert not await store.exists("chunks/ab/x")
    assert not await store.touch("chunks/ab/x")  # gone: the writer must put it again


# -- the repository format over the store ------------------------------------------------


async def test_concurrent_open_or_create_agree_on_the_key(store_backend: Backend) -> None:
    stores = [store_backend.open("shared") for _ in range(8)]  # as if 8 processes
    try:
        repos = await asyncio.gather(*(Repository.open_or_create(s) for s in stores))
        assert len({r.id for r in repos}) == 1
        assert len({r.chunk_id(b"same data") for r in repos}) == 1
        reopened = await Repository.open(stores[0])
        assert reopened.id == repos[0].id
        assert reopened.chunk_id(b"same data") == repos[0].chunk_id(b"same data")
        config = json.loads(await stores[0].get("config"))
        assert config["format"] == "hybrid-dr-repository" and config["version"] == 1
        assert len(bytes.fromhex(config["chunk_key"])) == 32
    finally:
        await close_all(stores)


# Two segments (1024 + 76 chunks): big enough for the manifest's two levels, small
# enough for moto's few hundred requests per second.
DISK_CHUNKS = SEGMENT_CHUNKS + 76
DISK_SIZE = DISK_CHUNKS * CHUNK - 100  # a short last chunk


async def store_chunks(repo: Repository, datas: list[bytes]) -> list[bytes]:
    """Stores the disk's chunks, 16 at a time as a cycle would; returns the ids."""
    ids = [repo.chunk_id(d) if any(d) else ZERO_ID for d in datas]
    sem = asyncio.Semaphore(16)

    async def put(cid: bytes, data: bytes) -> None:
        async with sem:
            await repo.put_chunk(cid, encode_chunk(data, "zstd"))

    await asyncio.gather(*(put(c, d) for c, d in zip(ids, datas) if c != ZERO_ID))
    return ids


async def test_repository_round_trip_and_verify(store_backend: Backend) -> None:
    datas = [chunk_data(i, DISK_SIZE) for i in range(DISK_CHUNKS)]
    store = store_backend.open("dr/site-a")
    try:
        repo = await Repository.open_or_create(store)
        ids = await store_chunks(repo, datas)
        w = ManifestWriter(repo, "disk-a", DISK_SIZE, CHUNK)
        await w.add(ids)
        m = await w.finish()
        assert len(m.segments) == 2
        report = await repo.verify_disk(m, concurrency=16)
        assert report.ok and report.chunks_checked == len(set(ids)) - 1  # zeros not read
    finally:
        await store.close()
    # Another process opening the same location gets the same repository and data.
    store = store_backend.open("dr/site-a")
    try:
        again = await Repository.open_or_create(store)
        assert again.id == repo.id
        assert await again.get_manifest(m.root_hash) == m
        assert len([k async for k in store.list("chunks/")]) == len(set(ids)) - 1
        assert await again.get_chunk(ids[1030], offset=1030 * CHUNK) == datas[1030]
        # A chunk changed behind the repository's back is found, at its disk offset.
        store_backend.plant(f"dr/site-a/{chunk_key(ids[1030])}",
                            encode_chunk(b"not the data", "none"))
        report = await again.verify_disk(m)
        assert [(b.offset, b.reason) for b in report.bad_chunks] == [(1030 * CHUNK,
                                                                      "hash-mismatch")]
    finally:
        await store.close()
    assert json.loads(store_backend.raw_get("dr/site-a/config"))["id"] == repo.id


async def test_gc_removes_only_what_the_deleted_point_referenced(object_store: Any) -> None:
    repo = await Repository.open_or_create(object_store)
    a = await write_point(repo, "20250101t000000z-1", {"d1": [1, 2, 0, 3]})
    b = await write_point(repo, "20250101t000000z-2", {"d1": [1, 2, 0, 4]})
    assert await repo.delete_recovery_point("20250101t000000z-1")
    report = await gc.collect_garbage(repo, grace_seconds=0, clock=lambda: time.time() + 5)
    assert set(report.removed_keys) == a - b
    left = {k for p in ("chunks/", "segments/", "manifests/") async for k in object_store.list(p)}
    assert left == b
