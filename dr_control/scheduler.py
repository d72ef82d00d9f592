"""The scheduler: starts a cycle when a plan's RPO is due, one cycle per plan at a time,
and queues again the tasks of nodes that stopped heartbeating. With several replicas on
one PostgreSQL database only the elected one runs it (dr_control/leader.py).

A plan is due when it has no active cycle and either it never ran, a user asked to run
it, or its newest cycle started at least one RPO ago. Starting cycles one RPO apart keeps
the newest recovery point younger than the RPO as long as a cycle takes less than it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta, timezone

import structlog
from sqlalchemy import func, insert, select

from dr_control import metrics
from dr_control.db.models import Cycle, Disk, Node, Plan, RecoveryPoint, Site, Task, utcnow
from dr_control.leader import LeaderElection
from dr_control.services import cycles, deletion, planfacts
from dr_control.services.context import ServiceContext
from dr_control.services.leasing import Leases
from dr_control.services.nodes import node_online

log = structlog.get_logger()
# Plans whose cycles one transaction of a scheduler pass queues (start_due_cycles).
START_BATCH = 50


class Scheduler:
    def __init__(self, ctx: ServiceContext, leases: Leases,
                 election: LeaderElection | None = None,
                 on_leadership: Callable[[], Awaitable[None]] | None = None):
        self.ctx = ctx
        # The servicers' own Leases: a task whose lease expires is then free at once to
        # their polls (Leases._claimed).
        self.leases = leases
        # Work only one replica may resume (recovery executions a stopped leader left):
        # run when this replica becomes the leader, not when it starts.
        self.on_leadership = on_leadership
        self._leader = False
        cfg = ctx.config.scheduler
        # Only the elected replica schedules (dr_control/leader.py); SQLite: always us.
        self.election = election or LeaderElection(
            ctx.config.db_url, lease_seconds=cfg.lease_seconds,
            check_timeout=max(cfg.tick_seconds, 1.0))

    async def run(self) -> None:
        tick = self.ctx.config.scheduler.tick_seconds
        try:
            while True:
                try:
                    leader = await self.election.check()
                    if leader and not self._leader and self.on_leadership is not None:
                        await self.on_leadership()
                    self._leader = leader
                    if leader:
                        await self.tick()
                except asyncio.CancelledError:
                    raise
                except Exception:  # one bad pass must not stop scheduling for good
                    log.exception("scheduler pass failed")
                await asyncio.sleep(tick)
        finally:
            await self.election.close()

    async def tick(self) -> list[Cycle]:
        with metrics.SCHEDULER_PASS.time():
            await self.leases.expire_leases()
            started = await self.start_due_cycles()
            await deletion.scheduler_pass(self.ctx)  # retention and due garbage collections
            await self._update_gauges()
        return started

    async def start_due_cycles(self) -> list[Cycle]:
        """Starts the due plans' cycles. What decides which plans are due, and what
        their cycles' tasks need (newest points, sites, disks), is read in a fixed
        number of queries whatever the number of plans (planfacts.py); the cycles are
        then queued in transactions of at most START_BATCH plans, so that the single
        writer of SQLite is not held for the whole pass."""
        now = utcnow()
        started = []
        async with self.ctx.db() as s:
            async with s.begin():
                plans = (await s.scalars(select(Plan).where(Plan.paused.is_(False))
                                         .order_by(Plan.id))).all()
                active = await planfacts.active_cycles(s)
                last = await planfacts.last_cycles(s)
                due = [p for p in plans if p.id not in active and (
                    p.run_requested or p.id not in last
                    or now - last[p.id].create_time >= timedelta(seconds=p.rpo_seconds))]
                if not due:
                    return started
                newest = await planfacts.newest_points(s, [p.id for p in due])
                # Loaded into the session, so start_cycle's s.get() finds them without
                # a query (held here: the identity map only keeps referenced objects).
                sites = (await s.scalars(select(Site))).all()  # noqa: F841
                names = sorted({d for p in due for d in p.disks})
                disks = [d for i in range(0, len(names), 500) for d in (await s.scalars(
                    select(Disk).where(Disk.name.in_(names[i:i + 500])))).all()]  # noqa: F841
            for i in range(0, len(due), START_BATCH):
                async with s.begin():
                    rows: list[dict] = []  # the batch's replicate tasks: one INSERT
                    for plan in due[i:i + START_BATCH]:
                        known = (last[plan.id].seq if plan.id in last else 0,
                                 newest.get(plan.id))
                        if cycle := await cycles.start_cycle(
                                self.ctx, s, plan, known=known, task_rows=rows):
                            started.append(cycle)
                    if rows:
                        await s.execute(insert(Task), rows)
        return started

    async def _update_gauges(self) -> None:
        now = utcnow()
        async with self.ctx.db() as s:
            queued = dict((await s.execute(select(Task.kind, func.count()).where(
                Task.state == "queued").group_by(Task.kind))).all())
            nodes = (await s.scalars(select(Node))).all()
            plans = (await s.scalars(select(Plan))).all()
            newest = dict((await s.execute(select(
                RecoveryPoint.plan_id, func.max(RecoveryPoint.create_time)).group_by(
                RecoveryPoint.plan_id))).all())
        for kind in ("replicate", "finalize", "restore", "verify"):
            metrics.TASKS_QUEUED.labels(kind=kind).set(queued.get(kind, 0))
        metrics.NODES_ONLINE.set(sum(1 for n in nodes if node_online(self.ctx, n)))
        for plan in plans:
            since = newest.get(plan.id) or plan.create_time
            if since.tzinfo is None:  # aggregates bypass the column type on SQLite
                since = since.replace(tzinfo=timezone.utc)
            lag = (now - since).total_seconds()
            metrics.RPO_LAG.labels(plan=plan.id).set(lag)
            metrics.RPO_TARGET.labels(plan=plan.id).set(plan.rpo_seconds)
            metrics.CONTROL_RPO_LAG.labels(plan=plan.id).set(lag)
            metrics.RPO_MET.labels(plan=plan.id).set(
                int(plan.id in newest and lag <= plan.rpo_seconds))
            if plan.id in newest:
                metrics.RECOVERY_POINT_AGE.labels(plan=plan.id).set(lag)
