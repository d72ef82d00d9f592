"""The `s3` target against a real S3 peer (moto server): the ObjectStore contract, the
whole repository format on a bucket, throttling and resets, and the errors operators see."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import urllib.request
import uuid
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from dr_common.aws import AwsSettings
from dr_common.errors import (
    CorruptData,
    InvalidArgument,
    ObjectNotFound,
    RepositoryError,
    TargetError,
    Throttled,
)
from dr_common.repository import (
    SEGMENT_CHUNKS,
    ZERO_ID,
    ManifestWriter,
    Repository,
    chunk_key,
    encode_chunk,
)
from dr_common import targets
from dr_common.proto.dr.v1 import common_pb2
from dr_common.targets import REPOSITORY_KINDS
from dr_common.targets.base import TargetEnv
from dr_common.remote import REQUESTS as TARGET_REQUESTS, RETRIES as TARGET_RETRIES, \
    THROTTLES as TARGET_THROTTLES, Remote, RetryPolicy
from dr_common.targets.s3 import S3Store, parse_location
from tests.test_repository import CHUNK, chunk_data

# -- helpers ---------------------------------------------------------------------------


@pytest.fixture
def aws(aws_peer: Any) -> AwsSettings:
    return AwsSettings(region=aws_peer.region, endpoint_url=aws_peer.endpoint,
                       access_key_id="testing", secret_access_key="testing-secret")


def boto(aws: AwsSettings, service: str = "s3") -> Any:
    """A synchronous boto3 client for test setup (what an operator's tooling does)."""
    import boto3
    return boto3.client(service, region_name=aws.region, endpoint_url=aws.endpoint_url,
                        aws_access_key_id=aws.access_key_id,
                        aws_secret_access_key=aws.secret_access_key)


@pytest.fixture
def bucket(aws: AwsSettings) -> str:
    name = f"dr-test-{uuid.uuid4().hex[:12]}"
    boto(aws).create_bucket(Bucket=name)
    return name


@pytest.fixture
async def store(aws: AwsSettings, bucket: str) -> Any:
    async with S3Store(bucket, "repo/one", aws=aws) as s:
        yield s


def sample(counter: Any, *labels: str) -> float:
    return counter.labels(*labels)._value.get()


# -- the retry helper (no peer needed) ---------------------------------------------------


async def test_call_retries_throttling_and_counts_it() -> None:
    answers: list[Exception | None] = [Throttled("slow down"), Throttled("slow down"),
                                       TargetError("reset", retryable=True), None]
    before = (sample(TARGET_THROTTLES, "t-unit", "op"), sample(TARGET_RETRIES, "t-unit", "op"),
              sample(TARGET_REQUESTS, "t-unit", "op", "ok"))

    async def fn() -> str:
        exc = answers.pop(0)
        if exc is not None:
            raise exc
        return "done"

    remote = Remote("t-unit", policy=RetryPolicy(attempts=2))
    assert await remote.call("op", fn) == "done"  # throttles use no attempts
    assert sample(TARGET_THROTTLES, "t-unit", "op") - before[0] == 2
    assert sample(TARGET_RETRIES, "t-unit", "op") - before[1] == 3
    assert sample(TARGET_REQUESTS, "t-unit", "op", "ok") - before[2] == 1


async def test_call_gives_up_at_once_on_non_retryable_errors() -> None:
    tries = 0

    async def fn() -> None:
        nonlocal tries
        tries += 1
        raise TargetError("denied", reason="access-denied", retryable=False)

    with pytest.raises(TargetError):
        await Remote("t-unit").call("denied", fn)
    assert tries == 1
    assert sample(TARGET_REQUESTS, "t-unit", "denied", "access-denied") == 1


# -- locations -------------------------------------------------------------------------


def test_parse_location() -> None:
    assert parse_location("s3://my-bucket") == ("my-bucket", "")
    assert parse_location("s3://my-bucket/") == ("my-bucket", "")
    assert parse_location("s3://my-bucket/dr/site-a/") == ("my-bucket", "dr/site-a")
    for bad in ("my-bucket/x", "s3://", "s3://UPPER", "s3://ab", "s3://b_x/y", "s3://bkt/a/../b",
                "s3://bkt/a//b"):
        with pytest.raises(InvalidArgument) as e:
            parse_location(bad)
        assert e.value.field == "repository.location"


# -- the ObjectStore contract ---------------------------------------------------------


async def test_put_get_exists_delete(store: S3Store, aws: AwsSettings, bucket: str) -> None:
    assert await store.put("a/b/c", b"hello") is True
    assert await store.get("a/b/c") == b"hello"
    assert await store.exists("a/b/c")
    assert not await store.exists("a/b")
    # Plain puts overwrite, and take any bytes-like object.
    assert await store.put("a/b/c", memoryview(b"xxworldxx")[2:7]) is True
    assert await store.get("a/b/c") == b"world"
    assert await store.put("a/b/c", bytearray(b"again")) is True
    assert await store.get("a/b/c") == b"again"
    # Keys live under the store's prefix.
    assert boto(aws).get_object(Bucket=bucket, Key="repo/one/a/b/c")["Body"].read() == b"again"
    await store.delete("a/b/c")
    await store.delete("a/b/c")  # missing is fine
    assert not await store.exists("a/b/c")
    with pytest.raises(ObjectNotFound) as e:
        await store.get("a/b/c")
    assert "'a/b/c'" in e.value.message and bucket in e.value.message
    assert isinstance(e.value, RepositoryError)


async def test_conditional_put_never_overwrites(store: S3Store) -> None:
    assert await store.put("config", b"first", if_absent=True) is True
    assert await store.put("config", b"second", if_absent=True) is False
    assert await store.get("config") == b"first"


async def test_concurrent_conditional_puts_have_one_winner(store: S3Store) -> None:
    results = await asyncio.gather(
        *(store.put("x/key", f"writer {i}".encode(), if_absent=True) for i in range(16)))
    assert results.count(True) == 1
    winner = results.index(True)
    assert await store.get("x/key") == f"writer {winner}".encode()


async def test_list_is_sorted_paged_and_stays_under_the_prefix(
        aws: AwsSettings, bucket: str) -> None:
    keys = ["a/x", "a.b", "a-b", "a/y/z", "b", "A", "z/\u00e9", "z/\uffff", "z/\U0001f600"]
    # A neighbour prefix ("repo/one-other") and a foreign object under ours that the
    # repository could not have written must not show up.
    s3 = boto(aws)
    s3.put_object(Bucket=bucket, Key="repo/one-other/a", Body=b"")
    s3.put_object(Bucket=bucket, Key="repo/one/a//bad", Body=b"")
    async with S3Store(bucket, "repo/one", aws=aws, list_page=2) as store:
        await asyncio.gather(*(store.put(k, k.encode()) for k in keys))
        listed = [k async for k in store.list("")]
        # S3 lists in UTF-8 byte order, which is Python's string (code point) order:
        # "a.b" < "a/x" because '.' < '/', and U+FFFF < U+1F600 (not so in UTF-16).
        assert listed == sorted(keys)
        assert listed.index("a.b") < listed.index("a/x")
        assert [k async for k in store.list("a/")] == ["a/x", "a/y/z"]
        assert [k async for k in store.list("a")] == ["a-b", "a.b", "a/x", "a/y/z"]
        assert [k async for k in store.list("nothing/")] == []
        with pytest.raises(RepositoryError):
            [k async for k in store.list("/a")]
        with pytest.raises(RepositoryError):
            [k async for k in store.list("../a")]


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", "a/.tmp-x", "a\\b"])
async def test_rejects_keys_that_escape_or_collide(store: S3Store, key: str) -> None:
    with pytest.raises(RepositoryError):
        await store.put(key, b"x")
    with pytest.raises(RepositoryError):
        await store.get(key)


async def test_closed_store_refuses_use(aws: AwsSettings, bucket: str) -> None:
    store = S3Store(bucket, aws=aws)
    assert await store.put("k", b"v")  # opened lazily
    await store.close()
    await store.close()  # twice is fine
    with pytest.raises(RepositoryError, match="closed"):
        await store.get("k")
    assert repr(store) == f"S3Store('s3://{bucket}')"


# -- integrity -------------------------------------------------------------------------


async def test_puts_carry_a_crc32_of_the_body(store: S3Store) -> None:
    data = os.urandom(100_000)
    sent: list[dict[str, Any]] = []
    store._client.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: sent.append(dict(request.headers)))
    await store.put("chunks/ab/cd", memoryview(data))
    want = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    got = sent[-1]["x-amz-checksum-crc32"]
    assert (got.decode() if isinstance(got, bytes) else got) == want


