"""Replication cycles: queueing a cycle and its tasks, and how a cycle ends.

A cycle has one `replicate` task per disk; for a source that snapshots (aws: the
source registry says which), a `snapshot` task first
takes the consistency group's snapshots, and the replicate tasks read from those. When all
are completed, one `finalize` task writes the recovery-point object at the target (the
last write of the cycle); only when that succeeds does the control plane record the
recovery point, so a cycle that dies anywhere before leaves no visible point. A task that
fails for good fails its cycle (fail_cycle): queued siblings are cancelled, running ones
told to stop.

What each task kind is sent is a typed message built by one function each
(snapshot_spec, replicate_spec, finalize_spec; the target's locator is added by
routing.target_task), stored with taskspecs.store; sources and targets are named by
their registries' locators, never by branches on their kinds here. Who leases the tasks,
and when a completed or failed one comes back here, is leasing.py's business.
"""

from __future__ import annotations

from datetime import datetime

import structlog
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from dr_common import names, sources, targets
from dr_common.proto.dr.v1 import nodes_pb2
from dr_common.sources.base import DiskToRead
from dr_control import metrics
from dr_control.db.models import Cycle, Disk, Plan, RecoveryPoint, Site, Task, utcnow
from dr_control.services import deletion, taskspecs
from dr_control.services.context import ServiceContext
from dr_control.services.routing import bound_site, target_task

log = structlog.get_logger()

ACTIVE_CYCLE_STATES = ("queued", "running")


def point_id(cycle: Cycle, now: datetime) -> str:
    """The id of the recovery point a cycle makes: its time, then its seq."""
    return f"{now:%Y%m%dt%H%M%Sz}-{cycle.seq}"


# --- task specs ---------------------------------------------------------------------------

def snapshot_spec(plan: Plan, cycle: Cycle, source: Site, disks: list[Disk],
                  previous: dict[str, dict], *, stop_workloads: bool = False
                  ) -> nodes_pb2.SnapshotSpec:
    """The snapshot task's spec: the group's disks, and the source snapshots of the
    newest point, which the next cycle still needs (the node deletes the other snapshots
    the plan took); with `stop_workloads`, the node stops the group's workloads first
    (the final cycle of a migration)."""
    spec = nodes_pb2.SnapshotSpec(
        plan=names.plan_name(plan.id), cycle=names.cycle_name(plan.id, cycle.seq),
        disks=_group(disks),
        keep_snapshot_ids=[d["source_snapshot_id"] for d in previous.values()
                           if d.get("source_snapshot_id")],
        quiesce=bool(plan.quiesce), stop_workloads=stop_workloads)
    getattr(spec.source, sources.kind(source.kind).name).SetInParent()
    return spec


def drop_snapshots_spec(plan: Plan, cycle: Cycle, source: Site,
                 disks: list[Disk]) -> nodes_pb2.DropSnapshotsSpec:
    spec = nodes_pb2.DropSnapshotsSpec(plan=names.plan_name(plan.id),
                                 cycle=names.cycle_name(plan.id, cycle.seq),
                                 disks=_group(disks))
    getattr(spec.source, sources.kind(source.kind).name).SetInParent()
    return spec


def _group(disks: list[Disk]) -> list[nodes_pb2.SnapshotDisk]:
    """The consistency group's disks, as the snapshot and drop_snapshots tasks name them."""
    return [nodes_pb2.SnapshotDisk(disk=d.name, workload=d.workload_id, locator=d.locator)
            for d in disks]


