"""A one-line progress bar on stderr for long-running operations.

Redrawn in place with "\\r", so it belongs on a terminal or in a log a person reads;
stdout stays clean for the result. The rate is measured from the first sample this
process saw, not from the operation's start, so attaching to a half-done restore
does not report an absurd speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from .units import format_rate, format_size

BAR_WIDTH = 30


def render(done: int, total: int, rate: float | None, width: int = BAR_WIDTH) -> str:
    """`[#####.....]  42%  1.2 GiB/4.0 GiB  350 MB/s`; no bar while the total is unknown."""
    parts = []
    if total > 0:
        fraction = min(max(done / total, 0.0), 1.0)
        filled = int(fraction * width)
        parts.append(f"[{'#' * filled}{'.' * (width - filled)}]")
        parts.append(f"{int(fraction * 100):3d}%")
        parts.append(f"{format_size(done)}/{format_size(total)}")
    else:
        parts.append(format_size(done))
    if rate is not None:
        parts.append(format_rate(rate))
    return "  ".join(parts)


class ProgressBar:
    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic):
        self._stream = stream
        self._clock = clock
        self._first: tuple[float, int] | None = None
        self._last_len = 0

    def update(self, done: int, total: int) -> None:
        if not done and not total:
            return  # nothing known yet (a queued cycle has no disks): draw nothing
        now = self._clock()
        if self._first is None:
            self._first = (now, done)
        start, start_done = self._first
        rate = (done - start_done) / (now - start) if now > start else None
        line = render(done, total, rate)
        # Blank out the tail of a longer previous line.
        pad = " " * max(0, self._last_len - len(line))
        self._stream.write(f"\r{line}{pad}")
        self._stream.flush()
        self._last_len = len(line)

    def close(self) -> None:
        """End the line, so what follows starts on its own line."""
        if self._last_len:
            self._stream.write("\n")
            self._stream.flush()
            self._last_len = 0
