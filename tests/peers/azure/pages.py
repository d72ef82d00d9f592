"""Which pages of a managed disk hold data, and when each was last written: the change
journal the Storage front answers Get Page Ranges from (Azurite holds the bytes).

A disk's journal is a list of runs (start, end, seq): bytes [start, end) were last written
by the write with sequence number `seq`, drawn from one clock for the whole peer. A
snapshot freezes a copy of its disk's runs and the clock's value at that moment, so

  pages written since snapshot P, as of T = T's runs with seq > P.seq
  pages cleared since P, as of T          = P's valid bytes that T does not hold

which is exact for any two snapshots of one disk (adjacent or not), counts a rewrite with
identical bytes as a change (Azure's diff does), and costs O(runs), not O(disk size)."""

from __future__ import annotations

import bisect
import itertools
import threading
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

PAGE = 512  # page blobs are written and cleared in 512-byte pages

Run = tuple[int, int, int]  # start, end (exclusive), seq
Span = tuple[int, int]  # start, end (exclusive)

_clock = itertools.count(1)
_clock_lock = threading.Lock()


def tick() -> int:
    """The next sequence number: later writes and snapshots get larger ones."""
    with _clock_lock:
        return next(_clock)


@dataclass
class Journal:
    """The runs of one disk (or the frozen runs of one snapshot)."""

    runs: list[Run] = field(default_factory=list)

    def write(self, start: int, end: int, seq: int) -> None:
        i = self._cut(start, end)
        self.runs.insert(i, (start, end, seq))

    def clear(self, start: int, end: int) -> None:
        self._cut(start, end)

    def copy(self) -> Journal:
        return Journal(list(self.runs))

    def valid(self) -> list[Span]:
        return merge((s, e) for s, e, _ in self.runs)

    def written_after(self, seq: int) -> list[Span]:
        return merge((s, e) for s, e, q in self.runs if q > seq)

    def _cut(self, start: int, end: int) -> int:
        """Removes [start, end) from the runs (splitting runs it crosses); returns the
        index where a run starting at `start` belongs."""
        runs = self.runs
        i = bisect.bisect_left(runs, (start,))
        if i > 0 and runs[i - 1][1] > start:
            i -= 1
        kept: list[Run] = []
        j = i
        while j < len(runs) and runs[j][0] < end:
            s, e, q = runs[j]
            if s < start:
                kept.append((s, start, q))
            if e > end:
                kept.append((end, e, q))
            j += 1
        runs[i:j] = kept
        return i + (1 if kept and kept[0][0] < start else 0)


def merge(spans) -> list[Span]:
    """Sorted spans with touching or overlapping ones joined (Azure merges adjacent
    ranges in its answers; Azurite does not)."""
    out: list[Span] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def subtract(spans: list[Span], minus: list[Span]) -> list[Span]:
    """Parts of sorted `spans` outside sorted, merged `minus`."""
    out: list[Span] = []
    for s, e in spans:
        i = bisect.bisect_right(minus, (s, float("inf"))) - 1
        i = max(i, 0)
        cur = s
        while i < len(minus) and minus[i][0] < e:
            ms, me = minus[i]
            if me > cur:
                if ms > cur:
                    out.append((cur, ms))
                cur = max(cur, me)
            i += 1
        if cur < e:
            out.append((cur, e))
    return merge(out)


def clip(spans: list[Span], start: int, end: int) -> list[Span]:
    return [(max(s, start), min(e, end)) for s, e in spans if e > start and s < end]


def diff(target: Journal, previous: Journal, previous_seq: int) -> tuple[list[Span], list[Span]]:
    """(changed, cleared) of `target` since the snapshot `previous` taken at `previous_seq`."""
    return target.written_after(previous_seq), subtract(previous.valid(), target.valid())


def page_list_xml(pages: list[Span], clears: list[Span] = ()) -> bytes:
    """The Get Page Ranges body as Azure sends it: PageRange and ClearRange elements,
    interleaved in order of Start, inclusive End, no whitespace."""
    items = [(s, e, "PageRange") for s, e in pages] + [(s, e, "ClearRange") for s, e in clears]
    items.sort()
    body = "".join(f"<{tag}><Start>{s}</Start><End>{e - 1}</End></{tag}>" for s, e, tag in items)
    return f'<?xml version="1.0" encoding="utf-8"?><PageList>{body}</PageList>'.encode()


def error_xml(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{escape(code)}</Code>'
            f"<Message>{escape(message)}</Message></Error>").encode()
