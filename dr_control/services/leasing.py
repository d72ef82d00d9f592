"""Task leases: which queued task a node gets, how a lease is fenced, renewed and ended.

Leases: a task is leased to one node at a time with a `lease_token` that grows on each
lease. Every report carries the token; a stale holder (whose lease expired and whose
task went to another node) gets FailedPrecondition and must stop. A task whose lease
expires is queued again with its checkpoint, so the next holder resumes at the watermark.

A node asking for work gets the next queued task of its site (routing.py) by kind
priority, unless the load rule (nodes.should_defer) leaves it to a less loaded peer; a
paired replicate task is leased only with a target node to stream to, chosen here. What
a completed or failed task changes beyond its own row is the business of its kind's
module (cycles.py, deletion.py); the credentials a task needs are looked up only when it
is handed to a node.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import structlog
from sqlalchemy import func, select, update

from dr_common import names
from dr_common.proto.dr.v1 import common_pb2, nodes_pb2
from dr_common.errors import FailedPrecondition, NotFound
from dr_control.db.models import Cycle, Node, Plan, Site, Task, utcnow
from dr_control.services import cycles, deletion, inventory, taskspecs
from dr_control.services.context import ServiceContext
from dr_control.services.nodes import (NodeLoad, leased_counts, lease_duration, node_load,
                                       node_online, should_defer)

log = structlog.get_logger()

# Finalizing a cycle and user operations go before more replication work.
_KIND_PRIORITY = {"finalize": 0, "snapshot": 0, "drop_snapshots": 0, "restore": 1,
                  "verify": 1, "delete": 1, "replicate": 2, "gc": 3}
# A graceful node stop hands its tasks back with this reason; it costs no attempt.
RELEASED = "node-stopping"
# A paired replicate task's reason to stay queued: no target node can take its stream.
NO_TARGET_NODE = "no-target-node"
# A node counts as "asking" for tasks this long after its last AcquireTask poll (the
# long poll looks again every second).
ASKING_SECONDS = 3.0
# How long a task one AcquireTask of this replica tries to lease is skipped by the
# others (Leases._claim): longer than a lease transaction takes.
CLAIM_SECONDS = 2.0
# What a task of these kinds changes when it ends, besides its row and its cycle's.
_AFTER_COMPLETED = {"delete": deletion.after_delete, "gc": deletion.after_gc}
_AFTER_FAILED = {"delete": deletion.after_delete_failed}


class Progress(NamedTuple):
    """What a progress report tells the node back."""

    cancel: bool  # the task was cancelled: stop it
    bandwidth: int  # the plan's bandwidth cap now
    release: bool  # the node is draining: hand the task back


class Leases:
    """The leases this control replica hands out, and what it remembers of the polls
    between them (one per process: the servicers and the scheduler share it)."""

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

    async def acquire_task(self, node_name: str) -> Task | None:
        """Leases the next queued task of the node's site to this node, or None: nothing
        is queued, the node is draining or at capacity, a less loaded node asks too
        (should_defer), or the paired replicate tasks queued have no target node."""
        node_id = names.parse_node(node_name, field="node")
        self._asking[node_id] = time.monotonic()
        lease = lease_duration(self.ctx)
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
                if pair_site := task.pair_site:
                    if pair_site not in pairs:
                        pairs[pair_site] = await _target_node(self.ctx, s, pair_site)
                    if pairs[pair_site] is None:
                        await _no_target_node(s, task, pair_site)
                        continue
                    values = _paired(task, pairs[pair_site])
                if not self._claim(task.id):  # another poll of this replica is on it
                    continue
                # Conditional update: with several control replicas, only one wins a task.
                won = await s.execute(
                    update(Task).where(Task.id == task.id, Task.state == "queued").values(
                        state="leased", node_id=node_id, lease_token=Task.lease_token + 1,
                        lease_expire_time=now + lease, attempts=Task.attempts + 1,
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
        leased = await leased_counts(s)
        me = NodeLoad(node.id, leased.get(node.id, 0), node.max_tasks, node.backpressure)
        horizon = time.monotonic() - ASKING_SECONDS
        asking = [i for i, t in self._asking.items() if t >= horizon and i != node.id]
        peers = []
        if asking and me.free > 0:
            for n in (await s.scalars(select(Node).where(
                    Node.id.in_(asking), Node.site == node.site))).all():
                if n.draining or not node_online(self.ctx, n):
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

    async def report_progress(self, task_name: str, token: int, *, checkpoint: dict,
                              bytes_done: int, stats: dict, full_sync: bool) -> Progress:
        """Records progress and renews the lease. Returns whether to cancel the task,
        the plan's bandwidth cap now (running tasks follow changes to the plan) and
        whether to hand the task back (its node is draining)."""
        async with self.ctx.db() as s, s.begin():
            task = await _leased(s, task_name, token)
            if checkpoint:
                task.checkpoint = checkpoint
            task.bytes_done, task.stats, task.full_sync = bytes_done, stats, full_sync
            task.lease_expire_time = utcnow() + lease_duration(self.ctx)
            plan = await s.get(Plan, task.plan_id) if task.plan_id else None
            node = await s.get(Node, task.node_id) if task.node_id else None
            return Progress(task.cancel_requested, plan.bandwidth if plan else 0,
                            bool(node is not None and node.draining))

    async def complete_task(self, task_name: str, token: int, *, error: dict | None,
                            stats: dict, result: dict, full_sync: bool) -> None:
        async with self.ctx.db() as s, s.begin():
            task = await _leased(s, task_name, token)
            task.stats, task.full_sync = stats or task.stats, full_sync
            if error:
                await self._task_error(s, task, error)
                return
            task.state, task.end_time, task.result = "completed", utcnow(), result
            task.bytes_done = task.bytes_total or task.bytes_done
            log.info("task completed", task=task.id, kind=task.kind, disk=task.disk)
            if after := _AFTER_COMPLETED.get(task.kind):
                await after(s, task)
            await cycles.task_completed(self.ctx, s, task)

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
        if after := _AFTER_FAILED.get(task.kind):
            await after(s, task)
        await cycles.task_failed(s, task, reason, message)

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


async def _leased(s, task_name: str, token: int) -> Task:
    """The task, if `token` is its current lease; FailedPrecondition for a stale holder."""
    task_id = int(names.parse_task(task_name, field="task"))
    task = await s.get(Task, task_id)
    if task is None:
        raise NotFound(f"task {task_name} not found")
    if task.state != "leased" or task.lease_token != token:
        raise FailedPrecondition(
            f"the lease on {task_name} was lost (token {token}); stop working on it",
            reason="lease-lost")
    return task


async def site_settings(ctx: ServiceContext, task: Task
                        ) -> dict[str, common_pb2.SiteSettings]:
    """The settings, secrets unsealed, of the sites a task works with: "source",
    "target" and "destination" (a restore writing to another site), sites whose kind has
    settings only. Looked up when the task is handed to
    a node, so specs in the database never hold a secret."""
    refs = {"source": task.source_site, "target": task.target_site,
            "destination": task.destination_site}
    ids = {i for i in refs.values() if i}
    if not ids:
        return {}
    async with ctx.db() as s:  # one query for both sites
        found = {site.id: site for site in (await s.scalars(select(Site).where(
            Site.id.in_(ids)))).all()}
    out = {}
    for role, site_id in refs.items():
        if site_id in found:
            settings = inventory.task_settings(ctx, found[site_id])
            if settings.WhichOneof("kind"):
                out[role] = settings
    return out


# --- pairs (paired topology: routing.py) ----------------------------------------------

async def _target_node(ctx: ServiceContext, s, site_id: str) -> Node | None:
    """The node a paired replicate task streams to: online, not draining, in the
    target site and serving transfers; the least loaded by the load rule, counting
    the disk streams paired with it as tasks it runs."""
    nodes = (await s.scalars(select(Node).where(
        Node.site == site_id, Node.transfer_address != "", Node.draining.is_(False),
        Node.last_heartbeat_time > utcnow() - lease_duration(ctx)))).all()
    if not nodes:
        return None
    leased = await leased_counts(s)
    streams = await _paired_streams(s)
    return min(nodes, key=lambda n: (node_load(
        leased.get(n.id, 0) + streams.get(n.id, 0), n.max_tasks, n.backpressure), n.id))


async def _paired_streams(s) -> dict[str, int]:
    """Target node id -> the leased replicate tasks streaming to it (only bound
    replicate tasks can have a pair, so unbound work is not read)."""
    counts: dict[str, int] = {}
    for spec in (await s.scalars(select(Task.spec).where(
            Task.state == "leased", Task.kind == "replicate", Task.pair_site != ""))).all():
        if node := spec.get("pair", {}).get("node"):
            node_id = names.parse_node(node)
            counts[node_id] = counts.get(node_id, 0) + 1
    return counts


def _paired(task: Task, target: Node) -> dict:
    """The lease's column values that give `task` its pair (kept in the spec, so
    the task row shows which target node writes the disk)."""
    spec = taskspecs.load(task)
    spec.pair.CopyFrom(nodes_pb2.Pair(node=names.node_name(target.id),
                                      address=target.transfer_address,
                                      cert_name=target.cert_name))
    values: dict = {"spec": taskspecs.store(spec)}
    if task.error_reason == NO_TARGET_NODE:
        values.update(error_reason="", error_message="")
    return values


async def _no_target_node(s, task: Task, site_id: str) -> None:
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
