"""Block tokens of EBS direct reads: kept in a bounded cache of listing pages, re-listed
before they expire (see the package docstring)."""

from __future__ import annotations

import bisect
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import structlog


log = structlog.get_logger()
T = TypeVar("T")

# engine's window is far smaller than the 10 GiB of disk they cover.
_TOKEN_CACHE = 20_000
# A page is re-listed before its tokens expire: at 80 % of their lifetime, and at the
# latest this long before expiry (clocks differ a little; a fetch takes time).
_EXPIRY_MARGIN = 300.0
# A block whose bytes do not match its checksum is fetched again this many times


ABSENT = ""  # the block is not in the snapshot: never written, reads as zeros


@dataclass
class Page:
    """Tokens of one listing page, covering blocks [start, end).

    `exhaustive`: a block of the range without a token is absent from the snapshot
    (ListSnapshotBlocks). A ListChangedBlocks page is not: its missing blocks are
    merely unchanged, and their tokens must be listed when needed."""

    start: int
    end: int
    tokens: dict[int, str]
    exhaustive: bool
    refresh_at: float  # time.time() after which its tokens are re-listed


def refresh_at(expiry: datetime | None, listed_at: float) -> float:
    if expiry is None:
        return float("inf")
    expires = expiry.timestamp()
    return expires - min(_EXPIRY_MARGIN, max(0.0, expires - listed_at) * 0.2)


class TokenCache:
    """Non-overlapping listing pages, least recently used evicted beyond `capacity`
    tokens. Used from the event loop thread only."""

    def __init__(self, capacity: int = _TOKEN_CACHE):
        self.capacity = capacity
        self._pages: OrderedDict[int, Page] = OrderedDict()  # by start, in LRU order
        self._starts: list[int] = []  # sorted
        self._count = 0

    def lookup(self, index: int) -> str | None:
        """The token of block `index`, ABSENT, or None (not known, or about to expire)."""
        i = bisect.bisect_right(self._starts, index) - 1
        if i < 0:
            return None
        page = self._pages[self._starts[i]]
        if index >= page.end or time.time() >= page.refresh_at:
            return None
        self._pages.move_to_end(page.start)
        token = page.tokens.get(index)
        if token is not None:
            return token
        return ABSENT if page.exhaustive else None

    def full(self) -> bool:
        return self._count >= self.capacity

    def add(self, page: Page) -> None:
        for start in [s for s in self._starts if s < page.end and self._pages[s].end > page.start]:
            self._remove(start)
        self._pages[page.start] = page
        bisect.insort(self._starts, page.start)
        self._count += len(page.tokens)
        while self._count > self.capacity and len(self._pages) > 1:
            self._remove(next(iter(self._pages)))

    def forget(self, index: int) -> None:
        """Drops the page holding `index` (its token was refused)."""
        i = bisect.bisect_right(self._starts, index) - 1
        if i >= 0 and index < self._pages[self._starts[i]].end:
            self._remove(self._starts[i])

    def _remove(self, start: int) -> None:
        page = self._pages.pop(start)
        del self._starts[bisect.bisect_left(self._starts, start)]
        self._count -= len(page.tokens)


# --- the disk ---------------------------------------------------------------------------


