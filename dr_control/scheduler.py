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
from sqlalchemy import func, select

from dr_control import metrics
from dr_control.db.models import Cycle, Node, Plan, RecoveryPoint, Task, utcnow
from dr_control.leader import LeaderElection
from dr_control.services import deletion
from dr_control.services.context import ServiceContext
from dr_control.services.coordinator import Coordinator

log = structlog.get_logger()


class Scheduler:
    def __init__(self, ctx: ServiceContext, coordinator: Coordinator,
                 election: LeaderElection | None = None,
                 on_leadership: Callable[[], Awaitable[None]] | None = None):
        self.ctx = ctx
        self.coordinator = coordinator
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
            await self.coordinator.expire_leases()
            started = await self.start_due_cycles()
            await deletion.scheduler_pass(self.ctx)  # retention and due garbage collections
            await self._update_gauges()
        return started

    async def start_due_cycles(self) -> list[Cycle]:
        now = utcnow()
        started = []
        async with self.ctx.db() as s, s.begin():
            plans = (await s.scalars(select(Plan).where(Plan.paused.is_(False)))).all()
            for plan in plans:
                if await self.coordinator.active_cycle(s, plan.id) is not None:
                    continue
                last_start = await s.scalar(select(Cycle.create_time).where(
                    Cycle.plan_id == plan.id).order_by(Cycle.seq.desc()).limit(1))
                due = (plan.run_requested or last_start is None
                       or now - last_start >= timedelta(seconds=plan.rpo_seconds))
                if due and (cycle := await self.coordinator.start_cycle(s, plan)):
                    started.append(cycle)
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
        metrics.NODES_ONLINE.set(sum(1 for n in nodes if self.coordinator.node_online(n)))
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
