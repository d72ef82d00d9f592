"""AWS access shared by the `aws` source, the `ebs` and `s3` targets and EC2 recovery.

`AwsSettings` is what a site or target says about AWS: a region, an optional endpoint
(moto in tests, a VPC endpoint in production) and either nothing — the standard
credential chain of the process using it (environment, profile, instance role) — or
explicit keys, which the control plane keeps encrypted and hands to nodes inside a task.

`client()` opens an aiobotocore client as an async context manager. botocore's own
retries are off (one attempt per call): retries belong to our callers, which must see
throttling to slow down (adaptive concurrency) and count it in metrics.

`aws_error()` turns botocore exceptions into our error hierarchy: throttling becomes
`Throttled` (a signal, retried), connection trouble a retryable `TargetError`, and
everything else an error that says which call failed and why — never with a secret,
and never a traceback for the user.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from dr_common.errors import DRError, InvalidArgument, NotFound, TargetError, Throttled

# Error codes AWS services use to ask for less traffic (EBS direct: ThrottlingException
# with HTTP 429; S3: SlowDown 503; EC2: RequestLimitExceeded).
THROTTLE_CODES = frozenset({
    "ThrottlingException", "Throttling", "ThrottledException", "SlowDown",
    "RequestLimitExceeded", "TooManyRequestsException", "RequestThrottled",
    "RequestThrottledException", "ProvisionedThroughputExceededException",
})
NOT_FOUND_CODES = frozenset({
    "ResourceNotFoundException", "NoSuchBucket", "NoSuchKey", "NotFound", "404",
    "InvalidSnapshot.NotFound", "InvalidVolume.NotFound", "InvalidInstanceID.NotFound",
    "InvalidSubnetID.NotFound", "InvalidGroup.NotFound",
})
ACCESS_CODES = frozenset({
    "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "Forbidden", "403",
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "AuthFailure", "ExpiredToken",
})
# HTTP statuses that mean "try again": the service is busy or briefly unavailable.
_RETRYABLE_STATUS = frozenset({500, 502, 503, 504})


@dataclass(frozen=True)
class AwsSettings:
    """Where and as whom to call AWS. Secrets are excluded from repr (logs)."""

    region: str
    endpoint_url: str = ""
    profile: str = ""
    access_key_id: str = ""
    secret_access_key: str = field(default="", repr=False)
    session_token: str = field(default="", repr=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, field_prefix: str = "aws") -> AwsSettings:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InvalidArgument(f"unknown AWS setting(s) {', '.join(unknown)}; known: "
                                  f"{', '.join(sorted(known))}", field=f"{field_prefix}.{unknown[0]}")
        s = cls(**{k: str(v) for k, v in d.items()})
        s.check(field_prefix)
        return s

    @classmethod
    def from_site(cls, site: Any, *, field: str = "site") -> AwsSettings:
        """The AWS settings a task carries (a `SiteSettings` message the control plane
        filled in, secrets unsealed, when it leased the task)."""
        if site.WhichOneof("kind") != "aws" or not site.aws.region:
            raise InvalidArgument("this task's site has no AWS settings (at least a region "
                                  "is needed)", field=f"{field}.aws")
        m = site.aws
        return cls(region=m.region, endpoint_url=m.endpoint_url, profile=m.profile,
                   access_key_id=m.access_key_id, secret_access_key=m.secret_access_key,
                   session_token=m.session_token)

    def check(self, field_prefix: str = "aws") -> None:
        if not self.region:
            raise InvalidArgument("an AWS region is needed (e.g. us-east-1)",
                                  field=f"{field_prefix}.region")
        if self.region not in known_regions():
            raise InvalidArgument(f"unknown AWS region {self.region!r}; known regions include "
                                  f"us-east-1, eu-west-1, ap-southeast-2",
                                  field=f"{field_prefix}.region")
        if bool(self.access_key_id) != bool(self.secret_access_key):
            raise InvalidArgument("give both access_key_id and secret_access_key, or neither "
                                  "(then the standard credential chain is used)",
                                  field=f"{field_prefix}.secret_access_key")

    def secrets(self) -> dict[str, str]:
        """The secret part, for encrypted storage; `public()` is the rest."""
        return {k: v for k, v in (("secret_access_key", self.secret_access_key),
                                  ("session_token", self.session_token)) if v}

    def public(self) -> AwsSettings:
        return replace(self, secret_access_key="", session_token="")

    def as_dict(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if getattr(self, k)}


@functools.cache
def known_regions() -> frozenset[str]:
    """Regions botocore's bundled endpoint data knows, in every partition (offline)."""
    import botocore.session
    s = botocore.session.get_session()
    return frozenset(r for p in s.get_available_partitions()
                     for r in s.get_available_regions("ec2", partition_name=p))


