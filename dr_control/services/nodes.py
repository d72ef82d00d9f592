"""Nodes: registration, heartbeats, draining, and the load rule that spreads tasks.

A node registers with its capacity and where it sits (its site decides which tasks it may
take, routing.py; its transfer address whether it can be a paired target node), then
heartbeats: each heartbeat renews the leases of every task it holds. A node is online
while its last heartbeat is younger than one lease. Which task a node is given is
leasing.py's business; how loaded a node is, and whether it should leave a task to a
less loaded peer, is decided here (should_defer).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import structlog
from sqlalchemy import func, select, update

from dr_common import names
from dr_common.errors import NotFound
from dr_control.db.models import Node, Site, Task, utcnow
from dr_control.services.context import ServiceContext

log = structlog.get_logger()

# Load rule (see should_defer): a node defers to an idle-enough peer when that peer's
# load is lower than its own by more than this.
LOAD_MARGIN = 0.2


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
      within leasing.ASKING_SECONDS), online, not draining and with a free slot, is
      less loaded by more than LOAD_MARGIN;
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


def lease_duration(ctx: ServiceContext) -> timedelta:
    """How long a task lease lasts without renewal, and so how long a node stays online
    after its last heartbeat."""
    return timedelta(seconds=ctx.config.scheduler.lease_seconds)


def node_online(ctx: ServiceContext, node: Node) -> bool:
    return utcnow() - node.last_heartbeat_time < lease_duration(ctx)


async def leased_counts(s, node_id: str | None = None) -> dict[str, int]:
    """Node id -> the tasks leased to it now (of `node_id` alone when given)."""
    q = select(Task.node_id, func.count()).where(Task.state == "leased")
    if node_id is not None:
        q = q.where(Task.node_id == node_id)
    return dict((await s.execute(q.group_by(Task.node_id))).all())


async def register_node(ctx: ServiceContext, node_id: str, *, hostname: str, version: str,
                        max_tasks: int, budget_bytes: int, site: str = "",
                        transfer_address: str = "", cert_name: str = "") -> Node:
    """Records a node and where it sits: its site decides which tasks it may take
    (routing.py), its transfer address whether it can be a paired target node.
    `cert_name` is the name on the client certificate it registered with ("" when
    TLS is off): paired source nodes check the node's certificate for it."""
    names.check_id(node_id, field="node_id", what="node")
    if site:
        names.check_id(site, field="site", what="site")
    async with ctx.db() as s, s.begin():
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


async def heartbeat(ctx: ServiceContext, node_name: str, *, running_tasks: int,
                    inflight_bytes: int, backpressure: float = 0.0,
                    pairs: list[dict] | None = None, tasks: list[str] | None = None) -> None:
    """Records a node's heartbeat and renews the leases of the tasks it runs (`tasks`;
    every lease of the node when it lists none but runs some: a node of before the
    list). A task leased to it that it does not run keeps its expiry and is queued
    again when that passes."""
    node_id = names.parse_node(node_name, field="node")
    running = [int(t.rsplit("/", 1)[1]) for t in tasks or () if t.rsplit("/", 1)[-1].isdigit()]
    now = utcnow()
    # Two UPDATEs, no read: the node's row, then its leases (the cheapest write,
    # so heartbeats hold SQLite's single writer as briefly as possible).
    async with ctx.db() as s, s.begin():
        found = await s.execute(
            update(Node).where(Node.id == node_id).values(
                last_heartbeat_time=now, running_tasks=running_tasks,
                inflight_bytes=inflight_bytes,
                backpressure=min(1.0, max(0.0, backpressure)), pairs=list(pairs or []))
            .execution_options(synchronize_session=False))
        if found.rowcount != 1:
            raise NotFound(f"node {node_name} is not registered; register it again")
        mine = (Task.node_id == node_id) & (Task.state == "leased")
        if tasks or not running_tasks:
            mine = mine & Task.id.in_(running)
        await s.execute(update(Task).where(mine)
                        .values(lease_expire_time=now + lease_duration(ctx)))


async def list_nodes(ctx: ServiceContext) -> list[Node]:
    """Every node, each with `leased_tasks` (the tasks leased to it now) set."""
    async with ctx.db() as s:
        nodes = list((await s.scalars(select(Node).order_by(Node.id))).all())
        leased = await leased_counts(s)
    for n in nodes:
        n.leased_tasks = leased.get(n.id, 0)
    return nodes


async def get_node(ctx: ServiceContext, node_name: str) -> Node:
    node_id = names.parse_node(node_name)
    async with ctx.db() as s:
        node = await s.get(Node, node_id)
        if node is None:
            raise NotFound(f"node {node_name} not found")
        node.leased_tasks = (await leased_counts(s, node_id)).get(node_id, 0)
    return node


async def set_draining(ctx: ServiceContext, node_name: str, draining: bool) -> Node:
    """DrainNode/UndrainNode. A draining node gets no new task, and each of its
    running tasks is told to go back (ReportProgressResponse.release) at its next
    progress report: it is queued again with its checkpoint, costing no attempt."""
    node_id = names.parse_node(node_name)
    async with ctx.db() as s, s.begin():
        node = await s.get(Node, node_id)
        if node is None:
            raise NotFound(f"node {node_name} not found")
        node.draining = draining
    log.info("node draining" if draining else "node undrained", node=node_id)
    if not draining:
        ctx.tasks_queued.notify()
    return await get_node(ctx, node_name)
