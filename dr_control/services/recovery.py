"""Recovery plans and their executions, run by the recovery provider of the recovery site.

A recovery plan names its recovery site (by default its protection plan's target site);
the provider is the one the registry (dr_control.recovery) has for that site's kind (aws:
EC2 recovery from `ebs` points; vsphere: VMs from repository points). This module knows
no platform: a workload's target settings are its provider's to check
(`check_workload`), and are passed through to it unread. A recovery plan is checked
when it is created against what the control plane knows (the provider recovers the
points of its protection plan, each workload is protected by it, no workload twice, the
provider's settings well-formed); what only the recovery site knows (subnets, port
groups, datastores and their free space, snapshots) is checked by the provider when an
execution starts, before anything is created, so a wrong plan makes StartRecovery fail
with the field to fix and leaves no execution behind.

An execution runs the provider's `prepare` (moving the point's disks where the site
needs them, as node restore tasks queued through `_Mover`) and then its `recover`, as
an asyncio task of this process. Every step it reports is written to the execution's
row as it happens, so an operator can watch it and a restarted control plane can
resume it: providers are idempotent (client tokens, and lookups of what is tagged with
the execution), and so is the mover (a restore already done for the same destination
is reused), so running it again reuses what the interrupted attempt created. The
execution's full name tags everything created at the site, which is why execution ids
carry the time and never repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from google.protobuf import json_format
from sqlalchemy import delete, func, select

from dr_common import names
from dr_common import sources
from dr_common.errors import (AlreadyExists, DRError, FailedPrecondition, InvalidArgument,
                              NotFound)
from dr_common.proto.dr.v1 import common_pb2, nodes_pb2
from dr_control.db.models import (Disk, Execution, Plan, RecoveryPlan, RecoveryPoint, Site,
                                  Task, utcnow)
from dr_control.recovery import provider_class
from dr_control.recovery import forecast as forecast_mod
from dr_control.recovery import scripts as scripts_mod
from dr_control.recovery.base import (BootGroup, RecoveredDisk, RecoveryEvent, RecoveryFailed,
                                      RecoveryProvider, WorkloadSpec, whole_number)
from dr_control.services import failback, taskspecs
from dr_control.services.recovery_run import (ExecutionRun, check_recovery_settings,
                                              describe_failures, refresh)
from dr_control.services.context import ServiceContext
from dr_control.services.inventory import site_settings
from dr_control.services.nodework import Cancelled, wait_task
from dr_control.services.routing import target_task

log = structlog.get_logger()

# Resource names of this service (AIP-122); the format lives with the others' in spirit,
# built with the same helper so parse errors read the same.
parse_recovery_plan, recovery_plan_name = names._parser("recoveryPlans/{recovery_plan}")
parse_execution, execution_name = names._parser(
    "recoveryPlans/{recovery_plan}/executions/{execution}")

MODES = ("test", "failover", "migrate", "failback")
ACTIVE_STATES = frozenset({"started", "running"})
ENDED_STATES = frozenset({"completed", "partially-completed", "failed", "cancelled",
                          "cleaned-up"})
# Modes after which the plan's workloads run at the recovery site for real.
FAILOVER_MODES = ("failover", "migrate")

# Device names a source instance's root volume has (aws inventory lists the root first,
# and records "DEVICE (VOLUME)" as the disk's display name; the database keeps no order).
SOURCE_ROOT_DEVICES = ("/dev/xvda", "/dev/sda1", "/dev/sda", "/dev/nvme0n1")

# Longest a boot group may take to be running (the library's default: a slow Windows
# boot still fits, a wrong AMI does not hang an execution for ever).
RUNNING_TIMEOUT = 300.0
# The keys of a recovery plan's workload that are every provider's; the others are the
# recovery site's provider's own settings.
COMMON_KEYS = ("workload", "tags", "checks", "pre_scripts", "post_scripts")
MAX_GROUP_DELAY = 3600


@dataclass(frozen=True)
class ExecutionKey:
    recovery_plan_id: str
    id: str

    @property
    def name(self) -> str:
        return execution_name(self.recovery_plan_id, self.id)


def _key(e: Execution) -> ExecutionKey:
    return ExecutionKey(e.recovery_plan_id, e.id)


def _execution_id(seq: int, now: datetime) -> str:
    return f"{now:%Y%m%dt%H%M%Sz}-{seq}"


def _merged(stored: list[dict], ours: list[dict]) -> list[dict]:
    """The events a run wrote (`ours`, which began as the row's events), plus any written
    meanwhile by another writer (CancelExecution's cancel-requested), in time order."""
    extra = [e for e in stored if e not in ours]
    return sorted([*ours, *extra], key=lambda e: e["time"]) if extra else ours


def _event(group: str, workload: str, step: str, detail: str = "") -> dict[str, str]:
    return {"time": utcnow().isoformat(), "group": group, "workload": workload, "step": step,
            "detail": detail}


def expire_time(e: Execution) -> datetime | None:
    """When an ended test execution with a TTL is cleaned up by itself."""
    ttl = (e.config or {}).get("ttl_seconds", 0)
    if not ttl or e.end_time is None or e.state in ("cleaned-up", "cancelled"):
        return None
    return e.end_time + timedelta(seconds=ttl)


# --- validation of a recovery plan ------------------------------------------------------

def _check_tags(where: str, given: Any) -> dict[str, str]:
    tags = {str(k): str(v) for k, v in (given or {}).items()}
    ours = sorted(k for k in tags if k.startswith("hybrid-dr:"))
    if ours:
        raise InvalidArgument(f"{where}: tags starting with hybrid-dr: are set by recovery "
                              f"itself ({', '.join(ours)})", field=f"{where}.tags")
    return tags


def check_boot_groups(plan: Plan, boot_groups: list[dict[str, Any]],
                      provider: type[RecoveryProvider]) -> list[dict[str, Any]]:
    """A recovery plan's boot groups, checked against its protection plan and by the
    recovery site's provider, and normalized.

    Each group is {"name", "workloads": [{"workload", "tags", ...the provider's own
    settings}]}; each workload is stored with what the provider's check_workload made
    of its settings."""
    if not boot_groups:
        raise InvalidArgument("a recovery plan needs at least one boot group",
                              field="recovery_plan.boot_groups")
    protected = set(plan.workloads) | {d.rsplit("/disks/", 1)[0] for d in plan.disks}
    seen: dict[str, str] = {}
    group_names: set[str] = set()
    checked_settings: list[tuple[str, dict[str, Any]]] = []
    out = []
    for i, group in enumerate(boot_groups):
        where = f"recovery_plan.boot_groups[{i}]"
        name = str(group.get("name", "")).strip()
        if not name:
            raise InvalidArgument(f"boot group {i + 1} needs a name", field=f"{where}.name")
        if name in group_names:
            raise InvalidArgument(f"two boot groups are named {name!r}", field=f"{where}.name")
        group_names.add(name)
        workloads = group.get("workloads") or []
        if not workloads:
            raise InvalidArgument(f"boot group {name!r} has no workloads",
                                  field=f"{where}.workloads")
        checked = []
        for j, w in enumerate(workloads):
            at = f"{where}.workloads[{j}]"
            workload = str(w.get("workload", ""))
            names.parse_workload(workload, field=f"{at}.workload")
            if workload not in protected:
                raise InvalidArgument(
                    f"workload {workload} is not protected by {names.plan_name(plan.id)}: "
                    f"it has no recovery points to recover from", field=f"{at}.workload")
            if workload in seen:
                raise InvalidArgument(f"workload {workload} is in the plan twice (also in "
                                      f"{seen[workload]})", field=f"{at}.workload")
            seen[workload] = at
            settings = provider.check_workload(
                at, {k: v for k, v in w.items() if k not in COMMON_KEYS})
            checked_settings.append((at, settings))
            checked.append({"workload": workload, **settings,
                            "tags": _check_tags(at, w.get("tags")),
                            **check_recovery_settings(at, w)})
        delay = whole_number(where, "delay_seconds", group.get("delay_seconds"), 0, 0,
                             MAX_GROUP_DELAY)
        out.append({"name": name, "delay_seconds": delay, "workloads": checked})
    provider.check_plan_settings(checked_settings)
    return out


def check_plan_scripts(scripts: dict[str, Any] | None) -> dict[str, list[dict]]:
    given = scripts or {}
    return {phase: scripts_mod.check_scripts(f"recovery_plan.{phase}_scripts",
                                             list(given.get(phase) or []))
            for phase in ("pre", "post")}


# --- from a recovery point to the library's boot groups --------------------------------

def _device_of(disk: Disk | None) -> str:
    """The source device of an aws disk, from its display name "DEVICE (VOLUME)"."""
    text = (disk.display_name if disk is not None else "") or ""
    return text.split(" ", 1)[0] if text.startswith("/dev/") else ""


def _disks_for(workload: str, point: RecoveryPoint,
               inventory: dict[str, Disk]) -> tuple[RecoveredDisk, ...]:
    """The workload's disks in the point, root first (its provider names the devices)."""
    prefix = workload + "/disks/"
    entries = [d for d in point.disks if d["disk"].startswith(prefix)]
    point_name = names.point_name(point.plan_id, point.id)
    if not entries:
        raise FailedPrecondition(f"{point_name} holds no disk of workload {workload}")

    def order(entry: dict) -> tuple:
        device = _device_of(inventory.get(entry["disk"]))
        return (device not in SOURCE_ROOT_DEVICES, device == "", device, entry["disk"])

    entries.sort(key=order)
    return tuple(RecoveredDisk("", d.get("snapshot_id") or "", int(d["size_bytes"]),
                               disk=d["disk"], root_hash=d.get("root_hash") or "")
                 for d in entries)


def _boot_groups(boot_groups: list[dict[str, Any]], point: RecoveryPoint,
                 inventory: dict[str, Disk]) -> list[BootGroup]:
    return [BootGroup(g["name"], tuple(
        WorkloadSpec(workload=w["workload"], disks=_disks_for(w["workload"], point, inventory),
                     settings={k: v for k, v in w.items() if k not in COMMON_KEYS},
                     tags=dict(w.get("tags") or {}))
        for w in g["workloads"])) for g in boot_groups]


class _Mover:
    """The DiskMover (recovery/base.py) of one execution: each disk of its point is
    restored by a node task on the point's repository, bound to the nodes that reach
    that repository, whose destination gets the recovery site's settings at lease."""

    def __init__(self, ctx: ServiceContext, plan: Plan, point: Callable[[], str], site: Site,
                 *, cancelled: Callable[[], Awaitable[bool]]):
        """`point()`: the execution's point (a migration's is known once its final cycle
        ran); `cancelled()`: whether the execution was asked to stop, checked while a
        restore runs (a long step: cancel stops within it)."""
        self.ctx, self.plan, self._point, self.site = ctx, plan, point, site
        self.cancelled = cancelled

    @property
    def point(self) -> str:
        return self._point()

    async def restore(self, disk: RecoveredDisk, destination: nodes_pb2.RestoreDestination
                      ) -> common_pb2.RestoreResult:
        wanted = taskspecs.store(destination)
        async with self.ctx.db() as s, s.begin():
            # A restore to the same destination already done or under way (a retried
            # or resumed execution) is reused, never run twice.
            task = next((t for t in (await s.scalars(select(Task).where(
                Task.kind == "restore", Task.target == self.point, Task.disk == disk.disk,
                Task.destination_site == self.site.id,
                Task.state.in_(("queued", "leased", "completed"))).order_by(
                Task.id.desc()))).all() if t.spec.get("destination") == wanted), None)
            if task is None:
                spec = nodes_pb2.RestoreSpec(recovery_point=self.point, disk=disk.disk,
                                             root_hash=disk.root_hash, destination=destination)
                task = await target_task(s, self.plan, "restore", spec=spec,
                                         target=self.point, disk=disk.disk,
                                         bytes_total=disk.size_bytes,
                                         destination_site=self.site.id)
                s.add(task)
                await s.flush()
            task_id = task.id
        task = await wait_task(self.ctx, task_id, self.cancelled)
        if task.state != "completed":
            raise RecoveryFailed(
                f"disk {disk.disk} of {self.point} could not be written to the recovery "
                f"site (operations/{task_id} {task.state}: "
                f"{task.error_message or 'no reason given'})",
                reason=task.error_reason or None)
        return json_format.ParseDict(task.result or {}, common_pb2.RestoreResult(),
                                     ignore_unknown_fields=True)


# --- the service ------------------------------------------------------------------------

class RecoveryService:
    def __init__(self, ctx: ServiceContext, *, running_timeout: float = RUNNING_TIMEOUT):
        self.ctx = ctx
        self.running_timeout = running_timeout
        # Running executions and cleanups of this process, by execution.
        self._tasks: dict[ExecutionKey, asyncio.Task] = {}
        # Test executions waiting out their TTL, by execution.
        self._expiries: dict[ExecutionKey, asyncio.Task] = {}
        # One limiter per target site (its provider's): rate limits are per account and
        # region.
        self._limiters: dict[tuple[str, str], Any] = {}

    # --- recovery plans ---

    async def create_recovery_plan(self, recovery_plan_id: str, *, protection_plan: str,
                                   boot_groups: list[dict[str, Any]],
                                   recovery_site: str = "",
                                   scripts: dict[str, Any] | None = None) -> RecoveryPlan:
        """`recovery_site`: "sites/{site}" to recover to; empty: the protection plan's
        target site (where EC2 recovery launches the plan's own snapshots)."""
        names.check_id(recovery_plan_id, field="recovery_plan_id", what="recovery plan")
        plan_id = names.parse_plan(protection_plan, field="recovery_plan.protection_plan")
        async with self.ctx.db() as s, s.begin():
            if await s.get(RecoveryPlan, recovery_plan_id) is not None:
                raise AlreadyExists(
                    f"recovery plan {recovery_plan_name(recovery_plan_id)} already exists")
            plan = await s.get(Plan, plan_id)
            if plan is None:
                raise InvalidArgument(f"protection plan {protection_plan} does not exist",
                                      field="recovery_plan.protection_plan")
            if recovery_site:
                site_id = names.parse_site(recovery_site, field="recovery_plan.recovery_site")
                site = await s.get(Site, site_id)
                if site is None:
                    raise InvalidArgument(f"site {recovery_site} does not exist",
                                          field="recovery_plan.recovery_site")
                field = "recovery_plan.recovery_site"
            else:
                site = await s.get(Site, plan.target_site)
                field = "recovery_plan.protection_plan"
            provider = provider_class(site.kind, field=field)
            provider.check_points(protection_plan, plan.target_kind)
            groups = check_boot_groups(plan, boot_groups, provider)
            rp = RecoveryPlan(id=recovery_plan_id, plan_id=plan_id, site_id=site.id,
                              boot_groups=groups, scripts=check_plan_scripts(scripts),
                              create_time=utcnow())
            s.add(rp)
        return rp

    @staticmethod
    async def _recovery_site(s, rp: RecoveryPlan, plan: Plan) -> Site:
        """The site a recovery plan recovers to (plans from before recovery sites were
        named recover to their protection plan's target, as they did then)."""
        return await s.get(Site, rp.site_id or plan.target_site)

    async def get_recovery_plan(self, name: str) -> RecoveryPlan:
        rp_id = parse_recovery_plan(name)
        async with self.ctx.db() as s:
            rp = await s.get(RecoveryPlan, rp_id)
        if rp is None:
            raise NotFound(f"recovery plan {name} not found")
        return rp

    async def list_recovery_plans(self) -> list[RecoveryPlan]:
        async with self.ctx.db() as s:
            return list((await s.scalars(select(RecoveryPlan).order_by(RecoveryPlan.id))).all())

    async def delete_recovery_plan(self, name: str) -> None:
        rp = await self.get_recovery_plan(name)
        async with self.ctx.db() as s, s.begin():
            for e in (await s.scalars(select(Execution).where(
                    Execution.recovery_plan_id == rp.id))).all():
                if e.state in ACTIVE_STATES or e.cleanup_requested:
                    raise FailedPrecondition(f"{_key(e).name} is running; wait for it to end")
                if e.mode == "test" and e.state != "cleaned-up":
                    raise FailedPrecondition(
                        f"test execution {_key(e).name} has not been cleaned up; its "
                        f"instances would be forgotten: run `drctl recovery cleanup "
                        f"{rp.id}/{e.id}` first")
            await s.execute(delete(Execution).where(Execution.recovery_plan_id == rp.id))
            await s.execute(delete(RecoveryPlan).where(RecoveryPlan.id == rp.id))

    # --- executions ---

    async def start_recovery(self, name: str, *, recovery_point: str = "",
                             mode: str = "test", ttl_seconds: int = 0) -> Execution:
        """Checks everything that can be checked, records the execution and starts it.
        migrate: the point is the final cycle's, made once the execution runs; what is
        checked now is the newest point (the final cycle only adds changes to it)."""
        mode = mode or "test"
        if mode not in MODES:
            raise InvalidArgument(f"mode must be {', '.join(MODES)}, got {mode!r}",
                                  field="mode")
        if ttl_seconds and mode != "test":
            raise InvalidArgument(f"only a test is cleaned up by itself; a {mode} stays "
                                  f"until it is failed back", field="ttl_seconds")
        if mode in ("migrate", "failback") and recovery_point:
            raise InvalidArgument(f"a {mode} recovers the point of its own final cycle, "
                                  f"taken with the workloads stopped: give no recovery point",
                                  field="recovery_point")
        rp = await self.get_recovery_plan(name)
        extra: dict[str, Any] = {"ttl_seconds": ttl_seconds} if ttl_seconds else {}
        async with self.ctx.db() as s:
            plan = await s.get(Plan, rp.plan_id)
            site = await self._recovery_site(s, rp, plan)
            if mode == "failback":
                extra.update(await failback.check_start(s, rp, plan, site))
            else:
                point = await self._point(s, plan, recovery_point)
                inventory = await self._inventory(s, point)
            if mode == "migrate":
                source = await s.get(Site, plan.source_site)
                sources.check_stops_workloads(source.kind)
        provider = self._provider(site)
        if mode != "failback":
            await provider.check("check", _boot_groups(rp.boot_groups, point, inventory),
                                 test_mode=mode == "test")
        async with self.ctx.db() as s, s.begin():
            running = await s.scalar(select(Execution).where(
                Execution.recovery_plan_id == rp.id, Execution.state.in_(ACTIVE_STATES)))
            if running is not None:
                raise FailedPrecondition(f"{_key(running).name} is still running; wait for it "
                                         f"to end before starting another")
            seq = 1 + (await s.scalar(select(func.coalesce(func.max(Execution.seq), 0)).where(
                Execution.recovery_plan_id == rp.id)))
            now = utcnow()
            execution = Execution(
                recovery_plan_id=rp.id, id=_execution_id(seq, now), seq=seq,
                recovery_point="" if mode in ("migrate", "failback") else
                names.point_name(point.plan_id, point.id), mode=mode,
                state="started", events=[], instances=[], create_time=now,
                config={"boot_groups": rp.boot_groups, "scripts": rp.scripts or {}, **extra},
                workloads=[{"workload": w["workload"], "group": g["name"], "state": "pending",
                            "checks": [], "reason": ""}
                           for g in rp.boot_groups for w in g["workloads"]])
            s.add(execution)
        log.info("recovery started", execution=_key(execution).name, mode=mode,
                 point=execution.recovery_point)
        self._spawn(_key(execution), self._run(_key(execution), site))
        return execution

    @staticmethod
    async def _inventory(s, point: RecoveryPoint) -> dict[str, Disk]:
        return {d.name: d for d in (await s.scalars(select(Disk).where(
            Disk.name.in_([d["disk"] for d in point.disks])))).all()}

    async def _point(self, s, plan: Plan, recovery_point: str) -> RecoveryPoint:
        if recovery_point:
            plan_id, point_id = names.parse_point(recovery_point, field="recovery_point")
            if plan_id != plan.id:
                raise InvalidArgument(f"{recovery_point} is not a recovery point of "
                                      f"{names.plan_name(plan.id)}", field="recovery_point")
            point = await s.get(RecoveryPoint, (plan_id, point_id))
            if point is None:
                raise NotFound(f"recovery point {recovery_point} not found")
            return point
        point = await s.scalar(select(RecoveryPoint).where(RecoveryPoint.plan_id == plan.id)
                               .order_by(RecoveryPoint.create_time.desc()).limit(1))
        if point is None:
            raise FailedPrecondition(f"{names.plan_name(plan.id)} has no recovery point yet: "
                                     f"run a cycle first (`drctl plan run {plan.id} --wait`)")
        return point

    async def get_execution(self, name: str) -> Execution:
        rp_id, execution_id = parse_execution(name)
        async with self.ctx.db() as s:
            execution = await s.get(Execution, (rp_id, execution_id))
        if execution is None:
            raise NotFound(f"execution {name} not found")
        return execution

    async def list_executions(self, parent: str) -> list[Execution]:
        rp = await self.get_recovery_plan(parent)
        async with self.ctx.db() as s:
            return list((await s.scalars(select(Execution).where(
                Execution.recovery_plan_id == rp.id).order_by(Execution.seq))).all())

    async def cleanup_execution(self, name: str) -> Execution:
        """Starts deleting what the execution created; idempotent."""
        execution = await self.get_execution(name)
        key = _key(execution)
        if execution.state in ACTIVE_STATES:
            raise FailedPrecondition(f"{name} is {execution.state}; wait for it to end (or "
                                     f"cancel it), then clean up")
        if execution.state == "cleaned-up" or execution.cleanup_requested:
            return execution
        rp = await self.get_recovery_plan(recovery_plan_name(key.recovery_plan_id))
        async with self.ctx.db() as s, s.begin():
            plan = await s.get(Plan, rp.plan_id)
            site = await self._recovery_site(s, rp, plan)
            row = await s.get(Execution, (key.recovery_plan_id, key.id))
            row.cleanup_requested = True
            row.events = [*row.events, _event("", "", "cleanup-started")]
        self._spawn(key, self._cleanup(key, self._provider(site)))
        return await self.get_execution(name)

    async def cancel_execution(self, name: str) -> Execution:
        """Asks a running execution to stop at its next step boundary; it then deletes
        what it created and ends `cancelled`. Idempotent; an ended execution is
        returned unchanged."""
        execution = await self.get_execution(name)
        if execution.state not in ACTIVE_STATES or execution.cancel_requested:
            return execution

        def ask(row: Execution) -> None:
            if row.state in ACTIVE_STATES and not row.cancel_requested:
                row.cancel_requested = True
                row.events = [*row.events, _event("", "", "cancel-requested")]

        await self._update(_key(execution), ask)
        log.info("recovery cancel requested", execution=name)
        return await self.get_execution(name)

    async def refresh_execution(self, name: str) -> Execution:
        """Runs the checks of an ended execution's recovered workloads again
        (recovery_run.refresh) and records the result."""
        execution = await self.get_execution(name)
        if execution.state not in ("completed", "partially-completed"):
            raise FailedPrecondition(f"{name} is {execution.state}: only the workloads of "
                                     f"a completed or partially-completed execution are "
                                     f"running to be checked")
        workloads, summary = await refresh(execution)

        def record(row: Execution) -> None:
            row.workloads = workloads
            row.events = [*row.events, _event("", "", "refreshed", summary)]

        await self._update(_key(execution), record)
        return await self.get_execution(name)

    async def forecast(self, name: str) -> forecast_mod.Forecast:
        """The plan's RTO forecast from its newest point's disk sizes and what its
        executions measured (recovery/forecast.py)."""
        rp = await self.get_recovery_plan(name)
        async with self.ctx.db() as s:
            plan = await s.get(Plan, rp.plan_id)
            point = await s.scalar(select(RecoveryPoint).where(
                RecoveryPoint.plan_id == plan.id).order_by(
                RecoveryPoint.create_time.desc()).limit(1))
            rows = (await s.scalars(select(Execution).where(
                Execution.recovery_plan_id == rp.id).order_by(Execution.seq))).all()
        sizes: dict[str, list[int]] = {}
        for d in (point.disks if point is not None else []):
            sizes.setdefault(d["disk"].rsplit("/disks/", 1)[0], []).append(int(d["size_bytes"]))
        groups = [(g["name"], float(g.get("delay_seconds") or 0),
                   [n for w in g["workloads"] for n in sizes.get(w["workload"], [])])
                  for g in rp.boot_groups]
        history = [{"name": _key(e).name, "mode": e.mode, "state": e.state,
                    "events": e.events, "create_time": e.create_time.isoformat(),
                    "end_time": e.end_time.isoformat() if e.end_time else ""} for e in rows]
        async with self.ctx.db() as s:
            site = await self._recovery_site(s, rp, plan)
        return forecast_mod.forecast(groups, history,
                                     moves_data=provider_class(site.kind).moves_data)

    # --- background work ---

    def _spawn(self, key: ExecutionKey, work: Awaitable[None]) -> None:
        task = asyncio.create_task(work, name=f"recovery {key.name}")
        self._tasks[key] = task
        task.add_done_callback(lambda t: self._tasks.pop(key, None) if self._tasks.get(key) is t
                               else None)

    def _provider(self, site: Site) -> RecoveryProvider:
        """The provider of the site's kind, from the registry, opened with the site's
        unsealed settings and the limiter every execution against the site shares."""
        cls = provider_class(site.kind)
        limits = self.ctx.config.recovery.limits
        limiter = self._limiters.get((site.kind, site.id))
        if limiter is None:
            limiter = self._limiters[(site.kind, site.id)] = cls.new_limiter(limits)
        provider = cls(site_settings(self.ctx, site), limiter)
        provider.limits = limits
        return provider

    async def _update(self, key: ExecutionKey, change: Callable[[Execution], None]) -> None:
        async with self.ctx.db() as s, s.begin():
            row = await s.get(Execution, (key.recovery_plan_id, key.id))
            if row is not None:
                change(row)

    async def _cancel_requested(self, key: ExecutionKey) -> bool:
        async with self.ctx.db() as s:
            row = await s.get(Execution, (key.recovery_plan_id, key.id))
        return row is None or row.cancel_requested

    async def _record_events(self, key: ExecutionKey,
                             work: Callable[[Callable[[RecoveryEvent], None]], Awaitable[Any]],
                             on_event: Callable[[dict[str, str]], None] = lambda e: None) -> Any:
        """Runs `work(emit)`, writing each event it emits to the execution as it comes."""
        async with self.ctx.db() as s:
            events = list((await s.get(Execution, (key.recovery_plan_id, key.id))).events)
        written = len(events)
        dirty = asyncio.Event()

        def emit(ev: RecoveryEvent) -> None:
            entry = _event(ev.group, ev.workload, ev.step, ev.detail)
            events.append(entry)
            on_event(entry)
            dirty.set()

        async def writer() -> None:
            nonlocal written
            while True:
                await dirty.wait()
                dirty.clear()
                snapshot = list(events)
                # Events are this writer's alone: a cancel-requested event written by
                # CancelExecution meanwhile is kept (it is not in `events`).
                await self._update(key, lambda row: setattr(
                    row, "events", _merged(row.events, snapshot)))
                written = len(snapshot)

        writing = asyncio.create_task(writer(), name=f"events {key.name}")
        try:
            return await work(emit)
        finally:
            writing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writing
            if written < len(events):
                snapshot = list(events)
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._update(
                        key, lambda row: setattr(row, "events",
                                                 _merged(row.events, snapshot))))

    async def _run(self, key: ExecutionKey, site: Site) -> None:
        """Runs (or resumes) the execution's steps (services/recovery_run.py) and records
        how it ended."""
        instances: dict[str, dict[str, Any]] = {}
        images: dict[str, str] = {}

        def track(e: dict[str, str]) -> None:
            # Instances as they appear, so a watcher (and a failed run) shows them.
            if e["step"] == "image-registered":
                images[e["workload"]] = e["detail"]
            elif e["step"] == "instance-launched":
                instances[e["workload"]] = {
                    "workload": e["workload"], "instance_id": e["detail"], "private_ip": "",
                    "state": "pending", "volume_ids": [], "image_id": images.get(e["workload"],
                                                                                 "")}
            elif e["step"] == "instance-running" and e["workload"] in instances:
                instances[e["workload"]]["state"] = "running"

        def set_running(row: Execution) -> None:
            row.state = "running"

        await self._update(key, set_running)
        async with self.ctx.db() as s:
            row = await s.get(Execution, (key.recovery_plan_id, key.id))
            rp = await s.get(RecoveryPlan, key.recovery_plan_id)
            plan = await s.get(Plan, rp.plan_id)
        provider = self._provider(site)

        async def groups_for(point_name: str) -> list[BootGroup]:
            async with self.ctx.db() as s:
                point = await self._point(s, plan, point_name)
                return _boot_groups(row.config["boot_groups"], point,
                                    await self._inventory(s, point))

        async def work(emit):
            mover = _Mover(self.ctx, plan, lambda: run.point, site,
                           cancelled=lambda: self._cancel_requested(key))
            run = ExecutionRun(
                self.ctx, key.name, row, rp, provider, mover, emit=emit,
                save=lambda change: self._update(key, change),
                cancelled=lambda: self._cancel_requested(key),
                running_timeout=self.running_timeout)
            recovered, state = await run.run(groups_for)
            return recovered, state, run

        try:
            recovered, state, run = await self._record_events(key, work, track)
        except asyncio.CancelledError:
            # dr-control is stopping: the execution stays "running" and is resumed at start.
            raise
        except Cancelled:
            await self._end_cancelled(key, provider)
            return
        except Exception as exc:
            await self._fail(key, exc, list(instances.values()))
            return
        result = [{"workload": r.workload, "instance_id": r.instance_id,
                   "private_ip": r.private_ip, "state": r.state,
                   "volume_ids": list(r.volume_ids), "image_id": r.image_id,
                   "address": r.address} for r in recovered]
        why = describe_failures(run.failures)

        def end(row: Execution) -> None:
            row.state, row.end_time, row.instances = state, utcnow(), result
            row.error_reason = "" if state == "completed" else "validation"
            row.error_message = why
            row.events = [*row.events, _event("", "", state, why)]

        await self._update(key, end)
        self._expire_later(key, row.config.get("ttl_seconds", 0))
        if row.mode in FAILOVER_MODES:
            await self._failed_over(key, plan.id)
        log.info("recovery ended", execution=key.name, state=state, instances=len(result))

    def _expire_later(self, key: ExecutionKey, ttl: int, *, ended: datetime | None = None
                      ) -> None:
        """Cleans a test execution up `ttl` seconds after it ended (now, or `ended`)."""
        if not ttl or key in self._expiries:
            return
        delay = ttl - ((utcnow() - ended).total_seconds() if ended else 0)

        async def expire() -> None:
            await asyncio.sleep(max(0.0, delay))
            with contextlib.suppress(DRError):
                execution = await self.get_execution(key.name)
                if execution.state in ENDED_STATES and execution.state not in (
                        "cleaned-up", "cancelled") and not execution.cleanup_requested:
                    log.info("test execution expired: cleaning up", execution=key.name,
                             ttl=ttl)
                    await self._update(key, lambda row: setattr(row, "events", [
                        *row.events, _event("", "", "expired", f"TTL of {ttl} s")]))
                    await self.cleanup_execution(key.name)

        task = asyncio.create_task(expire(), name=f"expiry {key.name}")
        self._expiries[key] = task
        task.add_done_callback(lambda t: self._expiries.pop(key, None))

    async def _failed_over(self, key: ExecutionKey, plan_id: str) -> None:
        """After a failover or migration the workloads run at the recovery site: the
        protection plan is paused (its source is gone, or stopped) and the recovery
        plan says by which execution."""
        async with self.ctx.db() as s, s.begin():
            plan = await s.get(Plan, plan_id)
            plan.paused = True
            rp = await s.get(RecoveryPlan, key.recovery_plan_id)
            rp.failed_over_by = key.name

    async def _fail(self, key: ExecutionKey, exc: Exception, launched: list[dict]) -> None:
        error = exc if isinstance(exc, DRError) else None
        if error is None:
            log.error("recovery failed unexpectedly", execution=key.name, exc_info=exc)
        reason = error.reason if error else "internal"
        message = error.message if error else "internal error; see dr-control's log"
        if isinstance(error, InvalidArgument) and error.field:
            message = f"{message} (field {error.field})"

        def fail(row: Execution) -> None:
            row.state, row.end_time = "failed", utcnow()
            row.error_reason, row.error_message = reason, message
            row.instances = launched
            row.events = [*row.events, _event("", "", "failed", message)]

        await self._update(key, fail)
        log.warning("recovery failed", execution=key.name, reason=reason)
        async with self.ctx.db() as s:
            row = await s.get(Execution, (key.recovery_plan_id, key.id))
        self._expire_later(key, (row.config or {}).get("ttl_seconds", 0))

    async def _delete_made(self, key: ExecutionKey, provider: RecoveryProvider
                           ) -> Exception | None:
        """The provider's cleanup of what the execution made, its steps written as
        events; the error it raised, if any."""
        async def work(emit):
            return await provider.cleanup(key.name, on_event=emit)

        try:
            await self._record_events(key, work)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return exc
        return None

    async def _end_cancelled(self, key: ExecutionKey, provider: RecoveryProvider) -> None:
        """A cancelled execution deletes what it created, then ends `cancelled`."""
        if (exc := await self._delete_made(key, provider)) is not None:
            await self._fail(key, exc, [])
            return

        def cancelled(row: Execution) -> None:
            row.state, row.end_time = "cancelled", utcnow()
            row.cancel_requested = False
            row.instances = [{**i, "state": "terminated"} for i in row.instances]
            row.error_reason, row.error_message = "cancelled", "cancelled on request"
            row.events = [*row.events, _event("", "", "cancelled",
                                              "what the execution created is deleted")]

        await self._update(key, cancelled)
        log.info("recovery cancelled", execution=key.name)

    async def _cleanup(self, key: ExecutionKey, provider: RecoveryProvider) -> None:
        if (exc := await self._delete_made(key, provider)) is not None:
            error = exc if isinstance(exc, DRError) else None
            if error is None:
                log.error("cleanup failed unexpectedly", execution=key.name, exc_info=exc)
            reason = error.reason if error else "internal"
            message = (f"cleanup failed: {error.message if error else 'internal error'}; "
                       f"run cleanup again")

            def fail(row: Execution) -> None:
                row.cleanup_requested = False
                row.error_reason, row.error_message = reason, message
                row.events = [*row.events, _event("", "", "cleanup-failed", message)]

            await self._update(key, fail)
            return

        def cleaned(row: Execution) -> None:
            row.state, row.cleanup_requested, row.end_time = "cleaned-up", False, utcnow()
            row.instances = [{**i, "state": "terminated"} for i in row.instances]

        await self._update(key, cleaned)
        log.info("recovery cleaned up", execution=key.name)

    # --- process lifecycle ---

    async def resume(self) -> None:
        """Resumes executions and cleanups a stopped control plane left running, and the
        TTLs of ended test executions."""
        async with self.ctx.db() as s:
            waiting = (await s.scalars(select(Execution).where(
                Execution.mode == "test", Execution.state.in_(
                    ("completed", "partially-completed", "failed")),
                Execution.cleanup_requested.is_(False)))).all()
        for row in waiting:
            self._expire_later(_key(row), (row.config or {}).get("ttl_seconds", 0),
                               ended=row.end_time)
        async with self.ctx.db() as s:
            rows = (await s.scalars(select(Execution).where(
                (Execution.state.in_(ACTIVE_STATES)) | Execution.cleanup_requested))).all()
        for row in rows:
            key = _key(row)
            if key in self._tasks:  # already running here (leadership came back)
                continue
            try:
                rp = await self.get_recovery_plan(recovery_plan_name(row.recovery_plan_id))
                async with self.ctx.db() as s:
                    plan = await s.get(Plan, rp.plan_id)
                    site = await self._recovery_site(s, rp, plan)
                provider_class(site.kind)
            except DRError as exc:
                message = f"cannot resume after a restart: {exc.message}"

                def fail(r: Execution, message: str = message, reason: str = exc.reason) -> None:
                    r.state, r.end_time = "failed", utcnow()
                    r.cleanup_requested = False
                    r.error_reason, r.error_message = reason, message

                await self._update(key, fail)
                continue
            what = "cleanup" if row.cleanup_requested else "after a restart"
            await self._update(key, lambda r, what=what: setattr(
                r, "events", [*r.events, _event("", "", "resumed", what)]))
            log.info("recovery resumed", execution=key.name, what=what)
            if row.cleanup_requested:
                self._spawn(key, self._cleanup(key, self._provider(site)))
            else:
                self._spawn(key, self._run(key, site))

    async def stop(self) -> None:
        """Cancels this process's running executions; they resume at the next start."""
        tasks = list(self._tasks.values()) + list(self._expiries.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
