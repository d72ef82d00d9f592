"""Per-plan facts for many plans at once, in a fixed number of queries.

ListPlans, the RPO report and the scheduler need, for every plan, its newest recovery
point, its active cycle and its newest cycle. Asked plan by plan that is a few queries
per plan (2,000 disks in 200 plans: thousands of queries per call); here each is one
or two queries for all the plans asked (`plan_ids`; None = every plan), each plan's row
found by an index probe (recovery_points (plan_id, create_time), cycles (plan_id, seq))
so that the cost does not grow with the plans' history.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import and_, func, or_, select

from dr_control.db.models import Cycle, Plan, RecoveryPoint

ACTIVE_CYCLE_STATES = ("queued", "running")
# Keys per query of the second step (two bound parameters each).
CHUNK = 200


def _per_plan(value, plan_ids: Collection[str] | None):
    """SELECT plans.id, <value> FROM plans: the plans table drives the query, and
    `value` (a scalar subquery correlated to plans.id) is an index probe per plan."""
    q = select(Plan.id, value)
    return q if plan_ids is None else q.where(Plan.id.in_(list(plan_ids)))


async def _rows_by_key(s, entity, plan_col, key_col, keys: list[tuple]) -> list:
    rows = []
    for i in range(0, len(keys), CHUNK):
        # OR of (plan, key) pairs, not a tuple IN: SQLite scans a table for the latter,
        # and probes the primary key or unique index once per pair for the former.
        rows += (await s.scalars(select(entity).where(or_(*(
            and_(plan_col == p, key_col == k) for p, k in keys[i:i + CHUNK]))))).all()
    return rows


async def newest_points(s, plan_ids: Collection[str] | None = None) -> dict[str, RecoveryPoint]:
    """Plan id -> its newest recovery point (by create_time, then id), for the plans
    that have one. Two queries: each plan's newest point id, then those points."""
    if plan_ids is not None and not plan_ids:
        return {}
    newest_id = (select(RecoveryPoint.id).where(RecoveryPoint.plan_id == Plan.id)
                 .order_by(RecoveryPoint.create_time.desc(), RecoveryPoint.id.desc())
                 .limit(1).correlate(Plan).scalar_subquery())
    keys = [(plan_id, point_id) for plan_id, point_id in
            (await s.execute(_per_plan(newest_id, plan_ids))).all() if point_id is not None]
    rows = await _rows_by_key(s, RecoveryPoint, RecoveryPoint.plan_id, RecoveryPoint.id, keys)
    return {p.plan_id: p for p in rows}


async def last_cycles(s, plan_ids: Collection[str] | None = None) -> dict[str, Cycle]:
    """Plan id -> its newest cycle (highest seq), for the plans that have one. Two
    queries: each plan's highest seq, then those cycles."""
    if plan_ids is not None and not plan_ids:
        return {}
    top = (select(func.max(Cycle.seq)).where(Cycle.plan_id == Plan.id)
           .correlate(Plan).scalar_subquery())
    keys = [(plan_id, seq) for plan_id, seq in
            (await s.execute(_per_plan(top, plan_ids))).all() if seq is not None]
    rows = await _rows_by_key(s, Cycle, Cycle.plan_id, Cycle.seq, keys)
    return {c.plan_id: c for c in rows}


async def active_cycles(s, plan_ids: Collection[str] | None = None) -> dict[str, Cycle]:
    """Plan id -> its active (queued or running) cycle; at most one per plan (migration
    0007's unique index)."""
    if plan_ids is not None and not plan_ids:
        return {}
    q = select(Cycle).where(Cycle.state.in_(ACTIVE_CYCLE_STATES))
    if plan_ids is not None:
        q = q.where(Cycle.plan_id.in_(list(plan_ids)))
    return {c.plan_id: c for c in (await s.scalars(q)).all()}