def replicate_spec(plan: Plan, cycle: Cycle, source: Site, target: Site, disk: Disk, *,
                   previous: dict, source_snapshot_id: str, checkpoint_interval_bytes: int
                   ) -> nodes_pb2.ReplicateSpec:
    """A replicate task's spec for one disk. `previous`: the disk's entry in the
    previous recovery point ({} if none). A paired task's `pair` is set when it is
    leased (leasing.py)."""
    plan_name, cycle_name = names.plan_name(plan.id), names.cycle_name(plan.id, cycle.seq)
    spec = nodes_pb2.ReplicateSpec(
        plan=plan_name, cycle=cycle_name, disk=disk.name, size_bytes=disk.size,
        chunk_size_bytes=plan.chunk_size, compression=plan.compression,
        previous_root_hash=previous.get("root_hash", ""),
        previous_snapshot_id=previous.get("snapshot_id", ""),
        checkpoint_interval_bytes=checkpoint_interval_bytes,
        bandwidth_bytes_per_second=plan.bandwidth)
    spec.source.CopyFrom(sources.locator(source.kind, DiskToRead(
        plan=plan_name, cycle=cycle_name, locator=disk.locator, size=disk.size,
        previous_bitmap=previous.get("bitmap", ""), previous_size=previous.get("size_bytes", 0),
        previous_source_snapshot_id=previous.get("source_snapshot_id", ""),
        snapshot_id=source_snapshot_id)))
    spec.target.CopyFrom(targets.locator(plan.target_kind, target.path))
    return spec


def finalize_spec(plan: Plan, cycle: Cycle, tasks: list[Task], now: datetime
                  ) -> nodes_pb2.FinalizeSpec:
    """The finalize task's spec (without the target, which target_task adds): the
    point's id and each disk's result, from the cycle's completed tasks."""
    taken = next((t.result for t in tasks if t.kind == "snapshot"), {})
    snapshots, consistency = taken.get("source_snapshots", {}), taken.get("consistency", {})
    spread = taken.get("spread_seconds", {})
    disks = [nodes_pb2.FinalizeDisk(
        disk=t.disk, root_hash=t.result.get("root_hash", ""),
        size_bytes=t.result["size_bytes"], full_sync=t.full_sync,
        bitmap=t.result.get("bitmap", ""),
        full_sync_reason=t.result.get("full_sync_reason", ""),
        snapshot_id=t.result.get("snapshot_id", ""),
        source_snapshot_id=snapshots.get(t.disk, ""),
        consistency=consistency.get(t.disk, ""), spread_seconds=spread.get(t.disk, 0.0))
        for t in sorted(tasks, key=lambda t: t.disk) if t.kind == "replicate"]
    return nodes_pb2.FinalizeSpec(
        plan=names.plan_name(plan.id), cycle=names.cycle_name(plan.id, cycle.seq),
        recovery_point_id=point_id(cycle, now), disks=disks)


# --- queueing -----------------------------------------------------------------------------

async def active_cycle(s, plan_id: str) -> Cycle | None:
    return await s.scalar(select(Cycle).where(
        Cycle.plan_id == plan_id, Cycle.state.in_(ACTIVE_CYCLE_STATES)))


async def start_cycle(ctx: ServiceContext, s, plan: Plan, *,
                      known: tuple[int, RecoveryPoint | None] | None = None,
                      task_rows: list[dict] | None = None,
                      stop_workloads: bool = False) -> Cycle | None:
    """Queues a cycle: its snapshot task (aws sources) or one replicate task per
    disk (caller holds a transaction). None if the plan has an active cycle after
    all: another replica (a scheduler hand-over, a RunPlan) queued one meanwhile, and
    the database refuses a second (unique index, migration 0007).

    `known`: the plan's newest cycle seq (0: none) and newest point, as the caller
    (the scheduler, for many plans at once) already read them in this transaction;
    if another cycle was queued since, its seq is taken and the insert fails.
    `task_rows`: the replicate tasks' rows are appended there, for the caller to
    insert (with those of other plans: one INSERT) before its transaction ends.

    `stop_workloads`: the final cycle of a migration: the snapshot task stops the
    plan's workloads first and leaves them stopped, so the point holds every write they
    made. A kind without snapshot tasks (file: images at rest) has nothing running and
    needs no task for it; a kind that cannot stop its workloads is refused
    (FailedPrecondition) before anything is queued."""
    source = await s.get(Site, plan.source_site)
    if stop_workloads:
        sources.check_stops_workloads(source.kind)
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
    previous = _disks_of(newest) if known is not None else None
    if sources.kind(source.kind).snapshots:
        previous = previous if previous is not None else await _previous_disks(s, plan)
        disks = [await s.get(Disk, disk_name) for disk_name in plan.disks]
        target = await s.get(Site, plan.target_site)
        s.add(Task(kind="snapshot", cycle_id=cycle.id, plan_id=plan.id,
                   site=bound_site(plan, target, "snapshot"), source_site=source.id,
                   spec=taskspecs.store(snapshot_spec(plan, cycle, source, disks, previous,
                                                      stop_workloads=stop_workloads))))
    else:
        await _queue_replicas(ctx, s, plan, cycle, {}, previous=previous, rows=task_rows)
    plan.run_requested = False
    log.info("cycle queued", plan=plan.id, cycle=cycle.seq, disks=len(plan.disks),
             stop_workloads=stop_workloads)
    metrics.CYCLES.labels(state="queued").inc()
    ctx.tasks_queued.notify()
    return cycle


