"""One recovery execution as it runs: the orchestration every provider shares.

The recovery service (services/recovery.py) records an execution and hands it here. The
steps, in order (DESIGN.md 6), each written to the execution as it happens:

1. `migrate` only: the protection plan is paused, its running cycle (if any) ends, and a
   final cycle runs with the source workloads stopped through their source site
   (cycles.start_cycle(stop_workloads=True)); its point is the one recovered, so
   nothing written before the stop is lost.
2. the plan's pre scripts;
3. *prepare*: the provider moves the point's disks where the site boots them (node
   restore tasks through the service's mover), every group's at once;
4. per boot group, in order: its delay, its workloads' pre scripts, the provider's
   *recover* of that group alone (start, network attach, wait until up), then the
   validation checks of its workloads (in parallel), then their post scripts. A group
   starts only when every workload of the one before passed its checks; otherwise the
   groups after it are not started;
5. the plan's post scripts, with JSON on stdin naming every recovered workload.

The end state: `completed` when every workload is up and validated and every script
passed; `partially-completed` (with the reason per workload) when a check or a script
failed or a group was not started; `failed` when the provider could not bring a group
up; `cancelled` after CancelExecution (checked at every step boundary and while disks
are restored), once what the execution created is deleted.

Resuming after a restart runs the same steps again: providers and the mover reuse what
exists (DESIGN.md 6), and what must not run twice (scripts, the final cycle, a group's
delay) is skipped when the execution's events already record it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from dr_common import names
from dr_control.db.models import Cycle, Execution, Plan, RecoveryPlan, RecoveryPoint
from dr_control.recovery import checks as checks_mod
from dr_control.recovery import scripts as scripts_mod
from dr_control.recovery.base import (BootGroup, RecoveredInstance, RecoveryEvent,
                                      RecoveryFailed, RecoveryProvider)
from dr_control.services import cycles, failback
from dr_control.services.context import ServiceContext
from dr_control.services.nodework import Cancelled

log = structlog.get_logger()

# Polling the final cycle of a migration, and a cancel during a group's delay (a
# database read each).
CYCLE_POLL = 0.5
CANCEL_POLL = 0.5


@dataclass
class WorkloadState:
    workload: str
    group: str
    state: str = "pending"
    checks: list[dict] = field(default_factory=list)
    reason: str = ""
    instance: RecoveredInstance | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"workload": self.workload, "group": self.group, "state": self.state,
                "checks": self.checks, "reason": self.reason}

    def facts(self) -> dict[str, str]:
        """What checks and scripts may name ({address}, ...)."""
        i = self.instance
        return {"workload": self.workload, "name": self.workload.rsplit("/", 1)[-1],
                "instance_id": i.instance_id if i else "",
                "address": (i.address or i.private_ip) if i else ""}

    def payload(self) -> dict[str, Any]:
        i = self.instance
        return {**self.facts(), "group": self.group, "state": self.state,
                "private_ip": i.private_ip if i else "",
                "volume_ids": list(i.volume_ids) if i else []}


class ExecutionRun:
    """The steps of one execution (module docstring). `emit` writes an event to the
    execution; `done` is the events it already had (a resumed run)."""

    def __init__(self, ctx: ServiceContext, key_name: str, row: Execution, rp: RecoveryPlan,
                 provider: RecoveryProvider, mover: Any, *, emit: Callable[[RecoveryEvent], None],
                 save: Callable[[Callable[[Execution], None]], Any],
                 cancelled: Callable[[], Any], running_timeout: float):
        self.ctx, self.name, self.provider, self.mover = ctx, key_name, provider, mover
        self.point = row.recovery_point
        self.mode, self.rp_id, self.plan_id = row.mode, rp.id, rp.plan_id
        self.config = row.config
        self.done = list(row.events)
        self.emit_event, self.save, self.cancelled = emit, save, cancelled
        self.running_timeout = running_timeout
        self.failures: list[str] = []  # why the execution is not completed
        self.workloads = {w["workload"]: WorkloadState(w["workload"], g["name"])
                          for g in self.config["boot_groups"] for w in g["workloads"]}

    # -- events

    def emit(self, step: str, detail: str = "", *, group: str = "", workload: str = "") -> None:
        self.emit_event(RecoveryEvent(0.0, group, workload, step, detail))

    def _had(self, step: str, *, group: str = "", workload: str = "",
             detail_prefix: str = "") -> dict | None:
        return next((e for e in self.done if e["step"] == step and e["group"] == group
                     and e["workload"] == workload
                     and e["detail"].startswith(detail_prefix)), None)

    async def boundary(self) -> None:
        if await self.cancelled():
            raise Cancelled()

    async def _save_workloads(self) -> None:
        states = [w.as_dict() for w in self.workloads.values()]
        await self.save(lambda row: setattr(row, "workloads", states))

    # -- 1: the final cycle of a migration

    async def final_cycle(self, plan_id: str) -> str:
        """Pauses protection plan `plan_id`, waits out its running cycle, runs the final
        cycle with the source workloads stopped; returns the point's name (and makes it
        the execution's). A migration's is its own plan's; a failback's its reverse
        plan's."""
        async with self.ctx.db() as s, s.begin():
            plan = await s.get(Plan, plan_id)
            if not plan.paused:
                plan.paused = True
                self.emit("plan-paused", f"{names.plan_name(plan.id)}: no cycle starts by "
                                         f"itself any more")
        point = await self.cycle(plan_id, "final-cycle", stop_workloads=True)
        self.point = point
        await self.save(lambda row: setattr(row, "recovery_point", point))
        return point

    async def cycle(self, plan_id: str, step: str, *, stop_workloads: bool) -> str:
        """Runs one cycle of `plan_id` (once its running one, if any, has ended) and
        returns its point; `step`-started and `step`-completed events record it, so a
        resumed run waits for the same cycle instead of starting another."""
        if ended := self._had(f"{step}-completed"):
            return ended["detail"].split(" ", 1)[0]
        started = self._had(f"{step}-started")
        cycle_id = int(started["detail"].split("#", 1)[1].split(" ", 1)[0]) if started else 0
        while not cycle_id:
            await self.boundary()
            async with self.ctx.db() as s, s.begin():
                plan = await s.get(Plan, plan_id)
                if await cycles.active_cycle(s, plan.id) is None:
                    cycle = await cycles.start_cycle(self.ctx, s, plan,
                                                     stop_workloads=stop_workloads)
                    if cycle is not None:
                        await s.flush()
                        cycle_id = cycle.id
                        self.emit(f"{step}-started",
                                  f"{names.cycle_name(plan.id, str(cycle.seq))} #{cycle.id}"
                                  + (" with the source workloads stopped"
                                     if stop_workloads else ""))
                        break
            await asyncio.sleep(CYCLE_POLL)  # a cycle of the plan is still running
        while True:
            async with self.ctx.db() as s:
                cycle = await s.get(Cycle, cycle_id)
            if cycle.state not in cycles.ACTIVE_CYCLE_STATES:
                break
            await self.boundary()
            await asyncio.sleep(CYCLE_POLL)
        if cycle.state != "completed" or not cycle.recovery_point_id:
            raise RecoveryFailed(
                f"cycle {names.cycle_name(plan_id, str(cycle.seq))} ended {cycle.state}: "
                f"{cycle.error_message or 'no point'}; "
                + ("the source workloads stay stopped and " if stop_workloads else "")
                + f"{names.plan_name(plan_id)} stays paused: fix the cause and run the "
                  f"{self.mode} again", reason=cycle.error_reason or None)
        async with self.ctx.db() as s:
            made = await s.get(RecoveryPoint, (plan_id, cycle.recovery_point_id))
        stats = made.stats or {}
        point = names.point_name(plan_id, cycle.recovery_point_id)
        self.emit(f"{step}-completed",
                  f"{point} read {int(stats.get('bytes_read', 0))} bytes, sent "
                  f"{int(stats.get('bytes_sent', 0))}, stored "
                  f"{int(stats.get('bytes_stored', 0))}"
                  + (", with the source stopped" if stop_workloads else ""))
        return point

    # -- 2, 5: scripts

    async def scripts(self, phase: str, given: Sequence[dict], payload: dict[str, Any], *,
                      group: str = "", workload: str = "") -> bool:
        """Runs `given` in order (skipping those a resumed run already ran); False if one
        failed (each is recorded as an event with its exit status and output)."""
        ok = True
        for i, script in enumerate(given):
            prefix = f"{phase} #{i + 1} "
            ran = self._had("script-completed", group=group, workload=workload,
                            detail_prefix=prefix) or self._had(
                "script-failed", group=group, workload=workload, detail_prefix=prefix)
            if ran is None:
                await self.boundary()
                result = await scripts_mod.run_script(script, payload, env={
                    "DR_EXECUTION": self.name, "DR_MODE": self.mode, "DR_PHASE": phase,
                    "DR_WORKLOAD": workload})
                said = result.reason or f"exit {result.exit_code}"
                step = "script-completed" if result.passed else "script-failed"
                # The duration last: the forecast reads it there (forecast.py).
                self.emit(step, f"{prefix}{script['command']}: {said}; output: "
                                f"{result.output.strip()!r} (in {result.seconds:.1f} s)",
                          group=group, workload=workload)
                passed = result.passed
            else:
                passed = ran["step"] == "script-completed"
            if not passed:
                ok = False
                where = f"workload {workload}" if workload else "the plan"
                self.failures.append(f"{phase} script #{i + 1} of {where} failed")
        return ok

    def _payload(self, point: str) -> dict[str, Any]:
        return {"execution": self.name, "mode": self.mode,
                "recovery_plan": f"recoveryPlans/{self.rp_id}", "recovery_point": point,
                "workloads": [w.payload() for w in self.workloads.values()]}

    # -- 4: a boot group

    async def group(self, group: BootGroup, config: dict[str, Any], point: str) -> bool:
        """Starts one boot group and validates it; False when a workload of it is not
        validated (the groups after it are then not started)."""
        await self.boundary()
        delay = int(config.get("delay_seconds") or 0)
        if delay and not self._had("group-started", group=group.name):
            self.emit("group-delayed", f"{delay} s", group=group.name)
            # A delay is a step of its own: a cancel stops it.
            end = asyncio.get_running_loop().time() + delay
            while (left := end - asyncio.get_running_loop().time()) > 0:
                await asyncio.sleep(min(left, CANCEL_POLL))
                await self.boundary()
        self.emit("group-started", f"{len(group.instances)} workload(s)", group=group.name)
        settings = {w["workload"]: w for w in config["workloads"]}
        for spec in group.instances:
            w = settings[spec.workload]
            if not await self.scripts("pre", w.get("pre_scripts") or [],
                                      self._payload(point), group=group.name,
                                      workload=spec.workload):
                self.workloads[spec.workload].reason = "its pre script failed"
        try:
            recovered = await self.provider.recover(
                self.name, [group], test_mode=self.mode == "test",
                on_event=self.emit_event, running_timeout=self.running_timeout)
        except RecoveryFailed as exc:
            for spec in group.instances:
                w = self.workloads[spec.workload]
                w.state, w.reason = "failed", exc.message
            await self._save_workloads()
            raise
        for r in recovered:
            self.workloads[r.workload].instance = r
            self.workloads[r.workload].state = "up"
        await self._save_workloads()
        await self.boundary()
        results = await asyncio.gather(*(
            self._validate(group.name, spec.workload, settings[spec.workload].get("checks")
                           or []) for spec in group.instances))
        self.emit("group-validated", f"{sum(results)} of {len(results)} workload(s) passed",
                  group=group.name)
        for spec in group.instances:
            w, state = settings[spec.workload], self.workloads[spec.workload]
            if not await self.scripts("post", w.get("post_scripts") or [],
                                      {**self._payload(point), "workload": state.payload()},
                                      group=group.name, workload=spec.workload):
                state.state, state.reason = "script-failed", "its post script failed"
            elif state.reason and state.state in ("up", "validated"):
                state.state = "script-failed"  # its pre script failed
        await self._save_workloads()
        return all(results)

    async def _validate(self, group: str, workload: str, given: list[dict]) -> bool:
        state = self.workloads[workload]
        if not given:
            return True
        results = await checks_mod.run_checks(given, state.facts())
        state.checks = [r.as_dict() for r in results]
        failed = [r for r in results if not r.passed]
        if failed:
            state.state = "validation-failed"
            state.reason = "; ".join(f"{r.check}: {r.detail}" for r in failed)
            self.failures.append(f"{workload} failed validation")
            self.emit("validation-failed", state.reason, group=group, workload=workload)
            return False
        state.state = "validated"
        self.emit("validation-passed", "; ".join(r.check for r in results), group=group,
                  workload=workload)
        return True

    def not_started(self, groups: Sequence[BootGroup], after: str) -> None:
        for g in groups:
            self.emit("group-not-started", f"group {after!r} did not pass its checks",
                      group=g.name)
            for spec in g.instances:
                w = self.workloads[spec.workload]
                w.state, w.reason = "not-started", \
                    f"its boot group was not started: group {after!r} did not pass its checks"
            self.failures.append(f"group {g.name!r} was not started")

    # -- the whole run

    async def run(self, groups_for: Callable[[str], Any]) -> tuple[list[RecoveredInstance], str]:
        """Every step; returns the recovered instances and the end state (completed or
        partially-completed). `groups_for(point)` gives the point's boot groups."""
        if not self._had("started"):
            self.emit("started", self.mode)
        if self.mode == "failback":
            return await failback.run(self, groups_for)
        point = await self.final_cycle(self.plan_id) if self.mode == "migrate" else self.point
        groups: list[BootGroup] = await groups_for(point)
        plan_scripts = self.config.get("scripts") or {}
        await self.scripts("pre", plan_scripts.get("pre") or [], self._payload(point))
        await self.boundary()
        await self.provider.prepare(self.name, groups, mover=self.mover,
                                    on_event=self.emit_event)
        if not self._had("prepare-completed"):
            self.emit("prepare-completed")
        for i, (group, config) in enumerate(zip(groups, self.config["boot_groups"])):
            if not await self.group(group, config, point):
                self.not_started(groups[i + 1:], group.name)
                await self._save_workloads()
                break
        await self.scripts("post", plan_scripts.get("post") or [], self._payload(point))
        await self._save_workloads()
        recovered = [w.instance for w in self.workloads.values() if w.instance is not None]
        return recovered, "partially-completed" if self.failures else "completed"


