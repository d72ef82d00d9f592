"""The error hierarchy every layer raises and every face (gRPC, CLI, logs) shows.

Each error carries a stable `reason` (a short kebab-case word users and tests can match
on), a message that says what was wrong and what to do, and whether trying again may
help. Nothing here may carry a secret: messages end up in logs and API responses.
"""

from __future__ import annotations

import asyncio


class DRError(Exception):
    """Base of all errors a user can see."""

    reason = "internal"
    retryable = False

    def __init__(self, message: str, *, reason: str | None = None, retryable: bool | None = None):
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        if retryable is not None:
            self.retryable = retryable


class InvalidArgument(DRError):
    """The request is wrong; `field` names the offending field when there is one."""

    reason = "invalid-argument"

    def __init__(self, message: str, *, field: str = "", reason: str | None = None):
        super().__init__(message, reason=reason)
        self.field = field


class NotFound(DRError):
    reason = "not-found"


class AlreadyExists(DRError):
    reason = "already-exists"


class FailedPrecondition(DRError):
    """The system is not in a state that allows the request (e.g. a lost lease)."""

    reason = "failed-precondition"


class SourceError(DRError):
    """Reading the protected disk failed."""

    reason = "source-unavailable"
    retryable = True


class TargetError(DRError):
    """Writing to or reading from target storage failed."""

    reason = "target-unavailable"
    retryable = True


class Throttled(TargetError):
    """The target asked us to slow down (429/503, SlowDown, ThrottlingException, ServerBusy).

    A signal for adaptive concurrency, not a failure: the write is retried. `retry_after`
    is how long the service asked us to wait (Azure's and HTTP's `Retry-After`), if it
    said; the retry layer waits at least that long."""

    reason = "throttled"

    def __init__(self, message: str, *, retry_after: float = 0.0, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class RepositoryError(TargetError):
    """The repository is missing, of an unknown version, or inconsistent."""

    reason = "repository-error"
    retryable = False


class ObjectNotFound(RepositoryError):
    reason = "object-missing"


class CorruptData(RepositoryError):
    """Stored data does not match its hash. `offset` is the disk offset when known."""

    reason = "corrupt-chunk"

    def __init__(self, message: str, *, disk: str = "", offset: int | None = None):
        super().__init__(message)
        self.disk = disk
        self.offset = offset


class Unauthenticated(DRError):
    """The caller did not prove who it is (no, an unknown or a revoked API token)."""

    reason = "unauthenticated"


class PermissionDenied(DRError):
    """The caller is known but its role does not allow the request."""

    reason = "permission-denied"


def first_error(exc: BaseException) -> BaseException:
    """TaskGroups wrap failures in ExceptionGroups; users need the first real one."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        exc = (inner or exc.exceptions)[0]
    return exc


def as_dr_error(exc: BaseException) -> DRError:
    """Any failure as the DRError users see: the first real error of a task group, an
    OSError as `io-error` (retryable: a disk or mount may come back), anything else as
    `internal` (a bug: the message names the exception, never a traceback)."""
    exc = first_error(exc)
    if isinstance(exc, DRError):
        return exc
    if isinstance(exc, OSError):
        return DRError(f"{exc.strerror or exc}: {exc.filename or ''}", reason="io-error",
                       retryable=True)
    return DRError(f"internal error: {type(exc).__name__}: {exc}", reason="internal")
