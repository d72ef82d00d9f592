"""The one way a remote call is made: limits, then retry, then metrics, around the raw call.

Every adapter that talks to a remote service — the `s3` and `ebs` targets, the `aws`
source, EC2 recovery — sends each request through a `Remote`, in restic's manner
(`internal/backend/{sema,retry,logger}`: layers around the raw client, not retries
sprinkled over callers):

- **limits**: at most `concurrency` requests in flight to the service (optional: chunk
  writes are bounded from outside by the engine's adaptive limiter; recovery's EC2 calls
  are bounded here). A slot is held for one attempt only, never during a backoff, so a
  throttled request does not block its siblings;
- **retry**: jittered exponential backoff within a deadline. Retryable errors are tried
  `attempts` times; throttling (the service asking us to slow down: SlowDown,
  ThrottlingException, RequestLimitExceeded, 429/503, later Azure's ServerBusy and
  vSphere's busy faults) `throttles` more times, and *each throttled answer is signalled*
  to the caller's adaptive limiter (`throttle_listener`) as it happens, so the engine
  cuts its concurrency at the first SlowDown instead of after the retries gave up;
- **metrics**: one sample per attempt, by service, operation and outcome.

A call is retried here and nowhere else: the engine does not retry a chunk write, tasks
do not retry their calls (a failed task is retried as a whole by the control plane,
from its checkpoint). The raw call must raise `DRError`s (give `errors` to map the
client's exceptions); `retryable` and `reason == "throttled"` decide what is tried again,
so every request sent through here must be idempotent — every target write is (chunks
are named by their content; conditional puts make the last write idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import Counter

from dr_common.errors import DRError

T = TypeVar("T")

# One sample per attempt, so retries and throttling show as non-"ok" outcomes. The
# outcome is "ok" or the error's `reason` (a small, stable set: throttled,
# target-unavailable, access-denied, object-missing, ...), which bounds the label's values.
# The `target` label is the service ("s3", "ebs", "ebs-source", "ec2-recovery", ...).
REQUESTS = Counter("dr_target_requests_total",
                   "Requests to remote services, per attempt, by outcome",
                   ["target", "op", "outcome"])
RETRIES = Counter("dr_target_retries_total",
                  "Remote requests tried again after a retryable failure or throttling",
                  ["target", "op"])
THROTTLES = Counter("dr_target_throttles_total",
                    "Throttling answers from remote services (SlowDown, 429, ...)",
                    ["target", "op"])


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long one call is tried.

    The defaults: five tries ride out a connection reset or a 500 (a second in all with
    the backoff); sixteen more for throttling, because a service that throttles wants
    the same request later, not never, while the adaptive limiter brings our rate down;
    two minutes in all, after which the task fails and resumes from its checkpoint.
    """

    attempts: int = 5
    throttles: int = 16
    deadline: float = 120.0
    base: float = 0.05
    cap: float = 5.0

    @property
    def max_tries(self) -> int:
        """The most times one call is ever sent."""
        return self.attempts + self.throttles


DEFAULT_POLICY = RetryPolicy()

# The adaptive limiter of the caller, if any (set around a chunk write by
# dr_node.adaptive): told of every throttled attempt below it.
_throttle_listener: contextvars.ContextVar[Callable[[], None] | None] = \
    contextvars.ContextVar("dr_throttle_listener", default=None)


@contextlib.contextmanager
def throttle_listener(listener: Callable[[], None]) -> Iterator[None]:
    """Within the block (and tasks it starts), every throttled attempt of a remote call
    calls `listener()` — the engine's adaptive limiter, cutting its concurrency."""
    token = _throttle_listener.set(listener)
    try:
        yield
    finally:
        _throttle_listener.reset(token)


def _throttled(exc: BaseException) -> bool:
    return getattr(exc, "reason", "") == "throttled"


def _retryable(exc: BaseException) -> bool:
    return bool(getattr(exc, "retryable", False))


async def retry(fn: Callable[[], Awaitable[T]], *, policy: RetryPolicy = DEFAULT_POLICY,
                retryable: Callable[[BaseException], bool] = _retryable,
                on_retry: Callable[[BaseException, int], None] | None = None) -> T:
    """`await fn()`, tried again as `policy` allows (the retry layer alone)."""
    start = time.monotonic()
    failures = throttles = tries = 0
    while True:
        tries += 1
        try:
            return await fn()
        except Exception as exc:
            if _throttled(exc):
                throttles += 1
                listener = _throttle_listener.get()
                if listener is not None:
                    listener()
                exhausted = throttles > policy.throttles
            else:
                failures += 1
                exhausted = failures >= policy.attempts
            if not retryable(exc) or exhausted:
                raise
            # "Full jitter": spreads retries of many requests so they do not hit the
            # service again in lock-step.
            delay = random.uniform(0, min(policy.cap, policy.base * 2 ** min(tries, 16)))
            # A service that said when to come back (Retry-After) is not asked sooner.
            delay = max(delay, min(getattr(exc, "retry_after", 0.0), policy.cap))
            if time.monotonic() - start + delay > policy.deadline:
                raise
            if on_retry is not None:
                on_retry(exc, tries)
            await asyncio.sleep(delay)


class Remote:
    """Requests to one remote service: `await remote.call(op, fn)`.

    `service` labels the metrics; `concurrency` (0: unbounded) is the limits layer;
    `errors(exc, what)` maps the client's exceptions to `DRError`s (default: they must
    already be). One `Remote` is shared by everything that calls the same service with
    the same limits (e.g. all EC2 calls of one recovery provider).
    """

    def __init__(self, service: str, *, policy: RetryPolicy = DEFAULT_POLICY,
                 concurrency: int = 0,
                 errors: Callable[[Exception, str], DRError] | None = None) -> None:
        self.service = service
        self.policy = policy
        self._slots = asyncio.Semaphore(concurrency) if concurrency else None
        self._errors = errors

    async def call(self, op: str, fn: Callable[[], Awaitable[T]], *, what: str = "",
                   policy: RetryPolicy | None = None) -> T:
        """`await fn()` through the layers; `fn` makes one attempt and is called again
        for each retry. `what` says what the call does, for the error ("put block 7 of
        snap-1"); `policy` overrides the service's for this call."""
        service = self.service

        async def attempt() -> T:
            try:
                if self._slots is None:
                    result = await fn()
                else:
                    async with self._slots:
                        result = await fn()
            except Exception as exc:
                err = exc
                if self._errors is not None and not isinstance(exc, DRError):
                    err = self._errors(exc, what or op)
                reason = str(getattr(err, "reason", "") or "error")
                REQUESTS.labels(service, op, reason).inc()
                if reason == "throttled":
                    THROTTLES.labels(service, op).inc()
                if err is exc:
                    raise
                raise err from exc
            REQUESTS.labels(service, op, "ok").inc()
            return result

        def on_retry(exc: BaseException, tries: int) -> None:
            RETRIES.labels(service, op).inc()

        return await retry(attempt, policy=policy or self.policy, on_retry=on_retry)
