"""A token bucket over bytes sent: the bandwidth cap of a node or of a plan.

The rate can change while transfers run (`set_rate`); 0 means unlimited. Requests
are served in arrival order (a lock), so one disk cannot starve the others of tokens.
"""

from __future__ import annotations

import asyncio
import time

# Tokens may accumulate for this long while idle: short bursts pass at full speed,
# but an idle hour does not turn into an uncapped minute.
_BURST_SECONDS = 0.25


class TokenBucket:
    def __init__(self, rate: float = 0):
        self.rate = float(rate)
        self._tokens = 0.0
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def set_rate(self, rate: float) -> None:
        self._refill()
        self.rate = float(rate)

    def _refill(self) -> None:
        now = time.monotonic()
        if self.rate > 0:
            self._tokens = min(self._tokens + (now - self._stamp) * self.rate,
                               self.rate * _BURST_SECONDS)
        self._stamp = now

    async def consume(self, n: int) -> None:
        if self.rate <= 0:
            return
        async with self._lock:
            self._refill()
            self._tokens -= n
            # Going into debt and sleeping it off lets requests larger than the burst
            # through, at the average rate.
            while self._tokens < 0 and self.rate > 0:
                await asyncio.sleep(-self._tokens / self.rate)
                self._refill()
