"""`drctl plan ...`: protection plans, their status, and their replication cycles."""

from __future__ import annotations

import argparse

from google.protobuf import empty_pb2, field_mask_pb2

from dr_common.proto.dr.v1 import protection_pb2

from .. import argtypes, names
from ..context import Context
from ..errors import EXIT_FAILURE, EXIT_OK, UsageError, task_error_text
from ..table import format_fields, format_table
from ..units import format_duration, format_size, format_time, is_set, span_seconds
from ..wait import wait_cycle


def register(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    plan = sub.add_parser("plan", help="protection plans: what is replicated where, how often")
    plan_sub = plan.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = plan_sub.add_parser("create", parents=parents, help="create a protection plan")
    p.add_argument("id", metavar="ID", type=argtypes.resource_id(names.PLAN))
    p.add_argument("--source", required=True, metavar="SITE", type=argtypes.name(names.SITE))
    p.add_argument("--target", required=True, metavar="SITE", type=argtypes.name(names.SITE))
    p.add_argument("--target-kind", default="fs", help='how points are stored (default "fs")')
    p.add_argument(
        "--workload",
        action="append",
        default=[],
        metavar="W",
        help="protect all disks of WORKLOAD or SITE/WORKLOAD (the site defaults to --source); "
        "repeatable",
    )
    p.add_argument(
        "--disk",
        action="append",
        default=[],
        metavar="D",
        help="protect one disk, WORKLOAD/DISK or SITE/WORKLOAD/DISK; repeatable",
    )
    p.add_argument(
        "--rpo", required=True, type=argtypes.duration, metavar="DURATION",
        help="recovery-point objective: 90, 90s, 15m, 1h, 1d",
    )
    p.add_argument("--keep-last", type=int, metavar="N", help="recovery points kept (0: all)")
    _retention_options(p)
    p.add_argument(
        "--chunk-size", type=argtypes.size, metavar="SIZE",
        help="chunk size: 1MiB, 256KiB, 4M, 1048576 (default: the server's)",
    )
    p.add_argument("--compression", choices=["none", "zstd"])
    p.add_argument("--bandwidth", type=argtypes.rate, metavar="RATE",
                   help="cap on data sent for this plan: 50MB/s, 100MiB/s (default: none)")
    p.add_argument("--quiesce", action="store_true",
                   help="flush guests' file systems before each snapshot (vsphere: VMware "
                        "Tools); VMs that cannot are snapshotted crash-consistent")
    p.set_defaults(handler=plan_create)

    p = plan_sub.add_parser("update", parents=parents,
                            help="change a plan's RPO, retention or bandwidth cap "
                                 "(running cycles follow a new cap within seconds)")
    p.add_argument("plan", metavar="ID", type=argtypes.name(names.PLAN))
    p.add_argument("--rpo", type=argtypes.duration, metavar="DURATION")
    p.add_argument("--keep-last", type=int, metavar="N")
    _retention_options(p)
    p.add_argument("--bandwidth", type=argtypes.rate, metavar="RATE", help="0: unlimited")
    p.set_defaults(handler=plan_update)

    p = plan_sub.add_parser("list", parents=parents, help="list plans")
    p.set_defaults(handler=plan_list)

    for action, handler, text in (
        ("status", plan_status, "show RPO status, disk states and the running cycle"),
        ("pause", plan_pause, "stop scheduling cycles (a running cycle finishes)"),
        ("resume", plan_resume, "schedule cycles again"),
        ("delete", plan_delete, "delete a plan"),
        ("cycles", plan_cycles, "list the plan's replication cycles"),
    ):
        p = plan_sub.add_parser(action, parents=parents, help=text)
        p.add_argument("plan", metavar="ID", type=argtypes.name(names.PLAN))
        p.set_defaults(handler=handler)

    p = plan_sub.add_parser("run", parents=parents, help="start a replication cycle now")
    p.add_argument("plan", metavar="ID", type=argtypes.name(names.PLAN))
    p.add_argument(
        "--wait", action="store_true",
        help="wait until the cycle ends; exit 1 if it failed",
    )
    p.set_defaults(handler=plan_run)


# Retention periods beyond --keep-last: (flag, field of Retention, period).
RETENTION_OPTIONS = (("--keep-hourly", "keep_hourly", "hour"), ("--keep-daily", "keep_daily", "day"),
                     ("--keep-weekly", "keep_weekly", "week"))


def _retention_options(p: argparse.ArgumentParser) -> None:
    for flag, _, period in RETENTION_OPTIONS:
        p.add_argument(flag, type=int, metavar="N",
                       help=f"keep the newest point of each of the last N {period}s (0: off)")


def _set_retention(plan: protection_pb2.Plan, args: argparse.Namespace) -> list[str]:
    """Sets the retention options given; their update_mask paths."""
    paths = []
    for flag, field, _ in RETENTION_OPTIONS:
        value = getattr(args, field)
        if value is not None:
            argtypes.set_field(plan.retention, field, value, flag)
            paths.append(f"retention.{field}")
    return paths


def plan_create(ctx: Context, args: argparse.Namespace) -> int:
    source_id = names.short_name(args.source)
    try:
        # A plan's workloads and disks live at its source site, so the site may be omitted.
        workloads = [names.expand(names.WORKLOAD, w, parents=(source_id,)) for w in args.workload]
        disks = [names.expand(names.DISK, d, parents=(source_id,)) for d in args.disk]
    except names.InvalidName as e:
        raise UsageError(str(e)) from None
    plan = protection_pb2.Plan(
        source_site=args.source,
        target_site=args.target,
        target_kind=args.target_kind,
        workloads=workloads,
        disks=disks,
        compression=args.compression or "",
        quiesce=args.quiesce,
    )
    argtypes.set_field(plan, "rpo_seconds", args.rpo, "--rpo")
    # Options left out are sent as 0: the server applies its defaults.
    if args.keep_last is not None:
        argtypes.set_field(plan, "keep_last", args.keep_last, "--keep-last")
    _set_retention(plan, args)
    if args.chunk_size is not None:
        argtypes.set_field(plan, "chunk_size_bytes", args.chunk_size, "--chunk-size")
    if args.bandwidth is not None:
        argtypes.set_field(plan, "bandwidth_bytes_per_second", args.bandwidth, "--bandwidth")
    created = ctx.client.call(
        ctx.client.protection.CreatePlan,
        protection_pb2.CreatePlanRequest(plan_id=args.id, plan=plan),
    )
    ctx.out.resource(created, render_plan)
    return EXIT_OK


def plan_update(ctx: Context, args: argparse.Namespace) -> int:
    plan = protection_pb2.Plan(name=args.plan)
    paths = []
    for flag, field, value in (("--rpo", "rpo_seconds", args.rpo),
                               ("--keep-last", "keep_last", args.keep_last),
                               ("--bandwidth", "bandwidth_bytes_per_second", args.bandwidth)):
        if value is not None:
            argtypes.set_field(plan, field, value, flag)
            paths.append(field)
    paths += _set_retention(plan, args)
    if not paths:
        raise UsageError("nothing to update: give --rpo, --keep-last, --keep-hourly, "
                         "--keep-daily, --keep-weekly or --bandwidth")
    updated = ctx.client.call(
        ctx.client.protection.UpdatePlan,
        protection_pb2.UpdatePlanRequest(plan=plan, update_mask=field_mask_pb2.FieldMask(
            paths=paths)),
    )
    ctx.out.resource(updated, render_plan)
    return EXIT_OK


def plan_list(ctx: Context, args: argparse.Namespace) -> int:
    plans = ctx.client.list_all(
        ctx.client.protection.ListPlans, protection_pb2.ListPlansRequest(), "plans"
    )
    ctx.out.resources(plans, render_plans)
    return EXIT_OK


def plan_status(ctx: Context, args: argparse.Namespace) -> int:
    status = ctx.client.call(
        ctx.client.protection.GetPlanStatus, protection_pb2.GetPlanStatusRequest(name=args.plan)
    )
    ctx.out.resource(status, render_status)
    return EXIT_OK


def plan_pause(ctx: Context, args: argparse.Namespace) -> int:
    plan = ctx.client.call(
        ctx.client.protection.PausePlan, protection_pb2.PausePlanRequest(name=args.plan)
    )
    ctx.out.resource(plan, render_plan)
    return EXIT_OK


def plan_resume(ctx: Context, args: argparse.Namespace) -> int:
    plan = ctx.client.call(
        ctx.client.protection.ResumePlan, protection_pb2.ResumePlanRequest(name=args.plan)
    )
    ctx.out.resource(plan, render_plan)
    return EXIT_OK


def plan_delete(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.call(
        ctx.client.protection.DeletePlan, protection_pb2.DeletePlanRequest(name=args.plan)
    )
    ctx.out.resource(empty_pb2.Empty(), lambda _: f"deleted {args.plan}")
    return EXIT_OK


def plan_run(ctx: Context, args: argparse.Namespace) -> int:
    cycle = ctx.client.call(
        ctx.client.protection.RunPlan, protection_pb2.RunPlanRequest(name=args.plan)
    )
    if not args.wait:
        ctx.out.resource(cycle, render_cycle)
        return EXIT_OK
    cycle = wait_cycle(ctx, cycle)
    ctx.out.resource(cycle, render_cycle)
    if cycle.state == "failed":
        ctx.out.note(f"error: {cycle.name} failed{_error_suffix(cycle.error)}")
        return EXIT_FAILURE
    if cycle.state == "partially-completed":
        # Not a failure by contract, but never to be mistaken for a clean run.
        ctx.out.note(f"warning: {cycle.name} partially completed{_error_suffix(cycle.error)}")
    return EXIT_OK


def plan_cycles(ctx: Context, args: argparse.Namespace) -> int:
    cycles = ctx.client.list_all(
        ctx.client.protection.ListCycles,
        protection_pb2.ListCyclesRequest(parent=args.plan),
        "cycles",
    )
    ctx.out.resources(cycles, render_cycles)
    return EXIT_OK


def _error_suffix(error) -> str:
    text = task_error_text(error)
    return f": {text}" if text else ""


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def render_plan(plan: protection_pb2.Plan) -> str:
    return format_fields(
        [
            ("plan", plan.name),
            ("state", plan.state),
            ("paused", _yes_no(plan.paused)),
            ("source", plan.source_site),
            ("target", f"{plan.target_site} ({plan.target_kind})"),
            ("workloads", ", ".join(names.short_name(w) for w in plan.workloads) or "-"),
            ("disks", ", ".join(names.short_name(d) for d in plan.disks) or "-"),
            ("rpo", format_duration(plan.rpo_seconds)),
            ("keep last", plan.keep_last or "all"),
            ("chunk size", format_size(plan.chunk_size_bytes) if plan.chunk_size_bytes else "-"),
            ("compression", plan.compression or "-"),
            ("bandwidth", f"{format_size(plan.bandwidth_bytes_per_second)}/s"
             if plan.bandwidth_bytes_per_second else "unlimited"),
            ("created", format_time(plan.create_time)),
        ]
    )


def render_plans(plans: list[protection_pb2.Plan]) -> str:
    return format_table(
        ["PLAN", "STATE", "PAUSED", "SOURCE", "TARGET", "DISKS", "RPO", "KEEP"],
        [
            [
                names.short_name(p.name),
                p.state,
                _yes_no(p.paused),
                names.short_name(p.source_site),
                names.short_name(p.target_site),
                len(p.disks),
                format_duration(p.rpo_seconds),
                p.keep_last or "all",
            ]
            for p in plans
        ],
        right=["DISKS", "RPO", "KEEP"],
    )


def _progress(done: int, total: int) -> str:
    if not total:
        return format_size(done)
    return f"{100 * done // total}%  {format_size(done)}/{format_size(total)}"


def render_status(status: protection_pb2.PlanStatus) -> str:
    plan = status.plan
    cycle = status.current_cycle
    if status.last_recovery_point:
        last = names.short_name(status.last_recovery_point)
        if is_set(status.last_recovery_point_time):
            last += f" ({format_time(status.last_recovery_point_time)})"
    else:
        last = "none yet"
    # The server lists every protected disk's state; fall back to the plan's disks.
    total = len(status.disks) or len(plan.disks)
    fields = [
        ("plan", plan.name),
        ("state", plan.state),
        ("paused", _yes_no(plan.paused)),
        ("last recovery point", last),
        ("rpo", format_duration(plan.rpo_seconds)),
        ("rpo lag", format_duration(status.rpo_lag_seconds)),
        ("rpo met", _yes_no(status.rpo_met)),
        ("in sync", f"{status.in_sync_count}/{total}"),
    ]
    if cycle.name:
        fields += [
            ("current cycle", f"{names.short_name(cycle.name)} ({cycle.state})"),
            ("cycle started", format_time(cycle.create_time)),
        ]
    else:
        fields.append(("current cycle", "none"))
    # One row per disk: its sync state, and its progress in the current cycle if any.
    progress = {d.disk: d for d in cycle.disks}
    order = [d.disk for d in status.disks] + [d for d in progress if d not in
                                              {s.disk for s in status.disks}]
    sync_state = {d.disk: d.state for d in status.disks}
    rows = []
    for disk in order:
        p = progress.get(disk)
        rows.append(
            [
                names.short_name(disk),
                sync_state.get(disk, "-"),
                p.state if p else "-",
                _yes_no(p.full_sync) if p else "-",
                _progress(p.watermark_bytes, p.size_bytes) if p else "-",
            ]
        )
    blocks = [format_fields(fields)]
    if rows:
        blocks.append(
            format_table(["DISK", "SYNC STATE", "CYCLE", "FULL SYNC", "WATERMARK"], rows)
        )
    # Why queued disks wait (e.g. a paired plan with no target node online).
    waits = [f"{names.short_name(d.disk)}: {d.message}" for d in cycle.disks if d.message]
    if waits:
        blocks.append("\n".join(waits))
    return "\n\n".join(blocks)


def _disk_progress_table(disks) -> str:
    return format_table(
        ["DISK", "STATE", "FULL SYNC", "WATERMARK"],
        [
            [
                names.short_name(d.disk),
                d.state,
                _yes_no(d.full_sync),
                _progress(d.watermark_bytes, d.size_bytes),
            ]
            for d in disks
        ],
    )


def _duration(cycle: protection_pb2.Cycle) -> str:
    if not is_set(cycle.create_time):
        return "-"
    return format_duration(span_seconds(cycle.create_time, cycle.end_time))


def render_cycle(cycle: protection_pb2.Cycle) -> str:
    s = cycle.stats
    fields = [
        ("cycle", cycle.name),
        ("state", cycle.state),
        ("started", format_time(cycle.create_time)),
        ("ended", format_time(cycle.end_time)),
        ("duration", _duration(cycle)),
        ("recovery point", cycle.recovery_point or "-"),
        ("bytes read/sent/stored",
         f"{format_size(s.bytes_read)} / {format_size(s.bytes_sent)} / "
         f"{format_size(s.bytes_stored)}"),
        ("chunks sent/unchanged/zero",
         f"{s.chunks_sent} / {s.chunks_unchanged} / {s.chunks_zero}"),
    ]
    if task_error_text(cycle.error):
        fields.append(("error", task_error_text(cycle.error)))
    blocks = [format_fields(fields)]
    if cycle.disks:
        blocks.append(_disk_progress_table(cycle.disks))
    return "\n\n".join(blocks)


def render_cycles(cycles: list[protection_pb2.Cycle]) -> str:
    return format_table(
        ["CYCLE", "STATE", "START", "DURATION", "READ", "SENT", "STORED",
         "CHUNKS SENT", "UNCHANGED", "ZERO", "POINT"],
        [
            [
                names.short_name(c.name),
                c.state,
                format_time(c.create_time),
                _duration(c),
                format_size(c.stats.bytes_read),
                format_size(c.stats.bytes_sent),
                format_size(c.stats.bytes_stored),
                c.stats.chunks_sent,
                c.stats.chunks_unchanged,
                c.stats.chunks_zero,
                names.short_name(c.recovery_point) if c.recovery_point else "-",
            ]
            for c in cycles
        ],
        right=["DURATION", "READ", "SENT", "STORED", "CHUNKS SENT", "UNCHANGED", "ZERO"],
    )
