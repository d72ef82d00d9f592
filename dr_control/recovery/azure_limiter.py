"""The limiter of recovery's Resource Manager calls against one Azure site.

ARM meters each subscription (per principal and region) with token buckets, and says
how much is left on every answer: `x-ms-ratelimit-remaining-subscription-reads`,
`-writes`, `-deletes` (and per resource provider). When a bucket is empty it answers
429 with `Retry-After`. Every execution against a site shares one `ArmLimiter`
(RecoveryProvider.new_limiter), because the buckets are shared with everything else the
customer runs there:
- at most ARM_CONCURRENCY calls in flight, through the remote-call layer
  (dr_common.remote: retried there and only there, counted as
  `dr_target_requests_total{target="azure-recovery"}` and `dr_target_throttles_total`);
- a 429 holds *every* call of the site back until its `Retry-After` has passed (the
  bucket is the subscription's, not the request's), not only the one that got it;
- a remaining budget at or below RESERVE spaces calls by LOW_BUDGET_SPACING, so one
  recovery does not drain what the customer's own automation needs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from dr_common.azure import azure_error
from dr_common.errors import DRError, Throttled
from dr_common.remote import Remote, RetryPolicy

T = TypeVar("T")

SERVICE = "azure-recovery"
# A handful of ARM calls in flight is far inside the default buckets (writes refill at
# about 10/s per subscription) and keeps a many-VM boot group parallel.
ARM_CONCURRENCY = 6
# A throttled call is tried for this long; throttling does not use up the attempts.
CALL_DEADLINE = 180.0
CALL_ATTEMPTS = 4
# Left in a bucket below which we slow down (Azure's buckets hold hundreds to
# thousands), and how much: a pause per call that lets a bucket refill a little.
RESERVE = 20
LOW_BUDGET_SPACING = 0.5
# A Retry-After longer than this is capped (an ARM answer asking for minutes is rare;
# the retry layer's deadline bounds the call anyway).
MAX_HOLD = 30.0
_REMAINING = "x-ms-ratelimit-remaining-"


class ArmLimiter:
    """`await limiter.call(op, fn, what=...)`: one ARM call through the site's limits.
    Its `call` has Remote's signature, so ManagedDisks takes it as `arm_calls`."""

    def __init__(self, concurrency: int = ARM_CONCURRENCY,
                 policy: RetryPolicy | None = None) -> None:
        self.remote = Remote(SERVICE, concurrency=concurrency,
                             policy=policy or RetryPolicy(attempts=CALL_ATTEMPTS,
                                                          deadline=CALL_DEADLINE))
        self.throttled = 0  # 429s seen, for tests and the execution's log
        self.remaining: dict[str, int] = {}  # "subscription-writes" -> n, the last seen
        self._hold_until = 0.0

    def observe(self, headers: Mapping[str, str]) -> None:
        """Arm's on_response: the budget ARM says is left."""
        for key, value in headers.items():
            k = key.lower()
            if k.startswith(_REMAINING):
                try:
                    self.remaining[k[len(_REMAINING):]] = int(value)
                except ValueError:
                    pass  # not a number: nothing to learn

    def low(self) -> bool:
        return any(n <= RESERVE for n in self.remaining.values())

    async def _gate(self) -> None:
        wait = self._hold_until - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        elif self.low():
            await asyncio.sleep(LOW_BUDGET_SPACING)

    async def call(self, op: str, fn: Callable[[], Awaitable[T]], *, what: str = "",
                   policy: RetryPolicy | None = None) -> T:
        async def attempt() -> T:
            await self._gate()
            try:
                return await fn()
            except Exception as exc:
                err = exc if isinstance(exc, DRError) else azure_error(exc, what or op)
                if isinstance(err, Throttled):
                    self.throttled += 1
                    hold = min(max(err.retry_after, 0.0), MAX_HOLD)
                    self._hold_until = max(self._hold_until, time.monotonic() + hold)
                if err is exc:
                    raise
                raise err from exc
        return await self.remote.call(op, attempt, what=what, policy=policy)

    def stats(self) -> dict[str, Any]:
        return {"throttled": self.throttled, "remaining": dict(self.remaining)}
