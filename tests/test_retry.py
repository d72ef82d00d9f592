"""Retries: attempts bound real errors; throttling is retried until the deadline."""

from __future__ import annotations

import pytest

from dr_common.errors import TargetError, Throttled
from dr_common.remote import RetryPolicy, retry


def _flaky(errors: list[Exception]):
    calls = []

    async def fn():
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return "ok"
    return fn, calls


async def test_throttling_does_not_use_up_attempts():
    fn, calls = _flaky([Throttled("SlowDown")] * 12)
    assert await retry(fn, policy=RetryPolicy(attempts=3, base=0.0001, cap=0.001)) == "ok"
    assert len(calls) == 13


async def test_real_errors_stop_after_attempts():
    fn, calls = _flaky([TargetError("connection reset")] * 5)
    with pytest.raises(TargetError):
        await retry(fn, policy=RetryPolicy(attempts=3, base=0.0001, cap=0.001))
    assert len(calls) == 3


async def test_non_retryable_errors_are_not_retried():
    fn, calls = _flaky([ValueError("bug")])
    with pytest.raises(ValueError):
        await retry(fn, policy=RetryPolicy(base=0.0001))
    assert len(calls) == 1


async def test_deadline_ends_throttling():
    fn, calls = _flaky([Throttled("SlowDown")] * 1000)
    with pytest.raises(Throttled):
        await retry(fn, policy=RetryPolicy(base=0.01, cap=0.02, deadline=0.1, throttles=10_000))
    assert 2 <= len(calls) < 1000


async def test_retry_after_is_honoured():
    # A service that said "come back in 0.2 s" is not asked again sooner, even though
    # our own backoff would have been a millisecond.
    import time
    fn, calls = _flaky([Throttled("busy", retry_after=0.2)])
    start = time.monotonic()
    assert await retry(fn, policy=RetryPolicy(base=0.0001, cap=1.0)) == "ok"
    assert time.monotonic() - start >= 0.2
    assert len(calls) == 2
