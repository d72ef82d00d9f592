"""Prometheus counters of target calls, and `call()`: one retried, counted target call.

Every adapter that talks to remote storage (the `s3` and `ebs` targets, the `aws`
source) makes its calls through `call()`, so they are all retried the same way
(`dr_common.retry`: throttling until the deadline, other retryable errors a few
times, the rest at once) and all show up in the same three counters, labelled by
target ("s3", "ebs", ...) and operation ("put", "get", ...).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import Counter

from dr_common.retry import retry

T = TypeVar("T")

# One sample per attempt, so retries and throttling are visible as non-"ok" outcomes.
# The outcome is "ok" or the error's `reason` (a small, stable set: throttled,
# target-unavailable, access-denied, object-missing, ...), which bounds the label's values.
TARGET_REQUESTS = Counter("dr_target_requests_total",
                          "Requests to target storage, per attempt, by outcome",
                          ["target", "op", "outcome"])
TARGET_RETRIES = Counter("dr_target_retries_total",
                         "Target requests tried again after a retryable failure or throttling",
                         ["target", "op"])
TARGET_THROTTLES = Counter("dr_target_throttles_total",
                           "Throttling answers from target storage (SlowDown, 429, ...)",
                           ["target", "op"])


async def call(target: str, op: str, fn: Callable[[], Awaitable[T]], *, attempts: int = 5,
               deadline: float = 120.0) -> T:
    """`await fn()`, retried with `dr_common.retry.retry` and counted.

    `fn` must raise our errors (`DRError`: map AWS exceptions with
    `dr_common.aws.calling`), whose `retryable` and `reason` decide what is retried;
    `fn` is called again on each retry, so it must be idempotent.
    """
    async def attempt() -> T:
        try:
            result = await fn()
        except Exception as exc:
            reason = str(getattr(exc, "reason", "") or "error")
            TARGET_REQUESTS.labels(target, op, reason).inc()
            if reason == "throttled":
                TARGET_THROTTLES.labels(target, op).inc()
            raise
        TARGET_REQUESTS.labels(target, op, "ok").inc()
        return result

    def on_retry(exc: BaseException, tries: int) -> None:
        TARGET_RETRIES.labels(target, op).inc()

    return await retry(attempt, attempts=attempts, deadline=deadline, on_retry=on_retry)