async def test_get_rejects_a_body_that_does_not_match_its_checksum(
        store: S3Store, aws: AwsSettings, bucket: str) -> None:
    # moto stores the checksum a client sends without checking it (when the algorithm
    # header is there): the way to get an object whose stored checksum disagrees with
    # its bytes, as after a bit flip.
    boto(aws).put_object(Bucket=bucket, Key="repo/one/points/x.json", Body=b"{}",
                         ChecksumAlgorithm="CRC32", ChecksumCRC32="AAAAAA==")
    retries = sample(TARGET_RETRIES, "s3", "get")
    with pytest.raises(CorruptData) as e:
        await store.get("points/x.json")
    assert "checksum" in e.value.message and e.value.reason == "corrupt-object"
    assert sample(TARGET_RETRIES, "s3", "get") - retries == 4  # read 5 times in all


# -- the repository on S3 ----------------------------------------------------------------


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


async def test_repository_on_s3_round_trip_and_verify(aws: AwsSettings, bucket: str) -> None:
    datas = [chunk_data(i, DISK_SIZE) for i in range(DISK_CHUNKS)]
    async with S3Store(bucket, "dr/site-a", aws=aws) as store:
        repo = await Repository.open_or_create(store)
        ids = await store_chunks(repo, datas)
        w = ManifestWriter(repo, "disk-a", DISK_SIZE, CHUNK)
        await w.add(ids)
        m = await w.finish()
        assert len(m.segments) == 2
        report = await repo.verify_disk(m, concurrency=16)
        assert report.ok and report.chunks_checked == len(set(ids)) - 1  # zeros not read
    # Another process opening the same location gets the same repository and data.
    async with S3Store(bucket, "dr/site-a", aws=aws) as store:
        again = await Repository.open_or_create(store)
        assert again.id == repo.id
        assert await again.get_manifest(m.root_hash) == m
        assert len([k async for k in store.list("chunks/")]) == len(set(ids)) - 1
        assert await again.get_chunk(ids[1030], offset=1030 * CHUNK) == datas[1030]
        # A chunk changed behind the repository's back is found, at its disk offset.
        bad = chunk_key(ids[1030])
        boto(aws).put_object(Bucket=bucket, Key=f"dr/site-a/{bad}",
                             Body=encode_chunk(b"not the data", "none"))
        report = await again.verify_disk(m)
        assert [(b.offset, b.reason) for b in report.bad_chunks] == [(1030 * CHUNK,
                                                                      "hash-mismatch")]
    assert json.loads(boto(aws).get_object(Bucket=bucket, Key="dr/site-a/config")["Body"]
                      .read())["id"] == repo.id


