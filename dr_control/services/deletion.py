"""Deleting recovery points (retention or a user's request) and collecting the garbage.

A point is deleted in three steps, so that a crash anywhere leaves a state that the
next step finishes: the row turns `deleting` and a `delete` task is queued (one
transaction); a node removes the point at the target (the point object of a
repository, or the EBS snapshots of an ebs target); when it reports success the row
goes. A repository point's chunks, segments and manifests stay until a `gc` task
(dr_common/repository/gc.py) finds no point references them; the scheduler queues one
per repository at most once per `scheduler.gc_interval_seconds` after deletions, and
`CollectGarbage` (drctl repository gc) queues one now.
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from sqlalchemy import select

from dr_common import names, targets
from dr_common.errors import FailedPrecondition, InvalidArgument
from dr_common.proto.dr.v1 import nodes_pb2
from dr_common.targets import REPOSITORY_KINDS
from dr_control.db.models import Plan, RecoveryPoint, Site, Task, utcnow
from dr_control.services import taskspecs
from dr_control.services.context import ServiceContext
from dr_control.services.retention import RetentionRules, select_expired
from dr_control.services.routing import locator, target_task

log = structlog.get_logger()

READY, DELETING = "ready", "deleting"
ACTIVE_TASK_STATES = ("queued", "leased")
# A point whose delete failed for good (the target refuses it) is tried again only after
# this long: retention runs every scheduler pass and must not hammer a broken target.
DELETE_RETRY_AFTER = timedelta(minutes=10)


def rules(plan: Plan) -> RetentionRules:
    return RetentionRules(keep_last=plan.keep_last, keep_hourly=plan.keep_hourly or 0,
                          keep_daily=plan.keep_daily or 0, keep_weekly=plan.keep_weekly or 0)


async def _locator(s, plan: Plan) -> nodes_pb2.TargetLocator:
    return locator(plan, await s.get(Site, plan.target_site))


async def _points(s, plan_id: str) -> list[RecoveryPoint]:
    return list((await s.scalars(select(RecoveryPoint).where(
        RecoveryPoint.plan_id == plan_id))).all())


async def queue_delete(ctx: ServiceContext, s, plan: Plan, point: RecoveryPoint) -> Task:
    """Marks `point` deleting and queues the task that removes it at the target
    (caller holds a transaction and has checked that the point may go)."""
    point.state = DELETING
    task = await target_task(
        s, plan, "delete", target=names.point_name(plan.id, point.id),
        spec=nodes_pb2.DeleteSpec(
            recovery_point=names.point_name(plan.id, point.id), recovery_point_id=point.id,
            snapshot_ids=[d["snapshot_id"] for d in point.disks if d.get("snapshot_id")]))
    s.add(task)
    ctx.tasks_queued.notify()
    return task


async def apply_retention(ctx: ServiceContext, s, plan: Plan, *,
                          points: list[RecoveryPoint] | None = None,
                          failed_lately: set[str] | None = None) -> int:
    """Queues the deletion of the plan's expired points; how many. `points` (the
    plan's) and `failed_lately` (names of points whose delete failed lately) may be
    given by a caller that read them for many plans at once (scheduler_pass)."""
    if rules(plan).keeps_all:
        return 0
    now = utcnow()
    if failed_lately is None:
        failed_lately = set((await s.scalars(select(Task.target).where(
            Task.plan_id == plan.id, Task.kind == "delete", Task.state == "failed",
            Task.end_time > now - DELETE_RETRY_AFTER))).all())
    if points is None:
        points = await _points(s, plan.id)
    # Retention decides over every ready point (a point backing off still counts as kept
    # for the others' sake); only the deletion of recently failed ones waits.
    expired = [p for p in select_expired([p for p in points if p.state == READY],
                                         rules(plan), now)
               if names.point_name(plan.id, p.id) not in failed_lately]
    for point in expired:
        await queue_delete(ctx, s, plan, point)
    if expired:
        log.info("retention expired recovery points", plan=plan.id,
                 points=[p.id for p in expired])
    return len(expired)


async def check_deletable(s, point: RecoveryPoint, name: str) -> None:
    if point.locked:
        raise FailedPrecondition(f"recovery point {name} is locked; unlock it first",
                                 reason="locked")
    newest = max(await _points(s, point.plan_id), key=lambda p: (p.create_time, p.id))
    if newest.id == point.id:
        raise FailedPrecondition(
            f"recovery point {name} is the plan's newest: the next cycle builds on it. "
            "Delete it once a newer point exists.", reason="newest-point")


async def after_delete(s, task: Task) -> None:
    """The target no longer holds the point: forget it, and note the garbage."""
    point = await s.get(RecoveryPoint, (task.plan_id, taskspecs.load(task).recovery_point_id))
    if point is not None:
        await s.delete(point)
    plan = await s.get(Plan, task.plan_id)
    if plan is not None and plan.target_kind in REPOSITORY_KINDS:
        plan.gc_requested = True
    log.info("recovery point deleted", point=task.target)


async def after_delete_failed(s, task: Task) -> None:
    """The point is still at the target: show it as ready again (retention will try
    again at a later pass)."""
    point = await s.get(RecoveryPoint, (task.plan_id, taskspecs.load(task).recovery_point_id))
    if point is not None and point.state == DELETING:
        point.state = READY


async def queue_gc(ctx: ServiceContext, s, plan: Plan, grace_seconds: int | None) -> Task:
    """Queues a collection of the plan's repository, or returns the one already queued
    or running for that repository (two would only do the same work twice)."""
    kind = targets.kind(plan.target_kind)
    if not kind.repository:
        raise InvalidArgument(
            f"plan {names.plan_name(plan.id)} writes to a {kind.name} target, which holds "
            f"no repository garbage: {kind.no_gc}", field="parent")
    repository = await _locator(s, plan)
    active = (await s.scalars(select(Task).where(
        Task.kind == "gc", Task.state.in_(ACTIVE_TASK_STATES)))).all()
    for task in active:
        if taskspecs.load(task).target == repository:
            return task
    grace = ctx.config.scheduler.gc_grace_seconds if grace_seconds is None else grace_seconds
    if grace < 0:
        raise InvalidArgument("grace_seconds must not be negative", field="grace_seconds")
    task = await target_task(s, plan, "gc", target=names.plan_name(plan.id),
                             spec=nodes_pb2.GcSpec(grace_seconds=grace))
    s.add(task)
    plan.gc_requested = False
    ctx.tasks_queued.notify()
    return task


async def after_gc(s, task: Task) -> None:
    plan = await s.get(Plan, task.plan_id)
    if plan is not None:
        plan.last_gc_time = utcnow()
    log.info("repository garbage collected", plan=task.plan_id, **task.result)


async def scheduler_pass(ctx: ServiceContext) -> None:
    """Retention for every plan (catches points a failed delete left, and periods that
    ended since the last cycle), then the garbage collections that are due."""
    interval = timedelta(seconds=ctx.config.scheduler.gc_interval_seconds)
    now = utcnow()
    async with ctx.db() as s, s.begin():
        plans = (await s.scalars(select(Plan).order_by(Plan.id))).all()
        # Two queries for all the plans whose rules may expire points (none for the
        # plans that keep all), not two per plan.
        ruled = [p.id for p in plans if not rules(p).keeps_all]
        points: dict[str, list[RecoveryPoint]] = {i: [] for i in ruled}
        failed: dict[str, set[str]] = {i: set() for i in ruled}
        for i in range(0, len(ruled), 500):
            ids = ruled[i:i + 500]
            for p in (await s.scalars(select(RecoveryPoint).where(
                    RecoveryPoint.plan_id.in_(ids)))).all():
                points[p.plan_id].append(p)
            for plan_id, target in (await s.execute(select(Task.plan_id, Task.target).where(
                    Task.plan_id.in_(ids), Task.kind == "delete", Task.state == "failed",
                    Task.end_time > now - DELETE_RETRY_AFTER))).all():
                failed[plan_id].add(target)
        for plan in plans:
            if plan.id in points:
                await apply_retention(ctx, s, plan, points=points[plan.id],
                                      failed_lately=failed[plan.id])
            since = plan.last_gc_time or plan.create_time
            if plan.gc_requested and plan.target_kind in REPOSITORY_KINDS \
                    and now - since >= interval:
                await queue_gc(ctx, s, plan, None)
