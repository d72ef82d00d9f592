"""Pull-based flow control of one disk stream between paired nodes (DESIGN section 2).

The target node grants credits; the source node never has more chunk bytes on the
wire or in the target's hands than granted. A grant is a *cumulative* limit: "you may
have sent this many bytes in total on this stream". Cumulative limits survive
reordering and need no bookkeeping of individual grants: the source compares its
running total with the newest limit, and the target can check every chunk it receives
against the largest limit it has granted.

The target extends the limit as its writes complete, to `completed + window`, where
the window adapts to its write latency and errors (additive increase, multiplicative
decrease, as towards any target: dr_node.adaptive) within the configured bounds
(DESIGN: 32 MiB adapted between 16 and 64 MiB), and within the stream's share of the
target node's byte budget (budget / open streams, at least one chunk): so that what
the node promises its sources fits in the memory it may hold for them, and received
chunks do not wait for the budget. A grant is never taken back: a window that shrinks
shows as later grants that grow more slowly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from dr_common.errors import DRError
from dr_node.adaptive import AdaptiveLimiter


class CreditViolation(DRError):
    """The source sent beyond the credits granted: a protocol error, never retried as-is."""

    reason = "credit-violation"


class CreditWindow:
    """The target node's side: how much it granted, received and completed."""

    def __init__(self, name: str, *, chunk_bytes: int, window_bytes: int,
                 min_window_bytes: int, max_window_bytes: int,
                 share: Callable[[], int] | None = None):
        """`chunk_bytes`: the largest encoded chunk; the window is a whole number of them,
        at least one. `share()`: the bytes this stream may have promised at once, its
        part of the node's byte budget (None: the window alone bounds it)."""
        self._share = share
        chunks = lambda n: max(1, n // chunk_bytes)  # noqa: E731 - the window in chunks
        self.chunk_bytes = chunk_bytes
        self._limiter = AdaptiveLimiter(name, initial=chunks(window_bytes),
                                        minimum=chunks(min_window_bytes),
                                        maximum=max(chunks(max_window_bytes),
                                                    chunks(min_window_bytes)))
        self.received = 0
        self.completed = 0
        self.limit = self.span()
        # The most bytes ever received and not yet completed: never above the largest
        # window (tests assert it).
        self.peak_outstanding = 0

    @property
    def window_bytes(self) -> int:
        return int(self._limiter.limit) * self.chunk_bytes

    def span(self) -> int:
        """Bytes beyond those completed that the next grant allows."""
        span = self.window_bytes
        if self._share is not None:
            span = min(span, max(self.chunk_bytes, self._share()))
        return span

    def receive(self, n: int) -> None:
        self.received += n
        if self.received > self.limit:
            raise CreditViolation(
                f"the source node sent {self.received} bytes on this stream; only "
                f"{self.limit} were granted")
        self.peak_outstanding = max(self.peak_outstanding, self.received - self.completed)

    def complete(self, n: int, *, latency: float, throttled: bool = False) -> int:
        """A received chunk is written (or rejected): frees its bytes; returns the new limit."""
        if throttled:
            self._limiter.on_throttle()
        else:
            self._limiter.on_success(latency)
        self.completed += n
        self.limit = max(self.limit, self.completed + self.span())
        return self.limit


class CreditGate:
    """The source node's side: waits for credits before each chunk goes out."""

    def __init__(self, limit: int = 0):
        self.limit = limit
        self.sent = 0
        self.acked = 0
        self.peak_inflight = 0
        # Chunks that had to wait for credits: the target, not the source, set the pace.
        self.waits = 0
        self._changed = asyncio.Condition()
        self._broken: BaseException | None = None

    @property
    def available(self) -> int:
        return max(0, self.limit - self.sent)

    async def take(self, n: int) -> None:
        """Waits until `n` more bytes fit under the limit, then counts them as sent.
        (The target's window is at least one encoded chunk, so every chunk fits.)"""
        async with self._changed:
            if self.sent + n > self.limit:
                self.waits += 1
            await self._changed.wait_for(
                lambda: self._broken is not None or self.sent + n <= self.limit)
            if self._broken is not None:
                raise self._broken
            self.sent += n
            self.peak_inflight = max(self.peak_inflight, self.sent - self.acked)

    async def grant(self, limit: int, acked: int = 0) -> None:
        async with self._changed:
            self.limit = max(self.limit, limit)
            self.acked += acked
            self._changed.notify_all()

    async def break_(self, exc: BaseException) -> None:
        async with self._changed:
            self._broken = exc
            self._changed.notify_all()
