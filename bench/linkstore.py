"""P4's slow target: an ObjectStore wrapper that models a WAN link in user space
(this kernel has no netem).

Every request (get, put, exists, delete, list) pays `latency` seconds (asyncio.sleep).
Payload bytes (put data, get results) then cross a single shared link of `rate`
bytes/s, modelled as a FIFO wire: a transfer starts when the wire is free and takes
len/rate seconds, so requests in flight queue for bandwidth like on a real link and
their latency rises once the offered load exceeds the cap. Everything else is delegated
to the wrapped store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator


class LinkStore:
    def __init__(self, inner, *, latency: float = 0.040, rate: float = 100e6):
        self.inner = inner
        self.latency = latency
        self.rate = rate
        self._wire_free = 0.0  # monotonic time at which the wire is next idle
        self.requests = 0
        self.bytes = 0
        self.queue_seconds = 0.0  # total time transfers waited for the wire
        self.puts = 0
        self.put_seconds = 0.0  # total put latency as the caller sees it
        self.max_put_seconds = 0.0

    def __repr__(self) -> str:
        return f"LinkStore({self.inner!r}, latency={self.latency}, rate={self.rate})"

    def __getattr__(self, name):
        # Anything beyond the Protocol (root, sync, ...) goes to the wrapped store.
        return getattr(self.inner, name)

    async def _request(self, nbytes: int) -> None:
        self.requests += 1
        await asyncio.sleep(self.latency)
        if nbytes:
            now = time.monotonic()
            start = max(now, self._wire_free)
            self._wire_free = start + nbytes / self.rate
            self.queue_seconds += start - now
            self.bytes += nbytes
            await asyncio.sleep(self._wire_free - now)

    async def get(self, key: str) -> bytes:
        data = await self.inner.get(key)
        await self._request(len(data))
        return data

    async def put(self, key: str, data, *, if_absent: bool = False) -> bool:
        t0 = time.monotonic()
        await self._request(len(data))
        ok = await self.inner.put(key, data, if_absent=if_absent)
        took = time.monotonic() - t0
        self.puts += 1
        self.put_seconds += took
        self.max_put_seconds = max(self.max_put_seconds, took)
        return ok

    async def exists(self, key: str) -> bool:
        await self._request(0)
        return await self.inner.exists(key)

    async def delete(self, key: str) -> None:
        await self._request(0)
        await self.inner.delete(key)

    async def list(self, prefix: str) -> AsyncIterator[str]:
        await self._request(0)
        async for key in self.inner.list(prefix):
            yield key

    async def close(self) -> None:
        await self.inner.close()

    async def sync(self) -> None:
        fn = getattr(self.inner, "sync", None)
        if fn is not None:
            await fn()
