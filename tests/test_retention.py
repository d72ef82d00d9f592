"""Retention rules (select_expired): table-driven, with times on hour/day/week edges."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from dr_control.services.retention import RetentionRules, select_expired


@dataclass(frozen=True)
class Pt:
    id: str
    create_time: datetime
    locked: bool = False


def t(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=timezone.utc)


# Wednesday 2025-01-15 12:30 UTC. The ISO week began Monday 2025-01-13.
NOW = t("2025-01-15 12:30:00")


def pts(*times: str, locked: tuple[str, ...] = ()) -> list[Pt]:
    return [Pt(x, t(x), x in locked) for x in times]


CASES = [
    # (name, points, rules, expired)
    ("keep all by default",
     pts("2025-01-01 00:00", "2025-01-02 00:00"), RetentionRules(), []),
    ("keep last 2",
     pts("2025-01-15 09:00", "2025-01-15 10:00", "2025-01-15 11:00", "2025-01-15 12:00"),
     RetentionRules(keep_last=2), ["2025-01-15 09:00", "2025-01-15 10:00"]),
    ("newest always kept even when keep_last would not reach it (keep_last 0 + hourly 0)",
     pts("2025-01-01 00:00", "2025-01-02 00:00"), RetentionRules(keep_daily=1),
     ["2025-01-01 00:00"]),
    ("locked points are never expired",
     pts("2025-01-15 09:00", "2025-01-15 10:00", "2025-01-15 11:00", locked=("2025-01-15 09:00",)),
     RetentionRules(keep_last=1), ["2025-01-15 10:00"]),
    ("hourly: newest of each of the last 3 hours; 12:59:59 and 12:00 share an hour",
     pts("2025-01-15 09:59:59", "2025-01-15 10:00:00", "2025-01-15 10:30:00",
         "2025-01-15 11:59:59", "2025-01-15 12:00:00", "2025-01-15 12:10:00"),
     RetentionRules(keep_hourly=3),
     # hours 12, 11, 10 keep 12:10, 11:59:59, 10:30; 09:59:59 is in hour 9.
     ["2025-01-15 09:59:59", "2025-01-15 10:00:00", "2025-01-15 12:00:00"]),
    ("daily: the day boundary is midnight UTC",
     pts("2025-01-13 23:59:59", "2025-01-14 00:00:00", "2025-01-14 23:59:59",
         "2025-01-15 00:00:00", "2025-01-15 12:00:00"),
     RetentionRules(keep_daily=2),
     # days 15 and 14 keep 12:00 and 14th 23:59:59; the 13th is 3 days back.
     ["2025-01-13 23:59:59", "2025-01-14 00:00:00", "2025-01-15 00:00:00"]),
    ("weekly: ISO weeks start on Monday",
     pts("2025-01-05 23:59:59",  # Sunday, week of Dec 30
         "2025-01-06 00:00:00",  # Monday, week of Jan 6
         "2025-01-12 23:59:59",  # Sunday, week of Jan 6
         "2025-01-13 00:00:00",  # Monday, this week
         "2025-01-15 12:00:00"),
     RetentionRules(keep_weekly=2),
     ["2025-01-05 23:59:59", "2025-01-06 00:00:00", "2025-01-13 00:00:00"]),
    ("rules combine: a point kept by any rule stays",
     pts("2025-01-01 08:00", "2025-01-14 08:00", "2025-01-14 20:00",
         "2025-01-15 11:00", "2025-01-15 12:00"),
     RetentionRules(keep_last=1, keep_hourly=2, keep_daily=2),
     # last: 12:00; hourly: 12:00, 11:00; daily: 15th 12:00, 14th 20:00.
     ["2025-01-01 08:00", "2025-01-14 08:00"]),
    ("periods count back from now, not from the newest point",
     pts("2025-01-10 10:00", "2025-01-11 10:00"), RetentionRules(keep_daily=3),
     ["2025-01-10 10:00"]),
]


@pytest.mark.parametrize("points, rules, expired",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_select_expired(points, rules, expired):
    assert [p.id for p in select_expired(points, rules, NOW)] == expired


def test_order_of_input_does_not_matter_and_other_zones_are_utc():
    cet = timezone(timedelta(hours=1))
    # 00:30 CET on the 15th is 23:30 UTC on the 14th: a different UTC day.
    points = [Pt("b", datetime(2025, 1, 15, 0, 30, tzinfo=cet)),
              Pt("a", t("2025-01-14 22:00")), Pt("c", t("2025-01-15 01:00"))]
    assert [p.id for p in select_expired(points, RetentionRules(keep_daily=2), NOW)] == ["a"]


def test_naive_times_are_refused():
    with pytest.raises(ValueError):
        select_expired([Pt("x", datetime(2025, 1, 1)), Pt("y", datetime(2025, 1, 2))],
                       RetentionRules(keep_last=1), NOW)
