"""Adaptive concurrency towards one target: additive increase, multiplicative decrease.

The limit grows by about one request per round trip while latency holds near the
target's unloaded latency, and is cut when the target throttles us (x0.5) or when
latency inflates beyond `tolerance` times that baseline plus a small slack (x0.9):
queues building up at the target (or on the link to it) show as latency before they
show as errors. Decreases happen at most once per `limit` completions, so one burst of
slow answers — all caused by the same overload — counts once, not once per request in
flight.

The baseline is the lowest latency seen, allowed to creep up slowly (1 %/s). A minimum
over recent samples would not do: once a queue stands, every recent sample includes it,
the queue becomes the baseline and is never seen again (TCP Vegas keeps its base RTT
for the same reason).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

from dr_common import remote
from dr_node import metrics

# How fast the baseline may rise per second: a target whose unloaded latency really
# grew (a route change) is believed within minutes; a standing queue is not.
_BASELINE_CREEP = 0.01
# Absolute slack on top of `tolerance` x baseline: variations of a few milliseconds are
# scheduling and disk noise on a fast local target, not a queue at the target.
_LATENCY_SLACK = 0.010


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
        self.baseline: float | None = None
        self._baseline_stamp = time.monotonic()
        self._since_decrease = 0
        self._changed = asyncio.Event()
        metrics.TARGET_CONCURRENCY.labels(target=name).set(self.limit)

    @contextlib.asynccontextmanager
    async def slot(self):
        """Holds one request slot; the body's latency and outcome adjust the limit.

        Throttling arrives as a signal from the remote-call layer (dr_common.remote),
        once per throttled attempt, while that layer retries: the limit is cut at the
        first SlowDown, not only if a write finally fails."""
        while self.in_flight >= int(self.limit):
            self._changed.clear()
            await self._changed.wait()
        self.in_flight += 1
        start = time.monotonic()
        throttles = self.throttles
        try:
            with remote.throttle_listener(self.on_throttle):
                yield
            # A write that got through only after throttling says nothing good about
            # the latency the target can take.
            if self.throttles == throttles:
                self.on_success(time.monotonic() - start)
        finally:
            self.in_flight -= 1
            self._changed.set()

    def on_success(self, latency: float) -> None:
        self._since_decrease += 1
        now = time.monotonic()
        if self.baseline is None:
            self.baseline = latency
        else:
            crept = self.baseline * math.exp(_BASELINE_CREEP * (now - self._baseline_stamp))
            self.baseline = min(latency, crept)
        self._baseline_stamp = now
        if latency > self.tolerance * self.baseline + _LATENCY_SLACK:
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
