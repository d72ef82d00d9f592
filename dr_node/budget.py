"""The node-level byte budget: an async weighted semaphore over bytes held in memory.

Readers acquire a chunk's bytes before reading it and release them when the chunk is
durable at the target, so the node's memory is bounded by configuration, never by disk
size or disk count. Waiters are served in FIFO order: a large request is not starved by
a stream of small ones, and disks share the budget fairly.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time

from dr_node import metrics


class ByteBudget:
    def __init__(self, capacity: int):
        if capacity <= 0:
            raise ValueError("budget capacity must be positive")
        self.capacity = capacity
        self.used = 0
        self.peak = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future]] = collections.deque()

    async def acquire(self, n: int) -> int:
        """Takes `n` bytes (at most the capacity); returns what was taken."""
        n = min(n, self.capacity)
        if not self._waiters and self.used + n <= self.capacity:
            self._take(n)
            return n
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        start = time.monotonic()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(n)  # granted just as we were cancelled: give it back
            else:
                self._waiters.remove((n, fut))
                self._wake()
            raise
        metrics.BUDGET_WAIT.observe(time.monotonic() - start)
        return n

    @property
    def pressure(self) -> float:
        """0..1: the share of the budget in use; 1 while readers wait for it. Reported
        in heartbeats, so the control plane sends work to less loaded nodes first."""
        if self._waiters:
            return 1.0
        return min(1.0, self.used / self.capacity)

    def release(self, n: int) -> None:
        self.used -= n
        metrics.BUDGET_USED.set(self.used)
        self._wake()

    @contextlib.asynccontextmanager
    async def hold(self, n: int):
        taken = await self.acquire(n)
        try:
            yield
        finally:
            self.release(taken)

    def _take(self, n: int) -> None:
        self.used += n
        self.peak = max(self.peak, self.used)
        metrics.BUDGET_USED.set(self.used)

    def _wake(self) -> None:
        while self._waiters and self.used + self._waiters[0][0] <= self.capacity:
            n, fut = self._waiters.popleft()
            if not fut.done():
                self._take(n)
                fut.set_result(None)
