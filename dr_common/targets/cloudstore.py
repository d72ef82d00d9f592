"""What the cloud object stores under a repository (`s3`'s S3Store, `azblob`'s
AzblobStore) have in common: a client opened on first use and checked once, every
request one attempt through a `dr_common.remote.Remote`, listings page by page under a
key prefix, and reads whose transit checksum failed reported as corrupt data.

A store subclasses `CloudStore` and supplies the service's part: `_connect` (open the
client and check the container or bucket), `_error` (the service's exceptions in our
hierarchy), `_missing` (which failures mean "no such object"), `_page` (one page of a
listing) and the object calls themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar

from dr_common.errors import CorruptData, DRError, InvalidArgument, RepositoryError, TargetError
from dr_common.remote import Remote, RetryPolicy
from dr_common.repository.store import ObjectInfo, check_key

T = TypeVar("T")
U = TypeVar("U")


class ChecksumMismatch(TargetError):
    """A read whose body did not match the checksum the service sent: retried, since
    transit corruption goes away on a second read; `get` reports CorruptData if it
    persists."""

    retryable = True


def check_prefix(prefix: str, what: str) -> str:
    """`prefix` without surrounding slashes; InvalidArgument (field repository.location)
    if a part of it could not be part of a key. `what` names it: "S3 key prefix"."""
    prefix = prefix.strip("/")
    if prefix:
        try:
            check_key(prefix)
        except RepositoryError as e:
            raise InvalidArgument(f"invalid {what}: {e.message}",
                                  field="repository.location") from None
    return prefix


class CloudStore:
    """The plumbing of an ObjectStore on a cloud service, under a key prefix.

    The client is opened on first use (an `__init__` cannot await), so a store can be
    handed straight to `Repository.open_or_create`; `close()` (or leaving `async with
    store`) closes it. A closed store stays closed: using it again is an error rather
    than a silently leaked client.
    """

    # The service's name in metrics and messages ("s3", "azblob").
    service = ""

    def __init__(self, prefix: str, *, prefix_name: str, attempts: int, deadline: float,
                 list_page: int) -> None:
        self.prefix = check_prefix(prefix, prefix_name)
        self._remote = Remote(self.service,
                              policy=RetryPolicy(attempts=attempts, deadline=deadline))
        self._list_page = list_page
        self._client: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    # -- what a store supplies ---------------------------------------------------------

    @property
    def location(self) -> str:
        raise NotImplementedError

    async def _connect(self, stack: contextlib.AsyncExitStack) -> Any:
        """Opens the client (its resources on `stack`) and checks that the store's
        container exists and may be listed; returns the client."""
        raise NotImplementedError

    def _error(self, exc: BaseException, op: str, what: str, key: str) -> DRError:
        """Our error for a failed call, in the terms an operator acts on."""
        raise NotImplementedError

    def _missing(self, exc: BaseException) -> bool:
        """Whether a call failed because its object does not exist (the container or
        bucket itself missing is an error, not this)."""
        raise NotImplementedError

    async def _page(self, client: Any, prefix: str, token: str
                    ) -> tuple[list[tuple[str, float, int]], str]:
        """One page of the names under the full `prefix` from `token` ("": the first):
        (name, mtime, size) in key order, and the next page's token ("" at the end)."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------

    def __repr__(self) -> str:
        # Never the settings: they may hold keys.
        return f"{type(self).__name__}({self.location!r})"

    async def __aenter__(self):  # type: ignore[no-untyped-def]
        await self._open()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def list(self, prefix: str) -> AsyncIterator[str]:
        async for info in self.list_info(prefix):
            yield info.key

    async def list_info(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        if prefix.startswith("/"):
            raise RepositoryError(f"invalid prefix {prefix!r}: it must be relative")
        head, _, _ = prefix.rpartition("/")
        if head:
            check_key(head)
        base = f"{self.prefix}/" if self.prefix else ""
        token = ""
        while True:
            # One page per call, so a retry repeats only the page that failed.
            page, token = await self._call(
                "list", f"list objects under {base + prefix!r} in {self._where()}",
                lambda c, t=token: self._page(c, base + prefix, t))
            for name, mtime, size in page:
                key = name[len(base):]
                # Objects the repository could not have written (another tool's keys
                # under our prefix) are not ours: `get` would refuse their names.
                try:
                    check_key(key)
                except RepositoryError:
                    continue
                yield ObjectInfo(key, mtime, size)
            if not token:
                return

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def sync(self) -> None:
        # A put that returned success is durable in both services: nothing to flush.
        return None

    def _where(self) -> str:
        """What messages name as the store's place: "bucket b", "container c of ..."."""
        return self.location

    def _name(self, key: str) -> str:
        """The service's object name of repository key `key`."""
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    async def _unless_missing(self, call: Awaitable[T], missing: U) -> T | U:
        """`await call`, or `missing` if its object does not exist: what exists, touch,
        delete and delete_if_older answer for a missing object, not an error."""
        try:
            return await call
        except Exception as exc:
            if self._missing(exc):
                return missing
            raise

    async def _get_checked(self, key: str, what: str,
                           fn: Callable[[Any], Awaitable[bytes]]) -> bytes:
        """`_call("get", ...)`, with a body that failed its checksum read after read
        reported as a corrupt object."""
        try:
            return await self._call("get", what, fn, key=key)
        except ChecksumMismatch as e:
            err = CorruptData(f"object {self._name(key)} in {self._where()} does not match "
                              f"its stored checksum, read after read ({e.message})")
            err.reason = "corrupt-object"
            raise err from None

    async def _open(self) -> Any:
        async with self._lock:
            if self._closed:
                raise RepositoryError(f"{self!r} is closed")
            if self._client is not None:
                return self._client
            stack = contextlib.AsyncExitStack()
            try:
                c = await self._connect(stack)
            except BaseException:
                await stack.aclose()
                raise
            self._stack, self._client = stack, c
            return c

    async def _call(self, op: str, what: str, fn: Callable[[Any], Awaitable[T]], *,
                    key: str = "") -> T:
        c = await self._open()
        return await self._attempt(op, what, lambda: fn(c), key=key)

    async def _attempt(self, op: str, what: str, fn: Callable[[], Awaitable[T]], *,
                       key: str = "") -> T:
        async def once() -> T:
            try:
                return await fn()
            except DRError:
                raise
            except Exception as exc:
                raise self._error(exc, op, what, key) from exc

        return await self._remote.call(op, once)
