"""Retention: which recovery points of a plan have expired.

A pure function over (id, time, locked) values, so the rules are tested without a
database. The rules are the usual grandfather-father-son ones: keep the newest
`keep_last` points, and the newest point of each of the last `keep_hourly` hours,
`keep_daily` days and `keep_weekly` weeks. Periods are UTC calendar periods (ISO weeks,
which start on Monday) counted back from `now`, the current one included: a plan
paused for a month keeps no "daily" point from before the pause, which is what
"the last 7 days" means to an operator. A point is kept if any rule keeps it.

Two points are never expired, whatever the rules: a locked point (a user asked for
it), and the plan's newest point, because the next incremental cycle builds on it
(its manifest or its EBS snapshot is the parent of the next point). With every rule
0 nothing expires ("keep all", the default).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol, TypeVar


class PointLike(Protocol):
    id: str
    create_time: datetime
    locked: bool


P = TypeVar("P", bound=PointLike)


@dataclass(frozen=True)
class RetentionRules:
    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0

    @property
    def keeps_all(self) -> bool:
        return not (self.keep_last or self.keep_hourly or self.keep_daily or self.keep_weekly)


def _hour(t: datetime) -> int:
    return int(t.timestamp()) // 3600


def _day(t: datetime) -> int:
    return t.date().toordinal()


def _week(t: datetime) -> int:
    # Ordinal of the week's Monday, divided: consecutive ISO weeks differ by one.
    return (t.date().toordinal() - t.weekday()) // 7


def _newest_per_period(points: Sequence[P], count: int, now: datetime,
                       period: Callable[[datetime], int]) -> set[str]:
    if count <= 0:
        return set()
    current = period(now)
    kept: dict[int, P] = {}
    for p in points:  # newest first: the first seen in a period is its newest
        key = period(p.create_time)
        if current - key < count and key not in kept:
            kept[key] = p
    return {p.id for p in kept.values()}


def select_expired(points: Sequence[P], rules: RetentionRules, now: datetime) -> list[P]:
    """The points `rules` no longer keep, oldest first."""
    if rules.keeps_all or not points:
        return []
    for p in points:
        if p.create_time.tzinfo is None:
            raise ValueError(f"recovery point {p.id} has a naive create_time")
    now = now.astimezone(timezone.utc)
    newest_first = sorted(points, key=lambda p: (p.create_time, p.id), reverse=True)
    as_utc = [_Utc(p) for p in newest_first]
    keep = {newest_first[0].id} | {p.id for p in newest_first if p.locked}
    keep |= {p.id for p in newest_first[:max(rules.keep_last, 0)]}
    keep |= _newest_per_period(as_utc, rules.keep_hourly, now, _hour)
    keep |= _newest_per_period(as_utc, rules.keep_daily, now, _day)
    keep |= _newest_per_period(as_utc, rules.keep_weekly, now, _week)
    return [p for p in reversed(newest_first) if p.id not in keep]


@dataclass(frozen=True)
class _Utc:
    """A point's id and time in UTC (calendar periods are UTC's)."""

    id: str
    create_time: datetime
    locked: bool

    def __init__(self, p: PointLike) -> None:
        object.__setattr__(self, "id", p.id)
        object.__setattr__(self, "create_time", p.create_time.astimezone(timezone.utc))
        object.__setattr__(self, "locked", p.locked)
