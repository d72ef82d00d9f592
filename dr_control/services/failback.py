"""Failback: the workloads a failover recovered are protected back to where they came
from, then written home; the `failback` mode of a recovery execution.

It runs on the recovery plan that failed over (`failed_over_by`), in the steps of any
execution (services/recovery_run.py: events, cancel at step boundaries, resume):

1. *reverse plan*: the recovery site is inventoried again (a kvm site lists the VMs kvm
   recovery runs there) and a protection plan is created from the failover's recovered
   workloads, at the recovery site, into the original plan's repository. Its first cycle
   (the scheduler starts it at once) runs while the workloads keep running; in the same
   repository every chunk the original point already holds is deduplicated, so it
   stores only what changed since the failover (it still reads every allocated block:
   the recovered VM has no tracking relative to the original point);
2. *migrate home*: the reverse plan's final cycle pauses the recovered workloads and
   reads them (ExecutionRun.final_cycle, as a migration's);
3. *write home*: each disk of that point is written by a node restore task over the
   original disk's image at the original site (sources.home_image: file and kvm images
   at rest), so the original site ends with the recovered workloads' data;
4. the original plan is resumed (its next cycle protects the written-home disks again),
   the recovery plan is no longer failed over, and the failover's recovered workloads
   are deleted (its cleanup). The reverse plan is kept, paused, with its points.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import select

from dr_common import names, sources
from dr_common.errors import AlreadyExists, FailedPrecondition
from dr_common.names import resource_id
from dr_control.db.models import (Disk, Execution, Plan, RecoveryPlan, RecoveryPoint,
                                  Site, Task, utcnow)
from dr_control.recovery.base import RecoveryFailed
from dr_control.services.inventory import InventoryService
from dr_control.services.nodework import wait_task
from dr_control.services.points import PointService
from dr_control.services.protection import ProtectionService

if TYPE_CHECKING:
    from dr_control.services.recovery_run import ExecutionRun

log = structlog.get_logger()

FAILED_OVER_STATES = ("completed", "partially-completed")


async def check_start(s, rp: RecoveryPlan, plan: Plan, recovery_site: Site) -> dict[str, Any]:
    """What a failback of `rp` needs, checked before it is recorded; returns its part of
    the execution's config. FailedPrecondition saying what is missing otherwise."""
    if not rp.failed_over_by:
        raise FailedPrecondition(f"recoveryPlans/{rp.id} has not failed over: there is "
                                 f"nothing to fail back (run a failover or a migration)")
    rp_id, execution_id = rp.failed_over_by.split("/executions/")
    failover = await s.get(Execution, (rp_id.split("/", 1)[1], execution_id))
    if failover is None or failover.state not in FAILED_OVER_STATES:
        raise FailedPrecondition(f"{rp.failed_over_by} is "
                                 f"{failover.state if failover else 'gone'}: its recovered "
                                 f"workloads cannot be failed back")
    sources.check_stops_workloads(recovery_site.kind)
    source = await s.get(Site, plan.source_site)
    for disk in plan.disks:
        row = await s.get(Disk, disk)
        sources.home_image(source.kind, disk, row.locator if row else "")
    reverse = f"{plan.id}-back-{failover.seq}"[:63]
    return {"failback_of": rp.failed_over_by, "reverse_plan": reverse}


