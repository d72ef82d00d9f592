"""Cycles and tasks: what nodes lease, how leases are fenced, and how a cycle ends.

A cycle has one `replicate` task per disk; for an `aws` source, a `snapshot` task first
takes the consistency group's snapshots, and the replicate tasks read from those. When all are completed, one `finalize` task
writes the recovery-point object at the target (the last write of the cycle); only when
that succeeds does the control plane record the recovery point, so a cycle that dies
anywhere before leaves no visible point.

Leases: a task is leased to one node at a time with a `lease_token` that grows on each
lease. Every report carries the token; a stale holder (whose lease expired and whose
task went to another node) gets FailedPrecondition and must stop. A task whose lease
expires is queued again with its checkpoint, so the next holder resumes at the watermark.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from dr_common import names
from dr_common.aws import AwsSettings
from dr_common.errors import FailedPrecondition, NotFound
from dr_common.sources import kvm
from dr_control import metrics
from dr_control.db.models import Cycle, Disk, Node, Plan, RecoveryPoint, Site, Task, utcnow
from dr_control.services import deletion
from dr_control.services.context import ServiceContext
from dr_control.services.inventory import aws_settings

log = structlog.get_logger()

ACTIVE_CYCLE_STATES = ("queued", "running")
# Finalizing a cycle and user operations go before more replication work.
_KIND_PRIORITY = {"finalize": 0, "snapshot": 0, "restore": 1, "verify": 1, "delete": 1,
                  "replicate": 2, "gc": 3}
# Sources whose changed-block tracking lets a native target (ebs) write incrementals;
# others (hash diff) give no clean extents, so each ebs snapshot is written whole.
_TRACKING_SOURCES = ("kvm", "aws")
# A graceful node stop hands its tasks back with this reason; it costs no attempt.
RELEASED = "node-stopping"
# Load rule (see should_defer): a node defers to an idle-enough peer when that peer's
# load is lower than its own by more than this.
LOAD_MARGIN = 0.2
# A node counts as "asking" for tasks this long after its last AcquireTask poll (the
# long poll looks again every second).
ASKING_SECONDS = 3.0


@dataclass(frozen=True)
class NodeLoad:
    """What the load rule knows of a node: tasks leased to it, its declared capacity,
    and the backpressure it reported (0..1)."""

    node_id: str
    leased: int
    max_tasks: int
    backpressure: float = 0.0

    @property
    def free(self) -> int:
        return max(0, self.max_tasks - self.leased)

    @property
    def load(self) -> float:
        return node_load(self.leased, self.max_tasks, self.backpressure)


def node_load(leased: int, max_tasks: int, backpressure: float) -> float:
    """0 (idle) to 1 (full): the larger of the share of its task slots in use and the
    backpressure of its byte budget."""
    return min(1.0, max(leased / max(1, max_tasks), backpressure))


def should_defer(me: NodeLoad, peers: list[NodeLoad], queued: int) -> bool:
    """Whether `me`, asking for a task, should leave it to a less loaded peer.

    The rule (tasks go to nodes by load, DESIGN.md 5):
    - a node at its declared capacity (leased >= max_tasks) gets nothing;
    - otherwise it gets a task unless some peer that is also asking (polled AcquireTask
      within ASKING_SECONDS), online, not draining and with a free slot, is less loaded
      by more than LOAD_MARGIN;
    - but when the queue is deep enough to fill every free slot of those nodes and
      this one (queued >= their free slots together), everyone will be busy anyway:
      it gets a task at once.
    The less loaded peer is not starved of the task: its own long poll takes it within
    a second. Peers are only those this replica serves (the asking set is in memory),
    so with several control replicas the rule degrades to first come, first served.
    """
    if me.free <= 0:
        return True
    eligible = [p for p in peers if p.free > 0 and p.node_id != me.node_id]
    if not eligible:
        return False
    if queued >= me.free + sum(p.free for p in eligible):
        return False
    return min(p.load for p in eligible) < me.load - LOAD_MARGIN


class Progress(NamedTuple):
    """What a progress report tells the node back."""

    cancel: bool  # the task was cancelled: stop it
    bandwidth: int  # the plan's bandwidth cap now
    release: bool  # the node is draining: hand the task back


def locator(plan: Plan, target: Site) -> dict:
    """Where a plan's points go; "site" names the site whose credentials a node gets
    with the task (never stored in the spec itself)."""
    return {"kind": plan.target_kind, "path": target.path, "site": target.id}


def _point_id(cycle: Cycle, now: datetime) -> str:
    return f"{now:%Y%m%dt%H%M%Sz}-{cycle.seq}"


class Coordinator:
    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx
        # node id -> monotonic time of its last AcquireTask poll (the load rule's peers).
        self._asking: dict[str, float] = {}

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.ctx.config.scheduler.lease_seconds)

    # -- cycles -------------------------------------------------------------------

    async def active_cycle(self, s, plan_id: str) -> Cycle | None:
        return await s.scalar(select(Cycle).where(
            Cycle.plan_id == plan_id, Cycle.state.in_(ACTIVE_CYCLE_STATES)))

    async def start_cycle(self, s, plan: Plan) -> Cycle | None:
        """Queues a cycle: its snapshot task (aws sources) or one replicate task per
        disk (caller holds a transaction). None if the plan has an active cycle after
        all: another replica (a scheduler hand-over, a RunPlan) queued one meanwhile, and
        the database refuses a second (unique index, migration 0007)."""
        seq = (await s.scalar(select(func.max(Cycle.seq)).where(Cycle.plan_id == plan.id))) or 0
        cycle = Cycle(plan_id=plan.id, seq=seq + 1, state="queued")
        try:
            async with s.begin_nested():  # a savepoint: the caller's transaction goes on
                s.add(cycle)
                await s.flush()
        except IntegrityError as e:
            log.info("cycle not queued: another is active or took its number", plan=plan.id,
                     cycle=seq + 1, error=type(e.orig).__name__)
            return None
        source = await s.get(Site, plan.source_site)
        if source.kind == "aws":
            previous = await self._previous_disks(s, plan)
            volumes = []
            for disk_name in plan.disks:
                disk = await s.get(Disk, disk_name)
                volumes.append({"disk": disk_name, "instance_id": disk.workload_id,
                                "volume_id": disk.locator})
            keep = [d["source_snapshot_id"] for d in previous.values()
                    if d.get("source_snapshot_id")]
            s.add(Task(kind="snapshot", cycle_id=cycle.id, plan_id=plan.id, spec={
                "plan": names.plan_name(plan.id), "cycle": names.cycle_name(plan.id, cycle.seq),
                "source_site": source.id, "volumes": volumes, "keep_snapshot_ids": keep}))
        else:
            await self._queue_replicas(s, plan, cycle, {})
        plan.run_requested = False
        log.info("cycle queued", plan=plan.id, cycle=cycle.seq, disks=len(plan.disks))
        metrics.CYCLES.labels(state="queued").inc()
        self.ctx.tasks_queued.notify()
        return cycle

    async def _previous_disks(self, s, plan: Plan) -> dict[str, dict]:
        last = await s.scalar(select(RecoveryPoint).where(RecoveryPoint.plan_id == plan.id)
                              .order_by(RecoveryPoint.create_time.desc()).limit(1))
        return {d["disk"]: d for d in (last.disks if last else [])}

    async def _queue_replicas(self, s, plan: Plan, cycle: Cycle,
                              source_snapshots: dict[str, str]) -> None:
        previous = await self._previous_disks(s, plan)
        target = await s.get(Site, plan.target_site)
        source = await s.get(Site, plan.source_site)
        for disk_name in plan.disks:
            disk = await s.get(Disk, disk_name)
            prev = previous.get(disk_name, {})
            spec = {
                "plan": names.plan_name(plan.id),
                "cycle": names.cycle_name(plan.id, cycle.seq),
                "disk": disk_name,
                "source_kind": source.kind,
                "source_site": source.id,
                "source_locator": disk.locator,
                "size_bytes": disk.size,
                "repository": locator(plan, target),
                "chunk_size_bytes": plan.chunk_size,
                "compression": plan.compression,
                "previous_root_hash": prev.get("root_hash", ""),
                "previous_bitmap": prev.get("bitmap", ""),
                "bitmap": kvm.bitmap_name(plan.id, str(cycle.seq)) if source.kind == "kvm"
                else "",
                "source_snapshot_id": source_snapshots.get(disk_name, ""),
                "previous_source_snapshot_id": prev.get("source_snapshot_id", ""),
                "previous_snapshot_id": prev.get("snapshot_id", "")
                if source.kind in _TRACKING_SOURCES else "",
                "checkpoint_interval_bytes": self.ctx.config.scheduler.checkpoint_interval_bytes,
                "bandwidth_bytes_per_second": plan.bandwidth,
            }
            s.add(Task(kind="replicate", cycle_id=cycle.id, plan_id=plan.id, disk=disk_name,
                       spec=spec, bytes_total=disk.size))
        self.ctx.tasks_queued.notify()

    async def _after_snapshot(self, s, cycle: Cycle, task: Task) -> None:
        plan = await s.get(Plan, cycle.plan_id)
        snaps = task.result.get("source_snapshots", {})
        missing = sorted(set(plan.disks) - set(snaps))
        if missing:
            await self._fail_cycle(s, cycle, "snapshot-missing",
                                   f"the snapshot task returned no snapshot for {missing[0]}")
            return
        await self._queue_replicas(s, plan, cycle, snaps)

    async def credentials(self, task: Task) -> dict[str, AwsSettings]:
        """The AWS settings, secrets unsealed, a task needs: "source" and/or "target".
        Looked up when the task is handed to a node, so specs in the database never
        hold a secret."""
        out: dict[str, AwsSettings] = {}
        refs = {"source": task.spec.get("source_site", ""),
                "target": task.spec.get("repository", {}).get("site", "")}
        async with self.ctx.db() as s:
            for role, site_id in refs.items():
                site = await s.get(Site, site_id) if site_id else None
                if site is not None and site.kind == "aws":
                    out[role] = aws_settings(self.ctx, site)
        return out

    async def _after_replicate(self, s, cycle: Cycle) -> None:
        tasks = (await s.scalars(select(Task).where(Task.cycle_id == cycle.id))).all()
        if any(t.kind == "finalize" for t in tasks):
            return
        if not all(t.state == "completed" for t in tasks):
            return
        plan = await s.get(Plan, cycle.plan_id)
        target = await s.get(Site, plan.target_site)
        disks = [{"disk": t.disk, "root_hash": t.result.get("root_hash", ""),
                  "size_bytes": t.result["size_bytes"], "full_sync": t.full_sync,
                  "bitmap": t.result.get("bitmap", ""),
                  "full_sync_reason": t.result.get("full_sync_reason", ""),
                  "snapshot_id": t.result.get("snapshot_id", ""),
                  "source_snapshot_id": t.spec.get("source_snapshot_id", "")}
                 for t in sorted(tasks, key=lambda t: t.disk) if t.kind == "replicate"]
        spec = {"plan": names.plan_name(plan.id), "cycle": names.cycle_name(plan.id, cycle.seq),
                "recovery_point_id": _point_id(cycle, utcnow()),
                "repository": locator(plan, target), "disks": disks}
        s.add(Task(kind="finalize", cycle_id=cycle.id, plan_id=plan.id, spec=spec))
        self.ctx.tasks_queued.notify()

    async def _after_finalize(self, s, cycle: Cycle, task: Task) -> None:
        tasks = (await s.scalars(select(Task).where(
            Task.cycle_id == cycle.id, Task.kind == "replicate"))).all()
        stats: dict[str, int] = {}
        for t in tasks:
            for k, v in t.stats.items():
                stats[k] = stats.get(k, 0) + int(v)
        point_id = task.spec["recovery_point_id"]
        s.add(RecoveryPoint(plan_id=cycle.plan_id, id=point_id, cycle_id=cycle.id,
                            cycle_seq=cycle.seq, disks=task.spec["disks"], stats=stats))
        cycle.state, cycle.end_time, cycle.recovery_point_id = "completed", utcnow(), point_id
        metrics.CYCLES.labels(state="completed").inc()
        log.info("recovery point recorded", plan=cycle.plan_id, cycle=cycle.seq, point=point_id)
        # A new newest point: retention may now let older ones go.
        await deletion.apply_retention(self.ctx, s, await s.get(Plan, cycle.plan_id))

    async def _fail_cycle(self, s, cycle: Cycle, reason: str, message: str) -> None:
        cycle.state, cycle.end_time = "failed", utcnow()
        cycle.error_reason, cycle.error_message = reason, message
        await s.execute(update(Task).where(Task.cycle_id == cycle.id, Task.state == "queued")
                        .values(state="cancelled", end_time=utcnow()))
        await s.execute(update(Task).where(Task.cycle_id == cycle.id, Task.state == "leased")
                        .values(cancel_requested=True))
        metrics.CYCLES.labels(state="failed").inc()
        log.warning("cycle failed", plan=cycle.plan_id, cycle=cycle.seq, reason=reason,
                    message=message)

    # -- nodes --------------------------------------------------------------------

    async def register_node(self, node_id: str, *, hostname: str, version: str,
                            max_tasks: int, budget_bytes: int) -> Node:
        names.check_id(node_id, field="node_id", what="node")
        async with self.ctx.db() as s, s.begin():
            node = await s.get(Node, node_id)
            if node is None:
                node = Node(id=node_id)
                s.add(node)
            node.hostname, node.version = hostname, version
            node.max_tasks, node.budget_bytes = max(1, max_tasks), budget_bytes
            node.last_heartbeat_time = utcnow()
        log.info("node registered", node=node_id, hostname=hostname, max_tasks=max_tasks)
        return node

    async def heartbeat(self, node_name: str, *, running_tasks: int, inflight_bytes: int,
                        backpressure: float = 0.0) -> None:
        node_id = names.parse_node(node_name, field="node")
        now = utcnow()
        async with self.ctx.db() as s, s.begin():
            node = await s.get(Node, node_id)
            if node is None:
                raise NotFound(f"node {node_name} is not registered; register it again")
            node.last_heartbeat_time, node.running_tasks = now, running_tasks
            node.inflight_bytes = inflight_bytes
            node.backpressure = min(1.0, max(0.0, backpressure))
            await s.execute(update(Task).where(Task.node_id == node_id, Task.state == "leased")
                            .values(lease_expire_time=now + self.lease))

    async def list_nodes(self) -> list[Node]:
        """Every node, each with `leased_tasks` (the tasks leased to it now) set."""
        async with self.ctx.db() as s:
            nodes = list((await s.scalars(select(Node).order_by(Node.id))).all())
            leased = await self._leased_counts(s)
        for n in nodes:
            n.leased_tasks = leased.get(n.id, 0)
        return nodes

    async def get_node(self, node_name: str) -> Node:
        node_id = names.parse_node(node_name)
        async with self.ctx.db() as s:
            node = await s.get(Node, node_id)
            if node is None:
                raise NotFound(f"node {node_name} not found")
            node.leased_tasks = (await self._leased_counts(s, node_id)).get(node_id, 0)
        return node

    async def set_draining(self, node_name: str, draining: bool) -> Node:
        """DrainNode/UndrainNode. A draining node gets no new task, and each of its
        running tasks is told to go back (ReportProgressResponse.release) at its next
        progress report: it is queued again with its checkpoint, costing no attempt."""
        node_id = names.parse_node(node_name)
        async with self.ctx.db() as s, s.begin():
            node = await s.get(Node, node_id)
            if node is None:
                raise NotFound(f"node {node_name} not found")
            node.draining = draining
        log.info("node draining" if draining else "node undrained", node=node_id)
        if not draining:
            self.ctx.tasks_queued.notify()
        return await self.get_node(node_name)

    @staticmethod
    async def _leased_counts(s, node_id: str | None = None) -> dict[str, int]:
        q = select(Task.node_id, func.count()).where(Task.state == "leased")
        if node_id is not None:
            q = q.where(Task.node_id == node_id)
        return dict((await s.execute(q.group_by(Task.node_id))).all())

    def node_online(self, node: Node) -> bool:
        return utcnow() - node.last_heartbeat_time < self.lease

    # -- tasks --------------------------------------------------------------------

    async def acquire_task(self, node_name: str) -> Task | None:
        """Leases the next queued task to this node, or None: nothing is queued, the
        node is draining or at capacity, or a less loaded node asks too (should_defer)."""
        node_id = names.parse_node(node_name, field="node")
        self._asking[node_id] = time.monotonic()
        async with self.ctx.db() as s, s.begin():
            node = await s.get(Node, node_id)
            if node is None:
                raise NotFound(f"node {node_name} is not registered; register it again")
            if node.draining:
                return None
            queued = (await s.scalars(select(Task).where(Task.state == "queued")
                                      .order_by(Task.id).limit(64))).all()
            if not queued:
                return None
            depth = len(queued) if len(queued) < 64 else await s.scalar(
                select(func.count()).select_from(Task).where(Task.state == "queued"))
            if await self._defer(s, node, depth):
                return None
            for task in sorted(queued, key=lambda t: (_KIND_PRIORITY[t.kind], t.id)):
                now = utcnow()
                # Conditional update: with several control replicas, only one wins a task.
                won = await s.execute(
                    update(Task).where(Task.id == task.id, Task.state == "queued").values(
                        state="leased", node_id=node_id, lease_token=Task.lease_token + 1,
                        lease_expire_time=now + self.lease, attempts=Task.attempts + 1))
                if won.rowcount != 1:
                    continue
                await s.refresh(task)
                if task.cycle_id is not None:
                    await s.execute(update(Cycle).where(
                        Cycle.id == task.cycle_id, Cycle.state == "queued").values(
                        state="running"))
                log.info("task leased", task=task.id, kind=task.kind, node=node_id,
                         disk=task.disk, attempt=task.attempts)
                return task
        return None

    async def _defer(self, s, node: Node, queued: int) -> bool:
        """The load rule (should_defer) for `node`, with its peers from the database."""
        leased = await self._leased_counts(s)
        me = NodeLoad(node.id, leased.get(node.id, 0), node.max_tasks, node.backpressure)
        horizon = time.monotonic() - ASKING_SECONDS
        asking = [i for i, t in self._asking.items() if t >= horizon and i != node.id]
        peers = []
        if asking and me.free > 0:
            for n in (await s.scalars(select(Node).where(Node.id.in_(asking)))).all():
                if n.draining or not self.node_online(n):
                    continue
                peers.append(NodeLoad(n.id, leased.get(n.id, 0), n.max_tasks, n.backpressure))
        return should_defer(me, peers, queued)

    async def _leased(self, s, task_name: str, token: int) -> Task:
        task_id = int(names.parse_task(task_name, field="task"))
        task = await s.get(Task, task_id)
        if task is None:
            raise NotFound(f"task {task_name} not found")
        if task.state != "leased" or task.lease_token != token:
            raise FailedPrecondition(
                f"the lease on {task_name} was lost (token {token}); stop working on it",
                reason="lease-lost")
        return task

    async def report_progress(self, task_name: str, token: int, *, checkpoint: dict,
                              bytes_done: int, stats: dict, full_sync: bool) -> Progress:
        """Records progress and renews the lease. Returns whether to cancel the task,
        the plan's bandwidth cap now (running tasks follow changes to the plan) and
        whether to hand the task back (its node is draining)."""
        async with self.ctx.db() as s, s.begin():
            task = await self._leased(s, task_name, token)
            if checkpoint:
                task.checkpoint = checkpoint
            task.bytes_done, task.stats, task.full_sync = bytes_done, stats, full_sync
            task.lease_expire_time = utcnow() + self.lease
            plan = await s.get(Plan, task.plan_id) if task.plan_id else None
            node = await s.get(Node, task.node_id) if task.node_id else None
            return Progress(task.cancel_requested, plan.bandwidth if plan else 0,
                            bool(node is not None and node.draining))

    async def complete_task(self, task_name: str, token: int, *, error: dict | None,
                            stats: dict, result: dict, full_sync: bool) -> None:
        async with self.ctx.db() as s, s.begin():
            task = await self._leased(s, task_name, token)
            task.stats, task.full_sync = stats or task.stats, full_sync
            if error:
                await self._task_error(s, task, error)
                return
            task.state, task.end_time, task.result = "completed", utcnow(), result
            task.bytes_done = task.bytes_total or task.bytes_done
            log.info("task completed", task=task.id, kind=task.kind, disk=task.disk)
            if task.kind == "delete":
                await deletion.after_delete(s, task)
            elif task.kind == "gc":
                await deletion.after_gc(s, task)
            cycle = await s.get(Cycle, task.cycle_id) if task.cycle_id else None
            if cycle is None or cycle.state not in ACTIVE_CYCLE_STATES:
                return
            if task.kind == "snapshot":
                await self._after_snapshot(s, cycle, task)
            elif task.kind == "replicate":
                await self._after_replicate(s, cycle)
            elif task.kind == "finalize":
                await self._after_finalize(s, cycle, task)

    async def _task_error(self, s, task: Task, error: dict) -> None:
        reason, message = error.get("reason", "internal"), error.get("message", "")
        released = reason == RELEASED
        if released:
            task.attempts -= 1
        if not task.cancel_requested and (released or (
                error.get("retryable") and task.attempts < self.ctx.config.scheduler.max_attempts)):
            task.state, task.node_id, task.lease_expire_time = "queued", None, None
            task.error_reason, task.error_message = reason, message
            log.warning("task requeued", task=task.id, kind=task.kind, reason=reason,
                        message=message, attempt=task.attempts)
            self.ctx.tasks_queued.notify()
            return
        task.state = "cancelled" if reason == "cancelled" else "failed"
        task.end_time, task.error_reason, task.error_message = utcnow(), reason, message
        log.warning("task failed", task=task.id, kind=task.kind, reason=reason, message=message)
        if task.kind == "delete":
            await deletion.after_delete_failed(s, task)
        if task.cycle_id is not None:
            cycle = await s.get(Cycle, task.cycle_id)
            if cycle.state in ACTIVE_CYCLE_STATES:
                where = f" ({task.disk})" if task.disk else ""
                await self._fail_cycle(s, cycle, reason, f"{task.kind}{where}: {message}")

    async def expire_leases(self) -> int:
        """Queues again every task whose node stopped renewing its lease."""
        now = utcnow()
        async with self.ctx.db() as s, s.begin():
            expired = (await s.scalars(select(Task).where(
                Task.state == "leased", Task.lease_expire_time < now))).all()
            for task in expired:
                log.warning("lease expired", task=task.id, kind=task.kind, node=task.node_id,
                            disk=task.disk)
                await self._task_error(s, task, {
                    "reason": "lease-expired", "retryable": True,
                    "message": f"node {task.node_id} stopped renewing its lease"})
        return len(expired)
