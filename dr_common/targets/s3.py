"""The `s3` target: the repository format (docs/FORMAT.md) on an S3 bucket.

`S3Store` is the `ObjectStore` of `dr_common.repository` on a bucket and an optional
key prefix (`s3://bucket/prefix`): a repository key `chunks/ab/ab12...` is the S3 key
`prefix/chunks/ab/ab12...`. S3 gives every primitive the format needs natively:
whole-object puts are atomic, `If-None-Match: *` is the conditional put, a put is
durable when it returns, and ListObjectsV2 lists in UTF-8 binary order, which is
Python's string order.

Every request is one botocore attempt (`dr_common.aws.client`), limited, retried and
counted by the remote-call layer (`dr_common.remote`), the only place it is retried
(the plumbing is targets/cloudstore.py's, shared with azblob). Request bodies carry a
CRC32 checksum that S3 verifies, and reads ask for the stored checksum and verify it, so a body corrupted in
transit is rejected (and retried) in both directions.

Operators own buckets: the store never creates one. It checks on first use that the
bucket exists, in the configured region, and that we may list it.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from botocore.exceptions import FlexibleChecksumError

from dr_common.aws import AwsSettings, aws_error, client, error_code, http_status
from dr_common.errors import DRError, InvalidArgument, ObjectNotFound, RepositoryError, TargetError
from dr_common.proto.dr.v1 import common_pb2, nodes_pb2
from dr_common.repository import Repository
from dr_common.targets.base import TargetEnv
from dr_common.targets.cloudstore import ChecksumMismatch, CloudStore, check_prefix
from dr_common.targets.repository import RepositoryTarget

TARGET = "s3"
# S3's own rules for (DNS-compatible) bucket names; checking them here turns a typo
# into a clear InvalidArgument instead of a signature or endpoint error from botocore.
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# S3's page limit; tests make it small to exercise paging.
LIST_PAGE = 1000
# Codes that mean the caller may not do this (not: the credentials are invalid).
_DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "Forbidden", "403"})
# S3 checked the body against the checksum we sent and it did not match: the body was
# damaged on the way, and sending it again from memory fixes that.
_BAD_UPLOAD_CODES = frozenset({"BadDigest", "XAmzContentChecksumMismatch"})
# Explicit rather than botocore's defaults (which an AWS_* environment variable can
# change): a CRC32 on every request body that S3 checks, and a check of the stored
# checksum on every read.
_CHECKSUMS = {"request_checksum_calculation": "when_supported",
              "response_checksum_validation": "when_supported"}


def parse_location(location: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://bucket[/prefix]`; InvalidArgument if malformed."""
    if not location.startswith("s3://"):
        raise InvalidArgument(f"an s3 repository location looks like s3://BUCKET/PREFIX, "
                              f"not {location!r}", field="repository.location")
    bucket, _, prefix = location[len("s3://"):].partition("/")
    return _check_bucket_name(bucket), check_prefix(prefix, "S3 key prefix")


def _check_bucket_name(bucket: str) -> str:
    if not _BUCKET_NAME.fullmatch(bucket) or ".." in bucket:
        raise InvalidArgument(f"invalid S3 bucket name {bucket!r}: 3-63 characters of "
                              f"a-z, 0-9, '.' and '-'", field="repository.location")
    return bucket