async def test_concurrent_open_or_create_agree(aws: AwsSettings, bucket: str) -> None:
    stores = [S3Store(bucket, "shared", aws=aws) for _ in range(6)]
    try:
        repos = await asyncio.gather(*(Repository.open_or_create(s) for s in stores))
        assert len({r.id for r in repos}) == 1
        assert len({r.chunk_id(b"same data") for r in repos}) == 1
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def open_repository(kind: str, location: str, *, roots: list[str],
                          aws: AwsSettings | None = None) -> Repository:
    """The repository a node's task opens: through the target registry."""
    loc = targets.locator(kind, location)
    if aws is not None:
        loc.site.aws.CopyFrom(common_pb2.AwsSettings(**aws.as_dict()))
    return (await targets.open_target(loc, TargetEnv(roots=tuple(roots)))).repository


async def test_open_repository_s3(aws: AwsSettings, bucket: str) -> None:
    assert "s3" in REPOSITORY_KINDS
    repo = await open_repository("s3", f"s3://{bucket}/plans/p1", roots=[], aws=aws)
    try:
        assert isinstance(repo.store, S3Store) and repo.store.prefix == "plans/p1"
        assert boto(aws).head_object(Bucket=bucket, Key="plans/p1/config")
    finally:
        await repo.store.close()
    with pytest.raises(InvalidArgument) as e:
        await open_repository("s3", f"s3://{bucket}/p", roots=[])
    assert e.value.field == "target.site.aws"
    with pytest.raises(InvalidArgument) as e:
        await open_repository("s3", f"/srv/{bucket}", roots=[], aws=aws)
    assert e.value.field == "repository.location"