def _config(**overrides: Any):
    from aiobotocore.config import AioConfig
    opts: dict[str, Any] = dict(
        retries={"total_max_attempts": 1},  # our callers retry (and see throttling)
        connect_timeout=10, read_timeout=60, max_pool_connections=64)
    opts.update(overrides)
    return AioConfig(**opts)


@contextlib.asynccontextmanager
async def client(settings: AwsSettings, service: str, **config: Any) -> AsyncIterator[Any]:
    """An aiobotocore client for `service` ("ebs", "ec2", "s3"), closed on exit."""
    from aiobotocore.session import AioSession
    session = AioSession(profile=settings.profile or None)
    kwargs: dict[str, Any] = {"region_name": settings.region, "config": _config(**config)}
    if settings.endpoint_url:
        kwargs["endpoint_url"] = settings.endpoint_url
    if settings.access_key_id:
        kwargs.update(aws_access_key_id=settings.access_key_id,
                      aws_secret_access_key=settings.secret_access_key,
                      aws_session_token=settings.session_token or None)
    try:
        cm = session.create_client(service, **kwargs)
        c = await cm.__aenter__()
    except Exception as exc:  # unknown region, bad profile: say so, don't crash
        raise aws_error(exc, f"open the AWS {service} client") from None
    try:
        yield c
    finally:
        await cm.__aexit__(None, None, None)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError, else ""."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def http_status(exc: BaseException) -> int:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return 0


def aws_error(exc: BaseException, what: str) -> DRError:
    """Our error for a failed AWS call; `what` says what we were doing ("put block 7 of
    snap-1"). Messages carry AWS's code and message, which never contain secrets."""
    if isinstance(exc, DRError):
        return exc
    from botocore import exceptions as bx
    code = error_code(exc)
    status = http_status(exc)
    detail = ""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        detail = str(response.get("Error", {}).get("Message", "") or "")
    said = f"{code}: {detail}" if detail else (code or type(exc).__name__)
    if code in THROTTLE_CODES or status == 429:
        return Throttled(f"AWS throttled the request to {what} ({said})")
    if code in ACCESS_CODES:
        return TargetError(f"AWS refused to {what} ({said}): check the credentials and "
                           f"that their policy allows this call", reason="access-denied",
                           retryable=False)
    # EC2 names every missing thing Invalid<Kind>ID.NotFound (AMIs, ENIs, attachments...).
    if code in NOT_FOUND_CODES or code.endswith(".NotFound") or status == 404:
        err = NotFound(f"cannot {what}: not found ({said})")
        return err
    from botocore.parsers import ResponseParserError
    if isinstance(exc, ResponseParserError):
        # Not the API's XML or JSON: a proxy's or an overloaded endpoint's error page,
        # whose HTML is no use to a user.
        return TargetError(f"AWS sent an unreadable answer to {what} (an error page, not "
                           f"the API's format): retrying may help",
                           reason="target-unavailable", retryable=True)
    # A body cut short (IncompleteReadError) or an aiohttp error raised while streaming
    # it is connection trouble too: the request can be made again.
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectionClosedError,
                        bx.ReadTimeoutError, bx.ConnectTimeoutError,
                        bx.HTTPClientError, bx.IncompleteReadError)) or \
            isinstance(exc, (ConnectionError, TimeoutError)) or _aiohttp_error(exc):
        return TargetError(f"cannot reach AWS to {what} ({type(exc).__name__}): retrying "
                           f"may help", reason="target-unavailable", retryable=True)
    if isinstance(exc, bx.NoRegionError) or "region" in str(exc).lower() and \
            isinstance(exc, (bx.UnknownEndpointError, bx.InvalidRegionError)):
        return InvalidArgument(f"cannot {what}: {exc}", field="aws.region")
    if isinstance(exc, bx.ProfileNotFound):
        return InvalidArgument(f"cannot {what}: {exc}", field="aws.profile")
    if isinstance(exc, bx.NoCredentialsError):
        return TargetError(f"cannot {what}: no AWS credentials found (give keys on the site, "
                           f"or set up the environment, a profile or an instance role)",
                           reason="access-denied", retryable=False)
    if status in _RETRYABLE_STATUS:
        return TargetError(f"AWS failed to {what} ({said}, HTTP {status}): retrying",
                           reason="target-unavailable", retryable=True)
    if code:
        return TargetError(f"AWS rejected the request to {what} ({said})",
                           reason="aws-error", retryable=False)
    return TargetError(f"cannot {what}: {type(exc).__name__}: {exc}", reason="aws-error",
                       retryable=False)


def _aiohttp_error(exc: BaseException) -> bool:
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - aiobotocore depends on it
        return False
    return isinstance(exc, aiohttp.ClientError)


@contextlib.asynccontextmanager
async def calling(what: str) -> AsyncIterator[None]:
    """Maps any AWS exception raised in the block with `aws_error(exc, what)`."""
    try:
        yield
    except DRError:
        raise
    except Exception as exc:
        raise aws_error(exc, what) from exc
