"""The aws source's API calls: EBS direct reads and EC2, through the remote-call layer
(`dr_common.remote`), with errors as `SourceError`s that keep the reason and retryability
(throttled, not-found, access-denied, ...) the layer and callers act on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import structlog

from dr_common.aws import aws_error
from dr_common.errors import SourceError
from dr_common.remote import Remote

log = structlog.get_logger()
T = TypeVar("T")

# One remote-call stack per API (dr_common.remote), labelled apart from the targets'
# calls in the shared request/retry/throttle counters: EBS direct reads, and EC2
# inventory and snapshots.
REMOTES = {"ebs": Remote("ebs-source"), "ec2": Remote("ec2-source")}


# --- calls ----------------------------------------------------------------------------

def source_error(exc: BaseException, what: str) -> SourceError:
    """Our source failing: a SourceError that keeps aws_error's reason and retryability
    (throttled, not-found, access-denied...), so retry() and callers can act on it."""
    if isinstance(exc, SourceError):
        return exc
    err = aws_error(exc, what)
    return SourceError(err.message, reason=err.reason, retryable=err.retryable)


async def request(service: str, op: str, what: str, fn: Callable[[], Awaitable[T]]) -> T:
    """One API request (`fn` makes one attempt) through the service's remote-call stack:
    limited, retried (throttling signalled to the caller's adaptive limiter) and counted."""
    async def attempt() -> T:
        try:
            return await fn()
        except Exception as exc:
            raise source_error(exc, what) from exc

    return await REMOTES[service].call(op, attempt)


async def call(c: Any, method: str, what: str, **params: Any) -> dict[str, Any]:
    return await request(c.meta.service_model.service_name,
                          c.meta.method_to_api_mapping.get(method, method), what,
                          lambda: getattr(c, method)(**params))


async def paged(c: Any, method: str, what: str, **params: Any
                 ) -> AsyncIterator[dict[str, Any]]:
    """The pages of a NextToken-paginated call, each page retried on its own (botocore's
    paginators cannot retry one page)."""
    token = ""
    while True:
        page = await call(c, method, what, **params, **({"NextToken": token} if token else {}))
        yield page
        token = page.get("NextToken") or ""
        if not token:
            return


def not_found(err: SourceError) -> bool:
    return err.reason == "not-found"