async def refresh(execution: Execution) -> tuple[list[dict], str]:
    """An ended execution's workloads with their checks run again against what was
    recovered (in parallel); and a summary for the "refreshed" event."""
    settings = {w["workload"]: w for g in execution.config.get("boot_groups", [])
                for w in g["workloads"]}
    instances = {i["workload"]: i for i in execution.instances}

    async def one(w: dict) -> dict:
        i, given = instances.get(w["workload"]), settings.get(w["workload"], {})
        checks = given.get("checks") or []
        if i is None or not checks or w["state"] in ("not-started", "failed"):
            return w
        state = WorkloadState(w["workload"], w["group"], instance=RecoveredInstance(
            workload=i["workload"], instance_id=i["instance_id"],
            private_ip=i.get("private_ip", ""), state=i.get("state", ""),
            volume_ids=tuple(i.get("volume_ids", ())), network_interface_ids=(),
            image_id=i.get("image_id", ""), address=i.get("address", "")))
        results = await checks_mod.run_checks(checks, state.facts())
        failed = [r for r in results if not r.passed]
        return {**w, "checks": [r.as_dict() for r in results],
                "state": "validation-failed" if failed else "validated",
                "reason": "; ".join(f"{r.check}: {r.detail}" for r in failed)}

    refreshed = list(await asyncio.gather(*(one(w) for w in execution.workloads)))
    passing = sum(w["state"] == "validated" for w in refreshed)
    return refreshed, f"{passing} of {len(refreshed)} workload(s) pass their checks now"


def check_recovery_settings(where: str, w: dict[str, Any]) -> dict[str, Any]:
    """A workload's checks and scripts (every provider's settings), normalized."""
    return {"checks": checks_mod.check_checks(f"{where}.checks", list(w.get("checks") or [])),
            "pre_scripts": scripts_mod.check_scripts(f"{where}.pre_scripts",
                                                     list(w.get("pre_scripts") or [])),
            "post_scripts": scripts_mod.check_scripts(f"{where}.post_scripts",
                                                      list(w.get("post_scripts") or []))}


def describe_failures(failures: Sequence[str]) -> str:
    return "; ".join(dict.fromkeys(failures))