# -- errors operators see --------------------------------------------------------------


async def test_missing_bucket_is_explained_and_not_created(aws: AwsSettings) -> None:
    name = f"dr-missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(RepositoryError) as e:
        await open_repository("s3", f"s3://{name}/x", roots=[], aws=aws)
    assert e.value.message == (f"bucket {name} does not exist in region {aws.region}: "
                               f"create it, or fix repository.location")
    assert not e.value.retryable
    assert name not in [b["Name"] for b in boto(aws).list_buckets()["Buckets"]]


async def test_bucket_in_another_region_is_explained(aws: AwsSettings) -> None:
    name = f"dr-eu-{uuid.uuid4().hex[:8]}"
    boto(aws).create_bucket(Bucket=name,
                            CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    with pytest.raises(InvalidArgument) as e:
        async with S3Store(name, aws=aws):
            pass
    assert e.value.field == "repository.aws.region"
    assert "eu-west-1" in e.value.message and name in e.value.message


def test_unknown_region_is_an_invalid_argument() -> None:
    with pytest.raises(InvalidArgument) as e:
        AwsSettings.from_dict({"region": "mars-north-1", "endpoint_url": "http://127.0.0.1:1"})
    assert e.value.field == "aws.region"


@pytest.mark.parametrize("code,status,retryable", [
    ("ConditionalRequestConflict", 409, True),  # racing conditional writes
    ("BadDigest", 400, True),  # body damaged in transit (moto checks no checksums)
    ("XAmzContentChecksumMismatch", 400, True),
    ("InvalidRequest", 400, False),
])
def test_s3_answers_moto_never_gives(code: str, status: int, retryable: bool) -> None:
    from botocore.exceptions import ClientError
    exc = ClientError({"Error": {"Code": code, "Message": "m"},
                       "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")
    store = S3Store("bkt", aws=AwsSettings(region="us-east-1"))
    err = store._error(exc, "put", "put object k into bucket bkt", "k")
    assert err.retryable is retryable and "bucket bkt" in err.message


def _moto_auth(endpoint: str, count: str) -> None:
    """Turns moto's IAM enforcement on ("0": from the next request) or off ("inf")."""
    req = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=count.encode(),
                                 headers={"Content-Type": "text/plain"}, method="POST")
    urllib.request.urlopen(req, timeout=10).close()


@pytest.fixture
def read_only_keys(aws: AwsSettings, bucket: str) -> Iterator[tuple[str, str]]:
    """Keys of an IAM user that may list and read `bucket` but not write it, with
    moto's IAM enforcement on (moto checks identity policies, not bucket policies)."""
    iam = boto(aws, "iam")
    user = f"reader-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="read", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        # moto wants "s3:HeadBucket" for HeadBucket, an action AWS does not have (AWS
        # checks s3:ListBucket).
        "Statement": [{"Effect": "Allow",
                       "Action": ["s3:ListBucket", "s3:HeadBucket", "s3:GetObject"],
                       "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}],
    }))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    boto(aws).put_object(Bucket=bucket, Key="ro/config", Body=b"{}")
    _moto_auth(aws.endpoint_url, "0")
    try:
        yield key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        _moto_auth(aws.endpoint_url, "inf")


