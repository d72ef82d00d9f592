"""The `s3` target against a real S3 peer (moto server): what only S3Store does (its
client's life, checksums on the wire, locations), throttling and resets, and the errors
operators see. The ObjectStore contract and the repository format on a bucket are the
contract suite's: tests/contracts/test_object_stores.py."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from dr_common.aws import AwsSettings
from dr_common.errors import (
    CorruptData,
    InvalidArgument,
    RepositoryError,
    TargetError,
    Throttled,
)
from dr_common.repository import (
    Repository,
)
from dr_common import targets
from dr_common.proto.dr.v1 import common_pb2
from dr_common.targets import REPOSITORY_KINDS
from dr_common.targets.base import TargetEnv
from dr_common.remote import REQUESTS as TARGET_REQUESTS, RETRIES as TARGET_RETRIES, \
    THROTTLES as TARGET_THROTTLES, Remote, RetryPolicy
from dr_common.targets.s3 import S3Store, parse_location

# -- helpers ---------------------------------------------------------------------------


@pytest.fixture
async def s3_store(aws_settings: AwsSettings, bucket: str) -> Any:
    """An S3Store under prefix repo/one of a new bucket on the AWS peer."""
    async with S3Store(bucket, "repo/one", aws=aws_settings) as s:
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


# -- the client's life -------------------------------------------------------------------


async def test_closed_store_refuses_use(aws_settings: AwsSettings, bucket: str) -> None:
    store = S3Store(bucket, aws=aws_settings)
    assert await store.put("k", b"v")  # opened lazily
    await store.close()
    await store.close()  # twice is fine
    with pytest.raises(RepositoryError, match="closed"):
        await store.get("k")
    assert repr(store) == f"S3Store('s3://{bucket}')"


# -- integrity -------------------------------------------------------------------------


async def test_puts_carry_a_crc32_of_the_body(s3_store: S3Store) -> None:
    data = os.urandom(100_000)
    sent: list[dict[str, Any]] = []
    s3_store._client.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: sent.append(dict(request.headers)))
    await s3_store.put("chunks/ab/cd", memoryview(data))
    want = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    got = sent[-1]["x-amz-checksum-crc32"]
    assert (got.decode() if isinstance(got, bytes) else got) == want


async def test_get_rejects_a_body_that_does_not_match_its_checksum(
        s3_store: S3Store, boto: Any, bucket: str) -> None:
    # moto stores the checksum a client sends without checking it (when the algorithm
    # header is there): the way to get an object whose stored checksum disagrees with
    # its bytes, as after a bit flip.
    boto("s3").put_object(Bucket=bucket, Key="repo/one/points/x.json", Body=b"{}",
                         ChecksumAlgorithm="CRC32", ChecksumCRC32="AAAAAA==")
    retries = sample(TARGET_RETRIES, "s3", "get")
    with pytest.raises(CorruptData) as e:
        await s3_store.get("points/x.json")
    assert "checksum" in e.value.message and e.value.reason == "corrupt-object"
    assert sample(TARGET_RETRIES, "s3", "get") - retries == 4  # read 5 times in all


# -- opening a repository on S3 ---------------------------------------------------------


async def open_repository(kind: str, location: str, *, roots: list[str],
                          aws: AwsSettings | None = None) -> Repository:
    """The repository a node's task opens: through the target registry."""
    loc = targets.locator(kind, location)
    if aws is not None:
        loc.site.aws.CopyFrom(common_pb2.AwsSettings(**aws.as_dict()))
    return (await targets.open_target(loc, TargetEnv(roots=tuple(roots)))).repository


async def test_open_repository_s3(aws_settings: AwsSettings, boto: Any, bucket: str) -> None:
    assert "s3" in REPOSITORY_KINDS
    repo = await open_repository("s3", f"s3://{bucket}/plans/p1", roots=[], aws=aws_settings)
    try:
        assert isinstance(repo.store, S3Store) and repo.store.prefix == "plans/p1"
        assert boto("s3").head_object(Bucket=bucket, Key="plans/p1/config")
    finally:
        await repo.store.close()
    with pytest.raises(InvalidArgument) as e:
        await open_repository("s3", f"s3://{bucket}/p", roots=[])
    assert e.value.field == "target.site.aws"
    with pytest.raises(InvalidArgument) as e:
        await open_repository("s3", f"/srv/{bucket}", roots=[], aws=aws_settings)
    assert e.value.field == "repository.location"


# -- errors operators see --------------------------------------------------------------


async def test_missing_bucket_is_explained_and_not_created(aws_settings: AwsSettings,
                                                           boto: Any) -> None:
    name = f"dr-missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(RepositoryError) as e:
        await open_repository("s3", f"s3://{name}/x", roots=[], aws=aws_settings)
    assert e.value.message == (f"bucket {name} does not exist in region {aws_settings.region}: "
                               f"create it, or fix repository.location")
    assert not e.value.retryable
    assert name not in [b["Name"] for b in boto("s3").list_buckets()["Buckets"]]


async def test_bucket_in_another_region_is_explained(aws_settings: AwsSettings,
                                                     boto: Any) -> None:
    name = f"dr-eu-{uuid.uuid4().hex[:8]}"
    boto("s3").create_bucket(Bucket=name,
                            CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    with pytest.raises(InvalidArgument) as e:
        async with S3Store(name, aws=aws_settings):
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


@pytest.fixture
def read_only_keys(aws_peer: Any, boto: Any, bucket: str) -> Iterator[tuple[str, str]]:
    """Keys of an IAM user that may list and read `bucket` but not write it, with
    moto's IAM enforcement on (moto checks identity policies, not bucket policies)."""
    iam = boto("iam")
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
    boto("s3").put_object(Bucket=bucket, Key="ro/config", Body=b"{}")
    with aws_peer.iam_enforced():
        yield key["AccessKeyId"], key["SecretAccessKey"]


async def test_access_denied_names_the_bucket_and_the_policy(
        aws_settings: AwsSettings, bucket: str, read_only_keys: tuple[str, str]) -> None:
    key_id, secret = read_only_keys
    ro = AwsSettings(region=aws_settings.region, endpoint_url=aws_settings.endpoint_url,
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
        aws_peer: Any, aws_settings: AwsSettings, bucket: str) -> None:
    throttles, retries = s3_total(TARGET_THROTTLES), s3_total(TARGET_RETRIES)
    datas = {f"chunks/{i:03x}": os.urandom(8192) for i in range(300)}
    async with S3Store(bucket, "faulty", aws=aws_settings) as store:
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
        aws_peer: Any, aws_settings: AwsSettings, bucket: str) -> None:
    # aiohttp itself resends an idempotent request once when a kept-alive connection
    # drops, so only a second reset in a row reaches the store: reset a lot.
    failed = s3_total(TARGET_REQUESTS, "target-unavailable")
    async with S3Store(bucket, "resets", aws=aws_settings, attempts=8) as store:
        aws_peer.faults(reset_rate=0.4, services=["s3"])
        try:
            for i in range(40):
                assert await store.put(f"k/{i}", b"%d" % i)
                assert await store.get(f"k/{i}") == b"%d" % i
        finally:
            aws_peer.clear_faults()
    assert s3_total(TARGET_REQUESTS, "target-unavailable") > failed
