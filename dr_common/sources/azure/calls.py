"""The azure source's remote calls: one `Remote` for Resource Manager (snapshots,
access grants, inventory) and one for Storage (page lists and reads through a SAS)."""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable
from typing import Any, TypeVar

from dr_common.azure import errors, wait
from dr_common.remote import Remote

T = TypeVar("T")

# ARM allows about 12,000 reads and 1,200 writes an hour per subscription and principal:
# a few calls at a time is plenty for snapshots and grants.
ARM = Remote("azure-source-arm", concurrency=8, errors=errors(source=True))
STORAGE = Remote("azure-source", errors=errors(source=True))


async def arm(op: str, fn: Callable[[], Awaitable[T]], what: str) -> T:
    """One ARM call (a long-running operation counts as one: start and polling)."""
    return await ARM.call(op, fn, what=what)


async def operation(op: str, start: Callable[[], Awaitable[Any]], what: str) -> Any:
    """A long-running ARM operation, started and waited for (`start` begins it)."""
    return await ARM.call(op, lambda: wait(start()), what=what)


async def listed(op: str, pager: Callable[[], AsyncIterable[T]], what: str) -> list[T]:
    """Every item of an ARM listing (all pages; retried as a whole)."""
    async def collect() -> list[T]:
        return [item async for item in pager()]
    return await ARM.call(op, collect, what=what)
