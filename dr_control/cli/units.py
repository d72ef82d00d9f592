"""Sizes, durations and times: parsed from what operators type, printed for people.

Parsing is strict (a typo must not silently become a different RPO), and does not
judge the value: whether 0 s, -5 m or a 3 KiB chunk is acceptable is the server's call
(the API's fields are signed for that reason), so the CLI and every other client get
the same answer. A leading "-" is therefore parsed, not rejected.
"""

from __future__ import annotations

import re
import time
from datetime import timezone
from fractions import Fraction

from google.protobuf.timestamp_pb2 import Timestamp

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# One or more number+unit terms ("1h30m"); a bare number is seconds.
_DURATION_RE = re.compile(r"-?(?:\d+[smhd])+", re.IGNORECASE)
_DURATION_TERM_RE = re.compile(r"(\d+)([smhd])", re.IGNORECASE)

# Bare K/M/G/T are binary, as in dd, qemu-img and most block tools, since chunk sizes
# are meant to align with sectors; KB/MB/GB/TB are the decimal SI units for the rare
# operator who means them.
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": KiB, "kib": KiB, "kb": 1000,
    "m": MiB, "mib": MiB, "mb": 1000**2,
    "g": GiB, "gib": GiB, "gb": 1000**3,
    "t": TiB, "tib": TiB, "tb": 1000**4,
}
_SIZE_RE = re.compile(r"(-?\d+(?:\.\d+)?)\s*([a-z]*)", re.IGNORECASE)


def parse_duration(text: str) -> int:
    """Seconds in "90", "90s", "15m", "1h", "1d" or combinations like "1h30m"."""
    s = text.strip()
    if re.fullmatch(r"-?\d+", s):
        return int(s)
    if not _DURATION_RE.fullmatch(s):
        raise ValueError(
            f"invalid duration {text!r}: use seconds or a number with a unit s, m, h or d "
            "(e.g. 90, 90s, 15m, 1h, 1d)"
        )
    total = sum(int(n) * _DURATION_UNITS[u.lower()] for n, u in _DURATION_TERM_RE.findall(s))
    return -total if s.startswith("-") else total


def parse_size(text: str) -> int:
    """Bytes in "1048576", "256KiB", "1MiB", "4M" (binary) or "4MB" (decimal)."""
    m = _SIZE_RE.fullmatch(text.strip())
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _SIZE_UNITS:
        raise ValueError(
            f"invalid size {text!r}: use bytes or a number with a unit "
            "KiB, MiB, GiB (or K, M, G) (e.g. 1048576, 256KiB, 1MiB, 4M)"
        )
    value = Fraction(m.group(1)) * _SIZE_UNITS[unit]
    if value.denominator != 1:
        raise ValueError(f"invalid size {text!r}: not a whole number of bytes")
    return int(value)


def format_size(n: int) -> str:
    """Binary units with one decimal, "1.0 GiB", as disk sizes are powers of two."""
    if n < KiB:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def format_rate(bytes_per_second: float) -> str:
    """Decimal units, "350 MB/s": throughput is quoted like network links are."""
    value = float(bytes_per_second)
    for unit in ("B/s", "kB/s", "MB/s", "GB/s"):
        if value < 1000 or unit == "GB/s":
            return f"{value:.0f} {unit}" if value >= 100 or unit == "B/s" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """The two most significant units: "42s", "15m", "1h 30m", "2d 3h"."""
    total = max(0, int(round(seconds)))
    if total == 0:
        return "0s"
    terms = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            terms.append(f"{count}{unit}")
        elif terms:
            # Keep the position so "1h 0m 5s" becomes "1h", not "1h 5s".
            terms.append("")
    return " ".join(t for t in terms[:2] if t)


def is_set(ts: Timestamp | None) -> bool:
    """Whether a timestamp field holds a time (proto3 leaves unset ones at the epoch)."""
    return ts is not None and (ts.seconds != 0 or ts.nanos != 0)


def format_time(ts: Timestamp | None) -> str:
    """Local wall-clock time, to the second; "-" when unset."""
    if not is_set(ts):
        return "-"
    return ts.ToDatetime(tzinfo=timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def age_seconds(ts: Timestamp, now: float | None = None) -> float:
    now = time.time() if now is None else now
    return now - ts.ToDatetime(tzinfo=timezone.utc).timestamp()


def format_age(ts: Timestamp | None, now: float | None = None) -> str:
    """"3s ago", or "never" when unset."""
    if not is_set(ts):
        return "never"
    return f"{format_duration(age_seconds(ts, now))} ago"


def span_seconds(start: Timestamp, end: Timestamp | None, now: float | None = None) -> float:
    """Seconds from start to end, or to now while there is no end yet."""
    start_s = start.ToDatetime(tzinfo=timezone.utc).timestamp()
    if is_set(end):
        return end.ToDatetime(tzinfo=timezone.utc).timestamp() - start_s
    return (time.time() if now is None else now) - start_s
