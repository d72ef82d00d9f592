"""Protection plans: validation, pause/resume, run-now, status, cycles."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, select

from dr_common import names, targets
from dr_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from dr_control.db.models import Cycle, Disk, Plan, RecoveryPoint, Site, Task, Workload, utcnow
from dr_control.services import cycles, planfacts
from dr_control.services.context import ServiceContext

COMPRESSIONS = ("none", "zstd")
DEFAULT_CHUNK_SIZE = 1 << 20
# Chunks below 64 KiB make manifests and object counts explode; above 16 MiB a
# one-byte change costs too much to send again.
MIN_CHUNK_SIZE, MAX_CHUNK_SIZE = 64 << 10, 16 << 20


TARGET_KINDS = tuple(targets.KINDS)

RETENTION = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly")
UPDATABLE = frozenset({"rpo_seconds", "bandwidth", *RETENTION})


def _check_retention(values: dict[str, int]) -> None:
    for key in RETENTION:
        if values.get(key, 0) < 0:
            raise InvalidArgument(f"{key} must be 0 (rule off) or positive, got {values[key]}",
                                  field=f"plan.retention.{key}")


def _check_settings(rpo_seconds: int, keep_last: int, bandwidth: int) -> None:
    if rpo_seconds <= 0:
        raise InvalidArgument(f"rpo_seconds must be positive, got {rpo_seconds}",
                              field="plan.rpo_seconds")
    if keep_last < 0:
        raise InvalidArgument(f"keep_last must be 0 (keep all) or positive, got {keep_last}",
                              field="plan.keep_last")
    if bandwidth < 0:
        raise InvalidArgument(f"bandwidth_bytes_per_second must be 0 (unlimited) or positive, "
                              f"got {bandwidth}", field="plan.bandwidth_bytes_per_second")


def _check_target(site: Site, target_kind: str) -> None:
    kinds = targets.kind(target_kind, field="plan.target_kind").site_kinds
    if site.kind not in kinds:
        raise InvalidArgument(f"a {target_kind} target needs a site of kind "
                              f"{' or '.join(kinds)}; {names.site_name(site.id)} is {site.kind}",
                              field="plan.target_site")
    kind = targets.kind(target_kind)
    if kind.path_required and not site.path:
        example = f", {kind.path_example}" if kind.path_example else ""
        raise InvalidArgument(f"an {target_kind} target needs its site's path{example}; "
                              f"{names.site_name(site.id)} has none", field="plan.target_site")


@dataclass
class PlanStatus:
    plan: Plan
    state: str
    last_point: RecoveryPoint | None
    rpo_lag_seconds: float
    rpo_met: bool
    disks: list[tuple[str, str]]
    current_cycle: Cycle | None
    current_tasks: list[Task] = field(default_factory=list)


def _status(plan: Plan, now: datetime, last: RecoveryPoint | None, current: Cycle | None,
            last_cycle: Cycle | None, tasks: list[Task]) -> PlanStatus:
    """A plan's status from its newest point, active cycle and newest cycle."""
    since: datetime = last.create_time if last else plan.create_time
    lag = (now - since).total_seconds()
    rpo_met = last is not None and lag <= plan.rpo_seconds
    failed = last_cycle is not None and last_cycle.state == "failed"
    covered = {d["disk"] for d in (last.disks if last else [])}
    disks = []
    for d in plan.disks:
        if failed:
            state = "sync-failed"
        elif d not in covered:
            state = "initial-sync"
        else:
            state = "in-sync" if rpo_met else "rpo-exceeded"
        disks.append((d, state))
    if plan.paused:
        state = "stopped"
    elif last is None:
        state = "partial" if failed else "initializing"
    else:
        state = "partial" if failed or not rpo_met else "running"
    return PlanStatus(plan=plan, state=state, last_point=last, rpo_lag_seconds=lag,
                      rpo_met=rpo_met, disks=disks, current_cycle=current, current_tasks=tasks)


