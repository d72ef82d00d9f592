"""ObjectStore wrappers for engine tests: what the engine put, how much was in flight,
and faults (latency, throttling, a node that dies) at chosen chunk puts."""

from __future__ import annotations

import asyncio

from dr_common.errors import Throttled
from dr_common.remote import Remote
from dr_common.repository import FsStore


class Instrumented:
    """An ObjectStore wrapper that records chunk puts, bytes in flight and their peak,
    and can add latency, throttle, or "die" at the n-th chunk put. Chunk puts go through
    the remote-call layer, as a remote store's do (it retries throttled puts and tells
    the engine's limiter)."""

    def __init__(self, inner: FsStore, *, delay: float = 0.0, die_at: int | None = None):
        self.inner = inner
        self.delay = delay
        self.die_at = die_at
        self.throttle_every = 0
        self.chunk_puts: list[str] = []
        self.inflight = 0
        self.peak_inflight = 0
        self.puts = 0
        self.remote = Remote("t-instrumented")

    async def put(self, key, data, *, if_absent=False):
        if not key.startswith("chunks/"):
            return await self.inner.put(key, data, if_absent=if_absent)
        return await self.remote.call("put", lambda: self._put(key, data, if_absent))

    async def _put(self, key, data, if_absent):
        self.puts += 1
        if self.die_at is not None and self.puts >= self.die_at:
            raise RuntimeError("node killed")
        if self.throttle_every and self.puts % self.throttle_every == 0:
            raise Throttled("SlowDown: reduce your request rate")
        self.inflight += len(data)
        self.peak_inflight = max(self.peak_inflight, self.inflight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            stored = await self.inner.put(key, data, if_absent=if_absent)
            self.chunk_puts.append(key)
            return stored
        finally:
            self.inflight -= len(data)

    async def sync(self):
        # These tests kill a process, not the machine: the page cache survives, and a
        # slow syncfs (a busy disk) must not decide whether a checkpoint was reported.
        return None

    def __getattr__(self, name):
        return getattr(self.inner, name)