class S3Store(CloudStore):
    """ObjectStore on an S3 bucket, under an optional key prefix; the aiobotocore
    client is opened on first use and closed by `close()` (CloudStore)."""

    service = TARGET

    def __init__(self, bucket: str, prefix: str = "", *, aws: AwsSettings,
                 attempts: int = 5, deadline: float = 120.0,
                 list_page: int = LIST_PAGE) -> None:
        self.bucket = _check_bucket_name(bucket)
        self._aws = aws
        super().__init__(prefix, prefix_name="S3 key prefix", attempts=attempts,
                         deadline=deadline, list_page=list_page)

    @classmethod
    def from_location(cls, location: str, *, aws: AwsSettings, **kwargs: Any) -> S3Store:
        bucket, prefix = parse_location(location)
        return cls(bucket, prefix, aws=aws, **kwargs)

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _where(self) -> str:
        return f"bucket {self.bucket}"

    # -- the ObjectStore protocol ----------------------------------------------------

    async def get(self, key: str) -> bytes:
        s3key = self._name(key)

        async def fetch(c: Any) -> bytes:
            resp = await c.get_object(Bucket=self.bucket, Key=s3key, ChecksumMode="ENABLED")
            async with resp["Body"] as body:
                return await body.read()

        return await self._get_checked(key, f"get object {s3key} from bucket {self.bucket}",
                                       fetch)

    async def put(self, key: str, data: bytes | bytearray | memoryview, *,
                  if_absent: bool = False) -> bool:
        s3key = self._name(key)
        # botocore accepts bytes and bytearray, not memoryview: a copy then (one memcpy
        # of a chunk, small beside the request; a file-like wrapper would be read again
        # for the checksum anyway).
        body = bytes(data) if isinstance(data, memoryview) else data
        cond = {"IfNoneMatch": "*"} if if_absent else {}

        async def send(c: Any) -> bool:
            try:
                await c.put_object(Bucket=self.bucket, Key=s3key, Body=body, **cond)
            except Exception as exc:
                # 412: the key exists, the answer a conditional put asks for. (After a
                # lost response to our own earlier attempt it may be our object: the
                # repository compares content where that matters, e.g. recovery points.)
                if if_absent and http_status(exc) == 412:
                    return False
                raise
            return True

        return await self._call("put", f"put object {s3key} into bucket {self.bucket}",
                                send, key=key)

    async def exists(self, key: str) -> bool:
        s3key = self._name(key)

        async def head(c: Any) -> bool:
            return await self._unless_missing(c.head_object(Bucket=self.bucket, Key=s3key),
                                              None) is not None

        return await self._call("exists", f"look up object {s3key} in bucket {self.bucket}",
                                head, key=key)

    async def delete(self, key: str) -> None:
        s3key = self._name(key)

        async def remove(c: Any) -> None:
            # S3 answers 204 for a missing key too: idempotent as the protocol wants.
            await c.delete_object(Bucket=self.bucket, Key=s3key)

        await self._call("delete", f"delete object {s3key} from bucket {self.bucket}",
                         remove, key=key)

    async def touch(self, key: str) -> bool:
        s3key = self._name(key)

        async def copy(c: Any) -> bool:
            # S3 has no "touch": copying an object onto itself with new metadata gives
            # it a new LastModified (and keeps its bytes and their checksum).
            done = await self._unless_missing(c.copy_object(
                Bucket=self.bucket, Key=s3key, CopySource={"Bucket": self.bucket, "Key": s3key},
                MetadataDirective="REPLACE", ChecksumAlgorithm="CRC32"), None)
            return done is not None

        return await self._call("touch", f"touch object {s3key} in bucket {self.bucket}",
                                copy, key=key)

    async def delete_if_older(self, key: str, cutoff: float) -> int | None:
        s3key = self._name(key)

        async def check_and_remove(c: Any) -> int | None:
            # S3 has no atomic "delete unless modified since" on general buckets: the
            # HEAD and the DELETE are two requests. The window between them is the one
            # race docs/FORMAT.md (garbage collection) names for S3.
            head = await self._unless_missing(c.head_object(Bucket=self.bucket, Key=s3key),
                                              None)
            if head is None or head["LastModified"].timestamp() >= cutoff:
                return None
            await c.delete_object(Bucket=self.bucket, Key=s3key)
            return int(head.get("ContentLength", 0))

        return await self._call("delete", f"delete object {s3key} from bucket {self.bucket}",
                                check_and_remove, key=key)

    # -- internals -------------------------------------------------------------------

    async def _page(self, c: Any, s3prefix: str, token: str
                    ) -> tuple[list[tuple[str, float, int]], str]:
        more = {"ContinuationToken": token} if token else {}
        page = await c.list_objects_v2(Bucket=self.bucket, Prefix=s3prefix,
                                       MaxKeys=self._list_page, **more)
        names = [(o["Key"], o["LastModified"].timestamp(), int(o.get("Size", 0)))
                 for o in page.get("Contents", ())]
        return names, page.get("NextContinuationToken", "") if page.get("IsTruncated") else ""

    async def _connect(self, stack: contextlib.AsyncExitStack) -> Any:
        c = await stack.enter_async_context(client(self._aws, "s3", **_CHECKSUMS))
        await self._check_bucket(c)
        return c

    async def _check_bucket(self, c: Any) -> None:
        """Fail early, and clearly, on a missing bucket, a bucket in another region
        (requests would be redirected or refused) or one we may not list."""
        resp = await self._attempt("head-bucket", f"open bucket {self.bucket}",
                                   lambda: c.head_bucket(Bucket=self.bucket))
        headers = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        region = resp.get("BucketRegion") or headers.get("x-amz-bucket-region", "")
        if region and region != self._aws.region:
            raise InvalidArgument(f"bucket {self.bucket} is in region {region}, not "
                                  f"{self._aws.region}: set the repository's AWS region to "
                                  f"{region}", field="repository.aws.region")

    def _missing(self, exc: BaseException) -> bool:
        # HEAD has no body, so no error code: a bare 404 is "no such key" (the bucket was
        # checked when the client was opened; a bucket deleted since says NoSuchBucket
        # where there is a body).
        return http_status(exc) == 404 and error_code(exc) != "NoSuchBucket"

    def _error(self, exc: BaseException, op: str, what: str, key: str) -> DRError:
        """Our error for a failed S3 call, in the terms an operator acts on."""
        code, status = error_code(exc), http_status(exc)
        if code == "NoSuchBucket" or (op == "head-bucket" and status == 404):
            return RepositoryError(f"bucket {self.bucket} does not exist in region "
                                   f"{self._aws.region}: create it, or fix repository.location")
        if code == "NoSuchKey":
            return ObjectNotFound(f"object {key!r} not found in bucket {self.bucket}"
                                  + (f" under prefix {self.prefix!r}" if self.prefix else ""))
        if code in _DENIED_CODES:
            # The credentials are valid but their policy (or the bucket's) says no.
            return TargetError(
                f"access denied to {what} ({code}): the credentials' policy must allow "
                f"s3:ListBucket on arn:aws:s3:::{self.bucket} and s3:GetObject, "
                f"s3:PutObject, s3:DeleteObject on arn:aws:s3:::{self.bucket}/"
                f"{self.prefix + '/' if self.prefix else ''}*",
                reason="access-denied", retryable=False)
        if code == "ConditionalRequestConflict":
            # 409: a concurrent conditional write to the same key is in progress;
            # S3 says to retry, after which we win or get 412.
            return TargetError(f"S3 asked to retry: {what} raced another write",
                               retryable=True)
        if code in _BAD_UPLOAD_CODES:
            return TargetError(f"S3 rejected a damaged upload: {what} ({code}); retrying",
                               retryable=True)
        if isinstance(exc, FlexibleChecksumError):
            return ChecksumMismatch(f"{what}: {exc}")
        return aws_error(exc, what)


def locate(path: str) -> nodes_pb2.S3Target:
    return nodes_pb2.S3Target(location=path)


async def open_target(locator: nodes_pb2.S3Target, site: common_pb2.SiteSettings,
                      env: TargetEnv) -> RepositoryTarget:
    """Opens (creating on first use) the repository at `locator.location`,
    s3://bucket/prefix. The bucket must exist: operators own buckets."""
    store = S3Store.from_location(locator.location,
                                  aws=AwsSettings.from_site(site, field="target.site"))
    try:
        repo = await Repository.open_or_create(store)
    except BaseException:
        await store.close()
        raise
    return RepositoryTarget(repo, name=f"s3:{locator.location}", env=env)
