"""Retries with jittered exponential backoff and a deadline.

Only errors that say they are retryable (`DRError.retryable`, or the predicate given)
are retried; writes we retry must be idempotent, which every target write is (chunks
are named by their content; conditional puts make the last write idempotent).

Throttling (`reason == "throttled"`) is the target asking us to slow down, not a
failure: it is retried until the deadline, without using up `attempts`, which bound
retries of real errors.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def _retryable(exc: BaseException) -> bool:
    return bool(getattr(exc, "retryable", False))


async def retry(fn: Callable[[], Awaitable[T]], *, attempts: int = 5, base: float = 0.05,
                cap: float = 5.0, deadline: float = 120.0,
                retryable: Callable[[BaseException], bool] = _retryable,
                on_retry: Callable[[BaseException, int], None] | None = None) -> T:
    start = time.monotonic()
    failures = 0
    tries = 0
    while True:
        tries += 1
        try:
            return await fn()
        except Exception as exc:
            throttled = getattr(exc, "reason", "") == "throttled"
            if not throttled:
                failures += 1
            if not retryable(exc) or failures >= attempts:
                raise
            # "Full jitter": spreads retries of many chunks so they do not hit the
            # target again in lock-step.
            delay = random.uniform(0, min(cap, base * 2 ** min(tries, 16)))
            if time.monotonic() - start + delay > deadline:
                raise
            if on_retry is not None:
                on_retry(exc, tries)
            await asyncio.sleep(delay)
