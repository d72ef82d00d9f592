"""Adaptive concurrency towards one target: additive increase, multiplicative decrease.

The limit grows by about one request per round trip while latency holds near the best
seen recently, and is cut when the target throttles us (x0.5) or when latency inflates
beyond `tolerance` times that baseline (x0.9): queues building up at the target (or on
the link to it) show as latency before they show as errors. Decreases happen at most
once per `cooldown` completions, so one burst of slow answers — all caused by the same
overload — counts once, not once per request in flight.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time

from dr_node import metrics

# Samples kept for the latency baseline: enough to ride out a few slow answers,
# few enough to follow a target whose latency really changed.
_BASELINE_SAMPLES = 200
# Latencies below this are noise (scheduling, not the target): never call them inflated.
_LATENCY_FLOOR = 0.002


class AdaptiveLimiter:
    def __init__(self, name: str, *, initial: float = 4, minimum: float = 1,
                 maximum: float = 64, tolerance: float = 2.0):
        if not 1 <= minimum <= maximum:
            raise ValueError("need 1 <= minimum <= maximum")
        self.name = name
        self.minimum, self.maximum, self.tolerance = minimum, maximum, tolerance
        self.limit = float(min(max(initial, minimum), maximum))
        self.in_flight = 0
        self.throttles = 0
        self.history: list[tuple[float, float]] = [(time.monotonic(), self.limit)]
        self._latencies: collections.deque[float] = collections.deque(maxlen=_BASELINE_SAMPLES)
        self._since_decrease = 0
        self._changed = asyncio.Event()
        metrics.TARGET_CONCURRENCY.labels(target=name).set(self.limit)

    @contextlib.asynccontextmanager
    async def slot(self):
        """Holds one request slot; the body's latency and outcome adjust the limit."""
        while self.in_flight >= int(self.limit):
            self._changed.clear()
            await self._changed.wait()
        self.in_flight += 1
        start = time.monotonic()
        try:
            yield
        except Exception as exc:
            if getattr(exc, "reason", "") == "throttled":
                self.on_throttle()
            raise
        else:
            self.on_success(time.monotonic() - start)
        finally:
            self.in_flight -= 1
            self._changed.set()

    def on_success(self, latency: float) -> None:
        self._since_decrease += 1
        self._latencies.append(latency)
        baseline = max(min(self._latencies), _LATENCY_FLOOR)
        if latency > self.tolerance * baseline and len(self._latencies) >= 8:
            self._decrease(0.9)
        else:
            self._set(self.limit + 1.0 / self.limit)

    def on_throttle(self) -> None:
        self.throttles += 1
        metrics.THROTTLES.labels(target=self.name).inc()
        self._decrease(0.5)

    def _decrease(self, factor: float) -> None:
        if self._since_decrease < max(int(self.limit), 1):
            return  # the same overload, already answered
        self._since_decrease = 0
        self._set(self.limit * factor)

    def _set(self, value: float) -> None:
        value = min(max(value, self.minimum), self.maximum)
        if int(value) != int(self.limit):
            self.history.append((time.monotonic(), value))
            metrics.TARGET_CONCURRENCY.labels(target=self.name).set(value)
        self.limit = value
        self._changed.set()