class ProtectionService:
    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx

    async def create_plan(self, plan_id: str, *, source_site: str, target_site: str,
                          target_kind: str, workloads: list[str], disks: list[str],
                          rpo_seconds: int, keep_last: int, chunk_size: int,
                          compression: str, bandwidth: int = 0, keep_hourly: int = 0,
                          keep_daily: int = 0, keep_weekly: int = 0,
                          quiesce: bool = False) -> Plan:
        names.check_id(plan_id, field="plan_id", what="plan")
        _check_settings(rpo_seconds, keep_last, bandwidth)
        _check_retention({"keep_hourly": keep_hourly, "keep_daily": keep_daily,
                          "keep_weekly": keep_weekly})
        kind = targets.KINDS.get(target_kind)
        if kind is not None and kind.chunk_size:
            # E.g. EBS snapshots are made of 512 KiB blocks: the chunk grid is theirs.
            if chunk_size not in (0, kind.chunk_size):
                raise InvalidArgument(f"an {target_kind} target writes {kind.chunk_size}-byte "
                                      f"blocks; leave chunk_size_bytes unset or give "
                                      f"{kind.chunk_size}", field="plan.chunk_size_bytes")
            chunk_size = kind.chunk_size
        if kind is not None and not kind.compression and compression not in ("", "none"):
            raise InvalidArgument(f"an {target_kind} target stores blocks as they are: "
                                  f"compression must be none", field="plan.compression")
        chunk_size = chunk_size or DEFAULT_CHUNK_SIZE
        if not (MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE) or chunk_size & (chunk_size - 1):
            raise InvalidArgument(
                f"chunk_size_bytes must be a power of two from {MIN_CHUNK_SIZE} to "
                f"{MAX_CHUNK_SIZE}, got {chunk_size}", field="plan.chunk_size_bytes")
        compression = compression or "none"
        if compression not in COMPRESSIONS:
            raise InvalidArgument(f"compression must be one of {', '.join(COMPRESSIONS)}",
                                  field="plan.compression")
        target_kind = target_kind or "fs"
        if target_kind not in TARGET_KINDS:
            raise InvalidArgument(f"target kind {target_kind!r} is not supported; supported: "
                                  f"{', '.join(TARGET_KINDS)}", field="plan.target_kind")
        if not workloads and not disks:
            raise InvalidArgument("a plan needs at least one workload or disk",
                                  field="plan.workloads")
        src_id = names.parse_site(source_site, field="plan.source_site")
        dst_id = names.parse_site(target_site, field="plan.target_site")
        async with self.ctx.db() as s, s.begin():
            if await s.get(Plan, plan_id) is not None:
                raise AlreadyExists(f"plan {names.plan_name(plan_id)} already exists")
            for site_id, what in ((src_id, "source"), (dst_id, "target")):
                if await s.get(Site, site_id) is None:
                    raise NotFound(f"{what} site {names.site_name(site_id)} not found")
            _check_target(await s.get(Site, dst_id), target_kind)
            resolved = await self._resolve_disks(s, src_id, workloads, disks)
            plan = Plan(id=plan_id, source_site=src_id, target_site=dst_id,
                        target_kind=target_kind, workloads=list(workloads), disks=resolved,
                        rpo_seconds=rpo_seconds, keep_last=keep_last, chunk_size=chunk_size,
                        compression=compression, bandwidth=bandwidth,
                        keep_hourly=keep_hourly, keep_daily=keep_daily, keep_weekly=keep_weekly,
                        quiesce=quiesce)
            s.add(plan)
        self.ctx.tasks_queued.notify()
        return plan

    async def _resolve_disks(self, s, site_id: str, workloads: list[str],
                             disks: list[str]) -> list[str]:
        resolved: list[str] = []
        for i, wl_name in enumerate(workloads):
            wl_site, wl_id = names.parse_workload(wl_name, field=f"plan.workloads[{i}]")
            if wl_site != site_id:
                raise InvalidArgument(f"workload {wl_name} is not at the source site",
                                      field=f"plan.workloads[{i}]")
            if await s.get(Workload, (wl_site, wl_id)) is None:
                raise NotFound(f"workload {wl_name} not found")
            resolved += (await s.scalars(select(Disk.name).where(
                Disk.site_id == wl_site, Disk.workload_id == wl_id).order_by(Disk.id))).all()
        for i, disk_name in enumerate(disks):
            disk_site, _, _ = names.parse_disk(disk_name, field=f"plan.disks[{i}]")
            if disk_site != site_id:
                raise InvalidArgument(f"disk {disk_name} is not at the source site",
                                      field=f"plan.disks[{i}]")
            if await s.get(Disk, disk_name) is None:
                raise NotFound(f"disk {disk_name} not found")
            resolved.append(disk_name)
        unique = sorted(set(resolved))
        if not unique:
            raise InvalidArgument("the plan's workloads have no disks", field="plan.workloads")
        return unique

    async def get_plan(self, name: str) -> Plan:
        plan_id = names.parse_plan(name)
        async with self.ctx.db() as s:
            plan = await s.get(Plan, plan_id)
        if plan is None:
            raise NotFound(f"plan {name} not found")
        return plan

    async def list_plans(self) -> list[Plan]:
        async with self.ctx.db() as s:
            return list((await s.scalars(select(Plan).order_by(Plan.id))).all())

    async def update_plan(self, name: str, changes: dict[str, int]) -> Plan:
        """Applies `changes` (keys: UPDATABLE) to a plan."""
        plan = await self.get_plan(name)
        unknown = set(changes) - UPDATABLE
        if unknown or not changes:
            raise InvalidArgument(
                f"update_mask may name {', '.join(sorted(UPDATABLE))}; got "
                f"{', '.join(sorted(unknown)) or 'nothing'}", field="update_mask")
        merged = {"rpo_seconds": plan.rpo_seconds, "keep_last": plan.keep_last,
                  "bandwidth": plan.bandwidth, **changes}
        _check_settings(merged["rpo_seconds"], merged["keep_last"], merged["bandwidth"])
        _check_retention(changes)
        async with self.ctx.db() as s, s.begin():
            plan = await s.get(Plan, plan.id)
            for key, value in changes.items():
                setattr(plan, key, value)
        return plan

    async def set_paused(self, name: str, paused: bool) -> Plan:
        plan = await self.get_plan(name)
        async with self.ctx.db() as s, s.begin():
            plan = await s.get(Plan, plan.id)
            plan.paused = paused
        return plan

    async def delete_plan(self, name: str) -> None:
        plan = await self.get_plan(name)
        async with self.ctx.db() as s, s.begin():
            if await cycles.active_cycle(s, plan.id) is not None:
                raise FailedPrecondition(
                    f"plan {name} has a cycle running; pause it and wait for the cycle to end")
            locked = await s.scalar(select(RecoveryPoint).where(
                RecoveryPoint.plan_id == plan.id, RecoveryPoint.locked))
            if locked is not None:
                raise FailedPrecondition(f"plan {name} has locked recovery points")
            # The repository keeps the data; only the control plane forgets the plan.
            await s.execute(delete(RecoveryPoint).where(RecoveryPoint.plan_id == plan.id))
            await s.execute(delete(Task).where(Task.plan_id == plan.id))
            await s.execute(delete(Cycle).where(Cycle.plan_id == plan.id))
            await s.execute(delete(Plan).where(Plan.id == plan.id))

    async def run_plan(self, name: str) -> Cycle:
        plan = await self.get_plan(name)
        async with self.ctx.db() as s, s.begin():
            cycle = await cycles.active_cycle(s, plan.id)
            if cycle is None:
                cycle = await cycles.start_cycle(self.ctx, s, await s.get(Plan, plan.id))
            if cycle is None:  # another replica's scheduler queued one just now
                cycle = await cycles.active_cycle(s, plan.id)
        return cycle

    async def list_cycles(self, parent: str) -> list[tuple[Cycle, list[Task]]]:
        plan = await self.get_plan(parent)
        async with self.ctx.db() as s:
            cycles = (await s.scalars(select(Cycle).where(Cycle.plan_id == plan.id)
                                      .order_by(Cycle.seq))).all()
            tasks = (await s.scalars(select(Task).where(
                Task.plan_id == plan.id, Task.kind == "replicate"))).all()
        by_cycle: dict[int, list[Task]] = {}
        for t in tasks:
            by_cycle.setdefault(t.cycle_id, []).append(t)
        return [(c, sorted(by_cycle.get(c.id, []), key=lambda t: t.disk)) for c in cycles]

    async def status(self, name: str) -> PlanStatus:
        plan = await self.get_plan(name)
        async with self.ctx.db() as s:
            last = await s.scalar(select(RecoveryPoint).where(RecoveryPoint.plan_id == plan.id)
                                  .order_by(RecoveryPoint.create_time.desc()).limit(1))
            current = await cycles.active_cycle(s, plan.id)
            last_cycle = await s.scalar(select(Cycle).where(Cycle.plan_id == plan.id)
                                        .order_by(Cycle.seq.desc()).limit(1))
            tasks = []
            if current is not None:
                tasks = (await s.scalars(select(Task).where(
                    Task.cycle_id == current.id, Task.kind == "replicate"))).all()
        return _status(plan, utcnow(), last, current, last_cycle,
                       sorted(tasks, key=lambda t: t.disk))

    async def statuses(self, plans: list[Plan]) -> list[PlanStatus]:
        """The status of each of `plans` (without current_tasks), in three queries
        whatever their number (planfacts.py): for ListPlans and the RPO report."""
        ids = [p.id for p in plans]
        async with self.ctx.db() as s:
            last = await planfacts.newest_points(s, ids)
            current = await planfacts.active_cycles(s, ids)
            last_cycle = await planfacts.last_cycles(s, ids)
        now = utcnow()
        return [_status(p, now, last.get(p.id), current.get(p.id), last_cycle.get(p.id), [])
                for p in plans]

    async def plan_states(self, plans: list[Plan]) -> dict[str, str]:
        """Plan id -> its state, for a page of plans (ListPlans)."""
        return {st.plan.id: st.state for st in await self.statuses(plans)}

    async def rpo_report(self) -> list[PlanStatus]:
        """Every plan's status, for RPO compliance (GetRpoReport, `drctl report rpo`)."""
        return await self.statuses(await self.list_plans())

    async def plan_state(self, plan: Plan) -> str:
        return (await self.status(names.plan_name(plan.id))).state
