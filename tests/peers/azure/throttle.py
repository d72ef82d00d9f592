"""ARM's request budget: a token bucket of reads and one of writes per principal, counted
down in the `x-ms-ratelimit-remaining-subscription-reads` / `-writes` header of every
answer; an empty bucket answers 429 SubscriptionRequestsThrottled with `Retry-After`
(the seconds until one token is back).

Set through /_peer/settings {"arm_budget": {"reads", "writes", "refill_seconds"}}; reset
puts back ARM's documented defaults (12000 reads and 1200 writes an hour). Knowingly
differs: Azure's buckets are per subscription, principal and region, and the header
names the subscription's count; here a subscription has one region, so the per-principal
count is the one shown. Unauthenticated requests are not counted (they never reach the
buckets, as in Azure)."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Budget:
    reads: int = 12000
    writes: int = 1200
    refill_seconds: float = 3600.0  # how long an empty bucket takes to fill again

    def size(self, write: bool) -> int:
        return self.writes if write else self.reads


class Buckets:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.configure({})

    def configure(self, values: dict[str, Any]) -> None:
        unknown = set(values) - {f.name for f in fields(Budget)}
        if unknown:
            raise ValueError(f"unknown arm_budget settings {sorted(unknown)}")
        budget = Budget(**values)
        if budget.reads < 1 or budget.writes < 1 or budget.refill_seconds <= 0:
            raise ValueError("arm_budget needs reads, writes >= 1 and refill_seconds > 0")
        with self.lock:
            self.budget = budget
            self.tokens: dict[tuple[str, bool], tuple[float, float]] = {}  # -> (tokens, when)

    def settings(self) -> dict[str, Any]:
        with self.lock:
            return asdict(self.budget)

    def take(self, principal: str, write: bool) -> tuple[int, int | None]:
        """(remaining after this request, None) or (0, Retry-After seconds) if refused."""
        now = time.monotonic()
        with self.lock:
            size = self.budget.size(write)
            rate = size / self.budget.refill_seconds  # tokens a second
            tokens, then = self.tokens.get((principal, write), (float(size), now))
            tokens = min(float(size), tokens + (now - then) * rate)
            if tokens < 1:
                self.tokens[(principal, write)] = (tokens, now)
                return 0, max(1, math.ceil((1 - tokens) / rate))
            self.tokens[(principal, write)] = (tokens - 1, now)
            return int(tokens - 1), None