async def _previous_disks(s, plan: Plan) -> dict[str, dict]:
    last = await s.scalar(select(RecoveryPoint).where(RecoveryPoint.plan_id == plan.id)
                          .order_by(RecoveryPoint.create_time.desc()).limit(1))
    return _disks_of(last)


def _disks_of(point: RecoveryPoint | None) -> dict[str, dict]:
    return {d["disk"]: d for d in (point.disks if point else [])}


async def _queue_replicas(ctx: ServiceContext, s, plan: Plan, cycle: Cycle,
                          source_snapshots: dict[str, str], *,
                          previous: dict[str, dict] | None = None,
                          rows: list[dict] | None = None) -> None:
    if previous is None:
        previous = await _previous_disks(s, plan)
    target = await s.get(Site, plan.target_site)
    source = await s.get(Site, plan.source_site)
    site = bound_site(plan, target, "replicate")
    own_rows = rows is None
    rows = [] if own_rows else rows
    for disk_name in plan.disks:
        disk = await s.get(Disk, disk_name)
        spec = replicate_spec(
            plan, cycle, source, target, disk, previous=previous.get(disk_name, {}),
            source_snapshot_id=source_snapshots.get(disk_name, ""),
            checkpoint_interval_bytes=ctx.config.scheduler.checkpoint_interval_bytes)
        # A bound (paired) task streams to a node of the target site, chosen at lease.
        rows.append(dict(kind="replicate", cycle_id=cycle.id, plan_id=plan.id,
                         disk=disk_name, spec=taskspecs.store(spec), bytes_total=disk.size,
                         site=site, source_site=source.id, target_site=target.id,
                         pair_site=target.id if site else ""))
    # One multi-row INSERT (column defaults apply as for s.add), not a unit-of-work
    # object per disk: the scheduler queues thousands of these in one pass.
    if own_rows:
        await s.execute(insert(Task), rows)
    ctx.tasks_queued.notify()


# --- after a task of the cycle ------------------------------------------------------------

async def _after_snapshot(ctx: ServiceContext, s, cycle: Cycle, task: Task) -> None:
    plan = await s.get(Plan, cycle.plan_id)
    snaps = task.result.get("source_snapshots", {})
    missing = sorted(set(plan.disks) - set(snaps))
    if missing:
        await fail_cycle(s, cycle, "snapshot-missing",
                         f"the snapshot task returned no snapshot for {missing[0]}")
        return
    await _queue_replicas(ctx, s, plan, cycle, snaps)


async def _after_replicate(ctx: ServiceContext, s, cycle: Cycle, task: Task) -> None:
    tasks = (await s.scalars(select(Task).where(Task.cycle_id == cycle.id))).all()
    if any(t.kind == "finalize" for t in tasks):
        return
    if not all(t.state == "completed" for t in tasks):
        return
    plan = await s.get(Plan, cycle.plan_id)
    spec = finalize_spec(plan, cycle, tasks, utcnow())
    s.add(await target_task(s, plan, "finalize", spec=spec, cycle_id=cycle.id))
    ctx.tasks_queued.notify()


