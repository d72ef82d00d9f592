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
from sqlalchemy import func, insert, select, update
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
from dr_control.services.routing import PAIR_SITE, bound_site, locator, target_task

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
# A paired replicate task's reason to stay queued: no target node can take its stream.
NO_TARGET_NODE = "no-target-node"
# Load rule (see should_defer): a node defers to an idle-enough peer when that peer's
# load is lower than its own by more than this.
LOAD_MARGIN = 0.2
# A node counts as "asking" for tasks this long after its last AcquireTask poll (the
# long poll looks again every second).
ASKING_SECONDS = 3.0
# How long a task one AcquireTask of this replica tries to lease is skipped by the
# others (Coordinator._claim): longer than a lease transaction takes.
CLAIM_SECONDS = 2.0


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


def _point_id(cycle: Cycle, now: datetime) -> str:
    return f"{now:%Y%m%dt%H%M%Sz}-{cycle.seq}"


class Coordinator:
    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx
        # node id -> monotonic time of its last AcquireTask poll (the load rule's peers).
        self._asking: dict[str, float] = {}
        # task id -> monotonic time an acquire_task of this replica tried to lease it:
        # concurrent polls read the same queued rows, and without this each would try
        # them in the same order, all but one losing the conditional update (a write
        # each). The update still decides (other replicas); this only spreads the polls.
        # A task queued again (_task_error) is forgotten here at once.
        self._claimed: dict[int, float] = {}

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.ctx.config.scheduler.lease_seconds)

    # -- cycles -------------------------------------------------------------------

    async def active_cycle(self, s, plan_id: str) -> Cycle | None:
        return await s.scalar(select(Cycle).where(
            Cycle.plan_id == plan_id, Cycle.state.in_(ACTIVE_CYCLE_STATES)))

    async def start_cycle(self, s, plan: Plan, *,
                          known: tuple[int, RecoveryPoint | None] | None = None,
                          task_rows: list[dict] | None = None) -> Cycle | None:
        """Queues a cycle: its snapshot task (aws sources) or one replicate task per
        disk (caller holds a transaction). None if the plan has an active cycle after
        all: another replica (a scheduler hand-over, a RunPlan) queued one meanwhile, and
        the database refuses a second (unique index, migration 0007).

        `known`: the plan's newest cycle seq (0: none) and newest point, as the caller
        (the scheduler, for many plans at once) already read them in this transaction;
        if another cycle was queued since, its seq is taken and the insert fails.
        `task_rows`: the replicate tasks' rows are appended there, for the caller to
        insert (with those of other plans: one INSERT) before its transaction ends."""
        if known is not None:
            seq, newest = known
        else:
            seq = (await s.scalar(select(func.max(Cycle.seq)).where(
                Cycle.plan_id == plan.id))) or 0
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
        previous = self._disks_of(newest) if known is not None else None
        if source.kind == "aws":
            previous = previous if previous is not None else await self._previous_disks(s, plan)
            volumes = []
            for disk_name in plan.disks:
                disk = await s.get(Disk, disk_name)
                volumes.append({"disk": disk_name, "instance_id": disk.workload_id,
                                "volume_id": disk.locator})
            keep = [d["source_snapshot_id"] for d in previous.values()
                    if d.get("source_snapshot_id")]
            target = await s.get(Site, plan.target_site)
            s.add(Task(kind="snapshot", cycle_id=cycle.id, plan_id=plan.id,
                       site=bound_site(plan, target, "snapshot"), spec={
                "plan": names.plan_name(plan.id), "cycle": names.cycle_name(plan.id, cycle.seq),
                "source_site": source.id, "volumes": volumes, "keep_snapshot_ids": keep}))
        else:
            await self._queue_replicas(s, plan, cycle, {}, previous=previous, rows=task_rows)
        plan.run_requested = False
        log.info("cycle queued", plan=plan.id, cycle=cycle.seq, disks=len(plan.disks))
        metrics.CYCLES.labels(state="queued").inc()
        self.ctx.tasks_queued.notify()
        return cycle

    async def _previous_disks(self, s, plan: Plan) -> dict[str, dict]:
        last = await s.scalar(select(RecoveryPoint).where(RecoveryPoint.plan_id == plan.id)
                              .order_by(RecoveryPoint.create_time.desc()).limit(1))
        return self._disks_of(last)

    @staticmethod
    def _disks_of(point: RecoveryPoint | None) -> dict[str, dict]:
        return {d["disk"]: d for d in (point.disks if point else [])}

    async def _queue_replicas(self, s, plan: Plan, cycle: Cycle,
                              source_snapshots: dict[str, str], *,
                              previous: dict[str, dict] | None = None,
                              rows: list[dict] | None = None) -> None:
        if previous is None:
            previous = await self._previous_disks(s, plan)
        target = await s.get(Site, plan.target_site)
        source = await s.get(Site, plan.source_site)
        own_rows = rows is None
        rows = [] if own_rows else rows
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
            site = bound_site(plan, target, "replicate")
            if site:
                spec[PAIR_SITE] = target.id
            rows.append(dict(kind="replicate", cycle_id=cycle.id, plan_id=plan.id,
                             disk=disk_name, spec=spec, bytes_total=disk.size, site=site))
        # One multi-row INSERT (column defaults apply as for s.add), not a unit-of-work
        # object per disk: the scheduler queues thousands of these in one pass.
        if own_rows:
            await s.execute(insert(Task), rows)
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
        ids = {i for i in refs.values() if i}
        if not ids:
            return out
        async with self.ctx.db() as s:  # one query for both sites, aws ones only
            aws = {site.id: site for site in (await s.scalars(select(Site).where(
                Site.id.in_(ids), Site.kind == "aws"))).all()}
        for role, site_id in refs.items():
            if site_id in aws:
                out[role] = aws_settings(self.ctx, aws[site_id])
        return out

    async def _after_replicate(self, s, cycle: Cycle) -> None:
        tasks = (await s.scalars(select(Task).where(Task.cycle_id == cycle.id))).all()
        if any(t.kind == "finalize" for t in tasks):
            return
        if not all(t.state == "completed" for t in tasks):
            return
        plan = await s.get(Plan, cycle.plan_id)
        disks = [{"disk": t.disk, "root_hash": t.result.get("root_hash", ""),
                  "size_bytes": t.result["size_bytes"], "full_sync": t.full_sync,
                  "bitmap": t.result.get("bitmap", ""),
                  "full_sync_reason": t.result.get("full_sync_reason", ""),
                  "snapshot_id": t.result.get("snapshot_id", ""),
                  "source_snapshot_id": t.spec.get("source_snapshot_id", "")}
                 for t in sorted(tasks, key=lambda t: t.disk) if t.kind == "replicate"]
        spec = {"plan": names.plan_name(plan.id), "cycle": names.cycle_name(plan.id, cycle.seq),
                "recovery_point_id": _point_id(cycle, utcnow()), "disks": disks}
        s.add(await target_task(s, plan, "finalize", spec=spec, cycle_id=cycle.id))
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
                            max_tasks: int, budget_bytes: int, site: str = "",
                            transfer_address: str = "", cert_name: str = "") -> Node:
        """Records a node and where it sits: its site decides which tasks it may take
        (routing.py), its transfer address whether it can be a paired target node.
        `cert_name` is the name on the client certificate it registered with ("" when
        TLS is off): paired source nodes check the node's certificate for it."""
        names.check_id(node_id, field="node_id", what="node")
        if site:
            names.check_id(site, field="site", what="site")
        async with self.ctx.db() as s, s.begin():
            node = await s.get(Node, node_id)
            if node is None:
                node = Node(id=node_id)
                s.add(node)
            node.hostname, node.version = hostname, version
            node.max_tasks, node.budget_bytes = max(1, max_tasks), budget_bytes
            node.site, node.transfer_address = site, transfer_address
            node.cert_name = cert_name
            node.last_heartbeat_time = utcnow()
            known = not site or await s.get(Site, site) is not None
        log.info("node registered", node=node_id, hostname=hostname, max_tasks=max_tasks,
                 site=site, transfer_address=transfer_address)
        if not known:
            log.warning("node registered in a site that is not in the inventory; it gets "
                        "tasks only once a plan names that site (drctl site add)",
                        node=node_id, site=site)
        return node

    async def heartbeat(self, node_name: str, *, running_tasks: int, inflight_bytes: int,
                        backpressure: float = 0.0, pairs: list[dict] | None = None) -> None:
        node_id = names.parse_node(node_name, field="node")
        now = utcnow()
        # Two UPDATEs, no read: the node's row, then its leases (the cheapest write,
        # so heartbeats hold SQLite's single writer as briefly as possible).
        async with self.ctx.db() as s, s.begin():
            found = await s.execute(
                update(Node).where(Node.id == node_id).values(
                    last_heartbeat_time=now, running_tasks=running_tasks,
                    inflight_bytes=inflight_bytes,
                    backpressure=min(1.0, max(0.0, backpressure)), pairs=list(pairs or []))
                .execution_options(synchronize_session=False))
            if found.rowcount != 1:
                raise NotFound(f"node {node_name} is not registered; register it again")
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
        """Leases the next queued task of the node's site to this node, or None: nothing
        is queued, the node is draining or at capacity, a less loaded node asks too
        (should_defer), or the paired replicate tasks queued have no target node."""
        node_id = names.parse_node(node_name, field="node")
        self._asking[node_id] = time.monotonic()
        async with self.ctx.db() as s, s.begin():
            node = await s.get(Node, node_id)
            if node is None:
                raise NotFound(f"node {node_name} is not registered; register it again")
            if node.draining:
                return None
            mine = (Task.state == "queued", Task.site == node.site)
            queued = (await s.scalars(select(Task).where(*mine)
                                      .order_by(Task.id).limit(64))).all()
            if not queued:
                return None
            depth = len(queued) if len(queued) < 64 else None  # None: counted if needed
            if await self._defer(s, node, depth, mine):
                return None
            pairs: dict[str, Node | None] = {}  # target site -> its least loaded node
            for task in sorted(queued, key=lambda t: (_KIND_PRIORITY[t.kind], t.id)):
                now = utcnow()
                values = {}
                if pair_site := task.spec.get(PAIR_SITE):
                    if pair_site not in pairs:
                        pairs[pair_site] = await self._target_node(s, pair_site)
                    if pairs[pair_site] is None:
                        await self._no_target_node(s, task, pair_site)
                        continue
                    values = self._paired(task, pairs[pair_site])
                if not self._claim(task.id):  # another poll of this replica is on it
                    continue
                # Conditional update: with several control replicas, only one wins a task.
                won = await s.execute(
                    update(Task).where(Task.id == task.id, Task.state == "queued").values(
                        state="leased", node_id=node_id, lease_token=Task.lease_token + 1,
                        lease_expire_time=now + self.lease, attempts=Task.attempts + 1,
                        **values).execution_options(synchronize_session=False))
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

    def _claim(self, task_id: int) -> bool:
        """Whether no other acquire_task of this replica tried `task_id` in the last
        CLAIM_SECONDS (then this one may)."""
        now = time.monotonic()
        if now - self._claimed.get(task_id, -CLAIM_SECONDS) < CLAIM_SECONDS:
            return False
        if len(self._claimed) > 4096:
            self._claimed = {i: t for i, t in self._claimed.items() if now - t < CLAIM_SECONDS}
        self._claimed[task_id] = now
        return True

    async def _defer(self, s, node: Node, queued: int | None, mine=()) -> bool:
        """The load rule (should_defer) for `node`, with its peers from the database.
        `queued` None: 64 or more are queued (WHERE `mine`); they are counted only when
        the rule needs the number, and only up to the free slots it compares with."""
        leased = await self._leased_counts(s)
        me = NodeLoad(node.id, leased.get(node.id, 0), node.max_tasks, node.backpressure)
        horizon = time.monotonic() - ASKING_SECONDS
        asking = [i for i, t in self._asking.items() if t >= horizon and i != node.id]
        peers = []
        if asking and me.free > 0:
            for n in (await s.scalars(select(Node).where(
                    Node.id.in_(asking), Node.site == node.site))).all():
                if n.draining or not self.node_online(n):
                    continue
                peers.append(NodeLoad(n.id, leased.get(n.id, 0), n.max_tasks, n.backpressure))
        if queued is None:
            # should_defer compares the depth with these free slots together (and
            # answers at once for a full node): a count capped there decides alike.
            free = me.free + sum(p.free for p in peers if p.free > 0 and p.node_id != me.node_id)
            queued = 64 if me.free <= 0 or free <= 64 else await s.scalar(
                select(func.count()).select_from(
                    select(Task.id).where(*mine).limit(free).subquery()))
        return should_defer(me, peers, queued)

    # -- pairs (paired topology: routing.py) ----------------------------------------

    async def _target_node(self, s, site_id: str) -> Node | None:
        """The node a paired replicate task streams to: online, not draining, in the
        target site and serving transfers; the least loaded by the load rule, counting
        the disk streams paired with it as tasks it runs."""
        nodes = (await s.scalars(select(Node).where(
            Node.site == site_id, Node.transfer_address != "", Node.draining.is_(False),
            Node.last_heartbeat_time > utcnow() - self.lease))).all()
        if not nodes:
            return None
        leased = await self._leased_counts(s)
        streams = await self._paired_streams(s)
        return min(nodes, key=lambda n: (node_load(
            leased.get(n.id, 0) + streams.get(n.id, 0), n.max_tasks, n.backpressure), n.id))

    @staticmethod
    async def _paired_streams(s) -> dict[str, int]:
        """Target node id -> the leased replicate tasks streaming to it (only bound
        replicate tasks can have a pair, so unbound work is not read)."""
        counts: dict[str, int] = {}
        for spec in (await s.scalars(select(Task.spec).where(
                Task.state == "leased", Task.kind == "replicate", Task.site != ""))).all():
            if spec.get("pair_node"):
                node_id = names.parse_node(spec["pair_node"])
                counts[node_id] = counts.get(node_id, 0) + 1
        return counts

    @staticmethod
    def _paired(task: Task, target: Node) -> dict:
        """The lease's column values that give `task` its pair (kept in the spec, so
        the task row shows which target node writes the disk)."""
        spec = {**task.spec, "pair_node": names.node_name(target.id),
                "pair_address": target.transfer_address, "pair_cert_name": target.cert_name}
        values: dict = {"spec": spec}
        if task.error_reason == NO_TARGET_NODE:
            values.update(error_reason="", error_message="")
        return values

    async def _no_target_node(self, s, task: Task, site_id: str) -> None:
        """Leaves a paired replicate task queued, saying why on the task (once, not at
        every poll)."""
        if task.error_reason == NO_TARGET_NODE:
            return
        message = (f"waiting for a target node in site {names.site_name(site_id)}: start a "
                   f"dr-node there with site = \"{site_id}\" and [transfer] listen set, or "
                   f"undrain one (drctl node list shows them)")
        await s.execute(update(Task).where(Task.id == task.id, Task.state == "queued").values(
            error_reason=NO_TARGET_NODE, error_message=message))
        log.warning("paired task not leased: no target node", task=task.id, plan=task.plan_id,
                    disk=task.disk, site=site_id)

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
            self._claimed.pop(task.id, None)  # queued again: any poll may lease it now
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