async def run(r: "ExecutionRun", groups_for) -> tuple[list, str]:
    """The failback's steps (module docstring); returns (no instances, "completed")."""
    ctx = r.ctx
    fo_name, reverse = r.config["failback_of"], r.config["reverse_plan"]
    async with ctx.db() as s:
        rp = await s.get(RecoveryPlan, r.rp_id)
        plan = await s.get(Plan, r.plan_id)
        failover = await s.get(Execution, (r.rp_id, fo_name.rsplit("/", 1)[1]))
        recovery_site = rp.site_id or plan.target_site
    if not r._had("reverse-plan-created"):
        await r.boundary()
        await InventoryService(ctx).refresh_site(names.site_name(recovery_site))
        workloads = [names.workload_name(recovery_site, resource_id(i["instance_id"]))
                     for i in failover.instances]
        try:
            await ProtectionService(ctx).create_plan(
                reverse, source_site=names.site_name(recovery_site),
                target_site=names.site_name(plan.target_site), target_kind=plan.target_kind,
                workloads=workloads, disks=[], rpo_seconds=plan.rpo_seconds,
                keep_last=plan.keep_last, chunk_size=plan.chunk_size,
                compression=plan.compression)
        except AlreadyExists:
            pass  # made by the attempt a restart interrupted
        # Its cycles are the failback's own: the scheduler must not start one meanwhile.
        await ProtectionService(ctx).set_paused(names.plan_name(reverse), True)
        r.emit("reverse-plan-created",
               f"{names.plan_name(reverse)}: {', '.join(workloads)} into "
               f"{names.site_name(plan.target_site)}")
    # Its first cycle reads the recovered workloads while they run (the repository
    # holds the original point's chunks: stored is what changed since the failover).
    await r.cycle(reverse, "reverse-cycle", stop_workloads=False)
    point = await r.final_cycle(reverse)
    # Original disks, in each workload's order, beside the reverse point's.
    original = {spec.workload: spec for g in await groups_for(failover.recovery_point)
                for spec in g.instances}
    async with ctx.db() as s:
        rpoint = await s.get(RecoveryPoint, tuple(names.parse_point(point)))
        source = await s.get(Site, plan.source_site)
        locators = {d.name: d.locator for d in (await s.scalars(select(Disk).where(
            Disk.name.in_([d.disk for spec in original.values() for d in spec.disks])))).all()}
    by_workload: dict[str, list[str]] = {}
    for d in sorted(rpoint.disks, key=lambda d: _disk_order(d["disk"])):
        by_workload.setdefault(d["disk"].rsplit("/disks/", 1)[0], []).append(d["disk"])
    for i in failover.instances:
        back = by_workload.get(names.workload_name(recovery_site,
                                                   resource_id(i["instance_id"])), [])
        spec = original[i["workload"]]
        if len(back) != len(spec.disks):
            raise RecoveryFailed(f"{point} holds {len(back)} disk(s) of {i['instance_id']}, "
                                 f"its original {i['workload']} {len(spec.disks)}: cannot "
                                 f"tell which goes where")
        for rdisk, odisk in zip(back, spec.disks):
            path, fmt = sources.home_image(source.kind, odisk.disk, locators.get(odisk.disk, ""))
            await _write_home(r, point, rdisk, odisk.disk, path, fmt)
        r.workloads[i["workload"]].state = "written-back"
    await r._save_workloads()
    await _home_again(r, plan.id)
    if not r._had("failover-cleaned-up"):
        # The recovered workloads were paused by the final cycle; their data is home.
        await r.provider.cleanup(fo_name, on_event=r.emit_event)
        async with ctx.db() as s, s.begin():
            row = await s.get(Execution, (failover.recovery_plan_id, failover.id))
            row.state, row.end_time = "cleaned-up", utcnow()
            row.instances = [{**i, "state": "terminated"} for i in row.instances]
        r.emit("failover-cleaned-up", f"{fo_name}: its recovered workloads are deleted")
    return [], "completed"


def _disk_order(disk: str) -> tuple:
    """Disks of a recovered VM in their order (vd0, vd1, ... 10 after 9)."""
    ident = disk.rsplit("/", 1)[-1]
    digits = "".join(ch for ch in ident if ch.isdigit())
    return (int(digits) if digits else 0, ident)


async def _write_home(r: "ExecutionRun", point: str, rdisk: str, odisk: str, path: str,
                      fmt: str) -> None:
    """Writes `rdisk` of the reverse point over the original disk's image (a node
    restore), reusing one an interrupted attempt queued or finished."""
    if r._had("disk-written-back", workload=odisk.rsplit("/disks/", 1)[0],
              detail_prefix=f"{odisk} "):
        return
    await r.boundary()
    async with r.ctx.db() as s:
        task = next((t for t in (await s.scalars(select(Task).where(
            Task.kind == "restore", Task.target == point, Task.disk == rdisk,
            Task.state.in_(("queued", "leased", "completed"))))).all()
            if t.spec.get("destination_path") == path), None)
    if task is None:
        task = await PointService(r.ctx).restore(point, disk=rdisk, destination=path,
                                                 fmt=fmt, overwrite=True)
    started = utcnow()
    task = await wait_task(r.ctx, task.id, r.cancelled)
    if task.state != "completed":
        raise RecoveryFailed(f"{rdisk} of {point} could not be written back to {path} "
                             f"(operations/{task.id} {task.state}: "
                             f"{task.error_message or 'no reason given'}); the original "
                             f"plan stays paused: fix the cause and fail back again")
    seconds = (utcnow() - started).total_seconds()
    r.emit("disk-written-back", f"{odisk} <- {rdisk}: {path} ({fmt}, {task.bytes_total} "
                                f"bytes in {seconds:.1f} s)",
           group="", workload=odisk.rsplit("/disks/", 1)[0])


async def _home_again(r: "ExecutionRun", plan_id: str) -> None:
    """The original plan protects the workloads again; the recovery plan is no longer
    failed over."""
    async with r.ctx.db() as s, s.begin():
        plan = await s.get(Plan, plan_id)
        plan.paused = False
        rp = await s.get(RecoveryPlan, r.rp_id)
        rp.failed_over_by = ""
    r.emit("plan-resumed", f"{names.plan_name(plan_id)} protects the written-home disks")
    log.info("failed back", execution=r.name, plan=plan_id)