async def _after_finalize(ctx: ServiceContext, s, cycle: Cycle, task: Task) -> None:
    tasks = (await s.scalars(select(Task).where(
        Task.cycle_id == cycle.id, Task.kind == "replicate"))).all()
    stats: dict[str, int] = {}
    for t in tasks:
        for k, v in t.stats.items():
            stats[k] = stats.get(k, 0) + int(v)
    spec = taskspecs.load(task)
    point_id = spec.recovery_point_id
    s.add(RecoveryPoint(plan_id=cycle.plan_id, id=point_id, cycle_id=cycle.id,
                        cycle_seq=cycle.seq, stats=stats,
                        disks=[taskspecs.point_disk(d) for d in spec.disks]))
    await _follow_sizes(s, spec.disks)
    cycle.state, cycle.end_time, cycle.recovery_point_id = "completed", utcnow(), point_id
    metrics.CYCLES.labels(state="completed").inc()
    log.info("recovery point recorded", plan=cycle.plan_id, cycle=cycle.seq, point=point_id)
    await _queue_drop_snapshots(s, cycle)
    ctx.tasks_queued.notify()
    # A new newest point: retention may now let older ones go.
    await deletion.apply_retention(ctx, s, await s.get(Plan, cycle.plan_id))


async def _follow_sizes(s, disks) -> None:
    """Inventory takes the size each disk was read at: a disk resized since it was found
    (a kvm image) shows its current size, and the next cycle's task expects it."""
    for d in disks:
        disk = await s.get(Disk, d.disk)
        if disk is not None and d.size_bytes and disk.size != d.size_bytes:
            log.info("disk resized", disk=d.disk, size=d.size_bytes, was=disk.size)
            disk.size = d.size_bytes


# What a completed task of each kind does next in its (still active) cycle.
_AFTER = {"snapshot": _after_snapshot, "replicate": _after_replicate,
          "finalize": _after_finalize}


async def task_completed(ctx: ServiceContext, s, task: Task) -> None:
    """Moves the task's cycle on, if it has one that is still active (a cycle failed
    meanwhile ignores its late tasks)."""
    cycle = await s.get(Cycle, task.cycle_id) if task.cycle_id else None
    if cycle is None or cycle.state not in ACTIVE_CYCLE_STATES:
        return
    if after := _AFTER.get(task.kind):
        await after(ctx, s, cycle, task)


async def task_failed(s, task: Task, reason: str, message: str) -> None:
    """A task failed for good (no attempt left, or not retryable): its active cycle
    fails with it, naming the task."""
    if task.cycle_id is None:
        return
    cycle = await s.get(Cycle, task.cycle_id)
    if cycle.state in ACTIVE_CYCLE_STATES:
        where = f" ({task.disk})" if task.disk else ""
        await fail_cycle(s, cycle, reason, f"{task.kind}{where}: {message}")


async def fail_cycle(s, cycle: Cycle, reason: str, message: str) -> None:
    cycle.state, cycle.end_time = "failed", utcnow()
    cycle.error_reason, cycle.error_message = reason, message
    await s.execute(update(Task).where(Task.cycle_id == cycle.id, Task.state == "queued")
                    .values(state="cancelled", end_time=utcnow()))
    await s.execute(update(Task).where(Task.cycle_id == cycle.id, Task.state == "leased")
                    .values(cancel_requested=True))
    metrics.CYCLES.labels(state="failed").inc()
    log.warning("cycle failed", plan=cycle.plan_id, cycle=cycle.seq, reason=reason,
                message=message)
    await _queue_drop_snapshots(s, cycle)


async def _queue_drop_snapshots(s, cycle: Cycle) -> None:
    """A cycle that ended, at a source kind that drops its snapshots (vsphere), gets a
    drop_snapshots task. Queued whatever the snapshot task got to (it may have
    snapshotted some VMs before failing): dropping what is not there is success."""
    plan = await s.get(Plan, cycle.plan_id)
    source = await s.get(Site, plan.source_site)
    if source is None or not sources.kind(source.kind).drops_snapshots:
        return
    target = await s.get(Site, plan.target_site)
    disks = [d for d in [await s.get(Disk, name) for name in plan.disks] if d is not None]
    s.add(Task(kind="drop_snapshots", cycle_id=cycle.id, plan_id=plan.id,
               site=bound_site(plan, target, "drop_snapshots"), source_site=source.id,
               spec=taskspecs.store(drop_snapshots_spec(plan, cycle, source, disks))))