async def test_access_denied_names_the_bucket_and_the_policy(
        aws: AwsSettings, bucket: str, read_only_keys: tuple[str, str]) -> None:
    key_id, secret = read_only_keys
    ro = AwsSettings(region=aws.region, endpoint_url=aws.endpoint_url,
                     access_key_id=key_id, secret_access_key=secret)
    before = sample(TARGET_REQUESTS, "s3", "put", "access-denied")
    async with S3Store(bucket, "ro", aws=ro) as store:
        assert await store.get("config") == b"{}"  # reading is allowed
        with pytest.raises(TargetError) as e:
            await store.put("chunks/aa/bb", b"data", if_absent=True)
    err = e.value
    assert err.reason == "access-denied" and not err.retryable
    assert bucket in err.message and "s3:PutObject" in err.message
    assert secret not in err.message and key_id not in err.message
    assert sample(TARGET_REQUESTS, "s3", "put", "access-denied") - before == 1  # not retried


# -- throttling and resets ---------------------------------------------------------------


def s3_total(counter: Any, *labels: str) -> float:
    return sum(sample(counter, "s3", op, *labels) for op in ("put", "get", "list"))


async def test_puts_and_gets_succeed_through_throttling_and_resets(
        aws_peer: Any, aws: AwsSettings, bucket: str) -> None:
    throttles, retries = s3_total(TARGET_THROTTLES), s3_total(TARGET_RETRIES)
    datas = {f"chunks/{i:03x}": os.urandom(8192) for i in range(300)}
    async with S3Store(bucket, "faulty", aws=aws) as store:
        aws_peer.faults(throttle_rate=0.2, reset_rate=0.02, services=["s3"])
        try:
            sem = asyncio.Semaphore(16)

            async def put(key: str, data: bytes) -> bool:
                async with sem:
                    return await store.put(key, data, if_absent=True)

            async def get(key: str) -> bytes:
                async with sem:
                    return await store.get(key)

            # Resets happen before moto sees the request, so every first put wins.
            assert all(await asyncio.gather(*(put(k, d) for k, d in datas.items())))
            got = await asyncio.gather(*(get(k) for k in datas))
            listed = [k async for k in store.list("chunks/")]
            injected = aws_peer.stats()["faults"]
        finally:
            aws_peer.clear_faults()
    assert got == list(datas.values())
    assert listed == sorted(datas)
    # Every SlowDown the peer sent was seen, counted and retried (~20 % of 600).
    thrown = s3_total(TARGET_THROTTLES) - throttles
    assert thrown == injected["throttled"] >= 60
    assert s3_total(TARGET_RETRIES) - retries >= thrown
    assert injected["reset"] > 0


async def test_resets_that_reach_the_store_are_retried(
        aws_peer: Any, aws: AwsSettings, bucket: str) -> None:
    # aiohttp itself resends an idempotent request once when a kept-alive connection
    # drops, so only a second reset in a row reaches the store: reset a lot.
    failed = s3_total(TARGET_REQUESTS, "target-unavailable")
    async with S3Store(bucket, "resets", aws=aws, attempts=8) as store:
        aws_peer.faults(reset_rate=0.4, services=["s3"])
        try:
            for i in range(40):
                assert await store.put(f"k/{i}", b"%d" % i)
                assert await store.get(f"k/{i}") == b"%d" % i
        finally:
            aws_peer.clear_faults()
    assert s3_total(TARGET_REQUESTS, "target-unavailable") > failed


# -- garbage collection's store calls on S3 -----------------------------------------------


async def test_touch_and_delete_if_older_on_s3(store: S3Store) -> None:
    """GC's primitives against the real protocol: LastModified moves on touch, keeps
    its bytes, and delete_if_older spares what is younger than the cutoff."""
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


async def test_gc_on_s3_removes_only_what_the_deleted_point_referenced(store: S3Store) -> None:
    from dr_common.repository import gc
    from tests.test_gc import write_point
    repo = await Repository.open_or_create(store)
    a = await write_point(repo, "20250101t000000z-1", {"d1": [1, 2, 0, 3]})
    b = await write_point(repo, "20250101t000000z-2", {"d1": [1, 2, 0, 4]})
    assert await repo.delete_recovery_point("20250101t000000z-1")
    report = await gc.collect_garbage(repo, grace_seconds=0, clock=lambda: time.time() + 5)
    assert set(report.removed_keys) == a - b
    left = {k for p in ("chunks/", "segments/", "manifests/") async for k in store.list(p)}
    assert left == b
