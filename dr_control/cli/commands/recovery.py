"""`drctl recovery-plan ...` and `drctl recovery ...`: recovery plans (boot groups of
workloads with their EC2 settings) and their executions (test drills and failovers).

A recovery plan's boot groups are given on the command line, one `--group` each:

    --group 'NAME:WORKLOAD=TYPE,subnet=SUBNET[,sg=SG]...[,ip=IP][,tag.KEY=VALUE]...[;WORKLOAD=...]'

WORKLOAD is SITE/WORKLOAD (or WORKLOAD alone: the protection plan's source site) and TYPE
the EC2 instance type; workloads of one group are separated by ";". Groups start in the
order given. Or from a JSON file in the API's form (the output of `recovery-plan get -o
json`), with `--from-file FILE` ("-" for stdin):

    {"protection_plan": "plans/p1", "boot_groups": [{"name": "databases", "workloads": [
      {"workload": "sites/ec2/workloads/i-0abc", "instance_type": "t3.medium",
       "network_mapping": {"subnet_id": "subnet-1", "security_group_ids": ["sg-1"],
                           "private_ip": "10.0.1.10"}, "tags": {"team": "db"}}]}]}
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from google.protobuf import empty_pb2, json_format

from dr_common.proto.dr.v1 import protection_pb2, recovery_pb2, recovery_pb2_grpc

from .. import argtypes, names
from ..context import Context
from ..errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, CliError, UsageError, task_error_text
from ..table import format_fields, format_table
from ..units import format_duration, format_time, is_set, span_seconds

RECOVERY_PLAN = names.Pattern("recovery plan", ("recoveryPlans",), "RECOVERY_PLAN")
EXECUTION = names.Pattern("execution", ("recoveryPlans", "executions"),
                          "RECOVERY_PLAN/EXECUTION")

# As for cycles and operations (cli/wait.py): quick enough to show each step as it
# happens, slow enough not to load dr-control.
POLL_INTERVAL = 1.0
TERMINAL_STATES = frozenset({"completed", "partially-completed", "failed", "cancelled",
                             "cleaned-up"})

GROUP_SYNTAX = ("NAME:WORKLOAD=TYPE,subnet=SUBNET[,sg=SG]...[,ip=IP][,tag.KEY=VALUE]..."
                "[;WORKLOAD=...]")


def _stub(ctx: Context) -> recovery_pb2_grpc.RecoveryServiceStub:
    return ctx.client.recovery


def register(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    rp = sub.add_parser("recovery-plan",
                        help="recovery plans: boot groups of workloads with their EC2 settings")
    rp_sub = rp.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = rp_sub.add_parser(
        "create", parents=parents, help="create a recovery plan",
        description="Create a recovery plan for a protection plan: to EC2 from an ebs "
        "target's points, to vSphere (--site) from a repository's, to Azure (--site) "
        "from an azure-disk target's or a repository's, or to a kvm site (--site, QEMU "
        "VMs in its directory) from a repository's. Boot groups: --group "
        f"'{GROUP_SYNTAX}' (EC2; repeat, started in order), or --from-file with a JSON "
        "RecoveryPlan (as `recovery-plan get -o json` prints; vSphere workloads set "
        '"vsphere": {"cpus", "memory_mib", "datastore", "networks": [{"source", '
        '"port_group"}], "isolated_port_group", ...}; Azure workloads set "azure": '
        '{"vm_size", "subnet_id", "network_security_group_id", "private_ip", '
        '"test_subnet_id", "os_type", "disk_sku"}, see docs/AZURE.md; kvm workloads set '
        '"kvm": {"cpus", "memory_mib", "networks": [{"source", "network": "user" or a '
        'bridge, "forwards": ["tcp:127.0.0.1:8080-:80"]}], "kernel", "initrd", "append", '
        '"accel", "wait_for"}).',
    )
    p.add_argument("id", metavar="ID", type=argtypes.resource_id(RECOVERY_PLAN))
    p.add_argument("--plan", metavar="PLAN", type=argtypes.name(names.PLAN),
                   help="the protection plan whose recovery points are recovered")
    p.add_argument("--group", action="append", default=[], metavar="GROUP",
                   help=f"a boot group: {GROUP_SYNTAX}; repeatable, started in order")
    p.add_argument("--from-file", metavar="FILE",
                   help='the plan as JSON (API field names); "-" reads stdin')
    p.add_argument("--site", metavar="SITE", type=argtypes.name(names.SITE), default=None,
                   help="the site to recover to (its kind picks the provider); default: "
                        "the protection plan's target site")
    p.set_defaults(handler=recovery_plan_create)

    p = rp_sub.add_parser("list", parents=parents, help="list recovery plans")
    p.set_defaults(handler=recovery_plan_list)
    for action, handler, text in (("get", recovery_plan_get, "show a recovery plan"),
                                  ("delete", recovery_plan_delete, "delete a recovery plan"),
                                  ("forecast", recovery_plan_forecast,
                                   "predict the plan's RTO from what its executions measured")):
        p = rp_sub.add_parser(action, parents=parents, help=text)
        p.add_argument("recovery_plan", metavar="ID", type=argtypes.name(RECOVERY_PLAN))
        p.set_defaults(handler=handler)

    rec = sub.add_parser("recovery", help="run recovery plans (test drills, failovers) and "
                                          "follow their executions")
    rec_sub = rec.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = rec_sub.add_parser("run", parents=parents, help="start an execution of a recovery plan")
    p.add_argument("recovery_plan", metavar="RECOVERY_PLAN", type=argtypes.name(RECOVERY_PLAN))
    p.add_argument("--point", metavar="POINT", default="",
                   help="the recovery point, POINT or PLAN/POINT (default: the newest)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--test", dest="mode", action="store_const", const="test",
                      help="a drill: instances tagged as a test, to be cleaned up (default)")
    mode.add_argument("--failover", dest="mode", action="store_const", const="failover",
                      help="a real failover")
    mode.add_argument("--migrate", dest="mode", action="store_const", const="migrate",
                      help="a migration: the plan paused, its source workloads stopped, a "
                           "final cycle, then a failover from its point (no data lost)")
    mode.add_argument("--failback", dest="mode", action="store_const", const="failback",
                      help="after a failover: protect the recovered workloads back into the "
                           "plan's repository, stop them, and write their disks home")
    p.add_argument("--ttl", type=argtypes.duration, default=0, metavar="DURATION",
                   help="--test only: clean it up by itself this long after it ends "
                        "(e.g. 2h); default: it stays until `drctl recovery cleanup`")
    p.add_argument("--wait", action="store_true",
                   help="show each step until the execution ends; exit 1 unless it completed")
    p.set_defaults(handler=recovery_run, mode="test")

    p = rec_sub.add_parser("list", parents=parents, help="list a recovery plan's executions")
    p.add_argument("recovery_plan", metavar="RECOVERY_PLAN", type=argtypes.name(RECOVERY_PLAN))
    p.set_defaults(handler=recovery_list)

    p = rec_sub.add_parser("get", parents=parents, help="show an execution, its steps and "
                                                        "instances")
    p.add_argument("execution", metavar="EXECUTION", type=argtypes.name(EXECUTION),
                   help="RECOVERY_PLAN/EXECUTION")
    p.add_argument("--wait", action="store_true", help="wait until the execution ends")
    p.set_defaults(handler=recovery_get)

    for action, handler, text in (
            ("cleanup", recovery_cleanup, "delete what an ended execution created (instances, "
                                          "volumes, network interfaces, images); the "
                                          "recovery point is kept"),
            ("cancel", recovery_cancel, "stop a running execution at its next step and "
                                        "delete what it created; it ends cancelled")):
        p = rec_sub.add_parser(action, parents=parents, help=text)
        p.add_argument("execution", metavar="EXECUTION", type=argtypes.name(EXECUTION),
                       help="RECOVERY_PLAN/EXECUTION")
        p.add_argument("--wait", action="store_true", help="wait until it has ended")
        p.set_defaults(handler=handler)
    p = rec_sub.add_parser("refresh", parents=parents,
                           help="run an ended execution's validation checks again and show "
                                "what they say now")
    p.add_argument("execution", metavar="EXECUTION", type=argtypes.name(EXECUTION),
                   help="RECOVERY_PLAN/EXECUTION")
    p.set_defaults(handler=recovery_refresh)


# --- recovery plans ---------------------------------------------------------------------

def parse_group(text: str) -> recovery_pb2.BootGroup:
    """One --group value (GROUP_SYNTAX) as a BootGroup; UsageError says what is wrong.
    Workload names are as typed (recovery_plan_create expands them)."""
    name, sep, rest = text.partition(":")
    if not sep or not name.strip() or not rest.strip():
        raise UsageError(f"argument --group: {text!r} is not {GROUP_SYNTAX}")
    group = recovery_pb2.BootGroup(name=name.strip())
    for spec in filter(None, (s.strip() for s in rest.split(";"))):
        items = [i.strip() for i in spec.split(",")]
        workload, eq, instance_type = items[0].partition("=")
        if not eq or not workload.strip() or not instance_type.strip():
            raise UsageError(f"argument --group: {items[0]!r} should be WORKLOAD=INSTANCE_TYPE "
                             f"(e.g. web1=t3.medium)")
        w = group.workloads.add(workload=workload.strip(), instance_type=instance_type.strip())
        for item in items[1:]:
            key, eq, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not eq or not value:
                raise UsageError(f"argument --group: {item!r} should be KEY=VALUE")
            if key == "subnet":
                w.network_mapping.subnet_id = value
            elif key == "sg":
                w.network_mapping.security_group_ids.append(value)
            elif key == "ip":
                w.network_mapping.private_ip = value
            elif key.startswith("tag.") and len(key) > 4:
                w.tags[key[4:]] = value
            else:
                raise UsageError(f"argument --group: unknown setting {key!r} (use subnet=, sg=, "
                                 f"ip= or tag.KEY=)")
    if not group.workloads:
        raise UsageError(f"argument --group: group {group.name!r} has no workloads")
    return group


def _read_file(path: str) -> recovery_pb2.RecoveryPlan:
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except OSError as e:
        raise UsageError(f"argument --from-file: cannot read {path}: {e.strerror}") from None
    try:
        return json_format.Parse(text, recovery_pb2.RecoveryPlan())
    except (json_format.ParseError, json.JSONDecodeError) as e:
        raise UsageError(f"argument --from-file: {path} is not a JSON recovery plan: {e}") \
            from None


def recovery_plan_create(ctx: Context, args: argparse.Namespace) -> int:
    plan = _read_file(args.from_file) if args.from_file else recovery_pb2.RecoveryPlan()
    if args.plan:
        plan.protection_plan = args.plan
    if args.site:
        plan.recovery_site = args.site
    if not plan.protection_plan:
        raise UsageError("which protection plan? give --plan PLAN")
    if args.group and plan.boot_groups:
        raise UsageError("give boot groups with --group or in --from-file, not both")
    if not args.group and not plan.boot_groups:
        raise UsageError(f"no boot groups: give --group '{GROUP_SYNTAX}' or --from-file")
    for text in args.group:
        plan.boot_groups.append(parse_group(text))
    source = ""
    if any("/" not in w.workload for g in plan.boot_groups for w in g.workloads):
        # Workloads given without their site are at the protection plan's source site.
        protection = ctx.client.call(ctx.client.protection.GetPlan,
                                     protection_pb2.GetPlanRequest(name=plan.protection_plan))
        source = names.short_name(protection.source_site)
    for g in plan.boot_groups:
        for w in g.workloads:
            try:
                w.workload = names.expand(names.WORKLOAD, w.workload,
                                          parents=(source,) if source else ())
            except names.InvalidName as e:
                raise UsageError(f"{'argument --group' if args.group else 'argument --from-file'}"
                                 f": {e}") from None
    created = ctx.client.call(_stub(ctx).CreateRecoveryPlan, recovery_pb2.CreateRecoveryPlanRequest(
        recovery_plan_id=args.id, recovery_plan=plan))
    ctx.out.resource(created, render_recovery_plan)
    return EXIT_OK


def recovery_plan_list(ctx: Context, args: argparse.Namespace) -> int:
    plans = ctx.client.list_all(_stub(ctx).ListRecoveryPlans,
                                recovery_pb2.ListRecoveryPlansRequest(), "recovery_plans")
    ctx.out.resources(plans, render_recovery_plans)
    return EXIT_OK


def recovery_plan_get(ctx: Context, args: argparse.Namespace) -> int:
    plan = ctx.client.call(_stub(ctx).GetRecoveryPlan,
                           recovery_pb2.GetRecoveryPlanRequest(name=args.recovery_plan))
    ctx.out.resource(plan, render_recovery_plan)
    return EXIT_OK


def recovery_plan_forecast(ctx: Context, args: argparse.Namespace) -> int:
    forecast = ctx.client.call(_stub(ctx).ForecastRecoveryPlan,
                               recovery_pb2.ForecastRecoveryPlanRequest(name=args.recovery_plan))
    ctx.out.resource(forecast, render_forecast)
    return EXIT_OK


def render_forecast(f: recovery_pb2.RtoForecast) -> str:
    rto = f.rto_seconds or 1e-9
    parts = [("restore", f.restore_seconds), ("provider waits", f.provider_seconds),
             ("validation", f.validation_seconds), ("scripts", f.script_seconds),
             ("delays", f.delay_seconds), ("orchestration", f.overhead_seconds)]
    table = format_table(["PART", "SECONDS", "SHARE"],
                         [[name, f"{s:.1f}", f"{100 * s / rto:.0f} %"] for name, s in parts],
                         right=["SECONDS", "SHARE"])
    last = (f"{f.last_measured_rto_seconds:.1f} s ({names.short_name(f.last_execution)})"
            if f.last_execution else "none yet")
    fields = format_fields([
        ("recovery plan", f.recovery_plan),
        ("forecast RTO", f"{f.rto_seconds:.1f} s"),
        ("last measured RTO", last),
        ("restore", f"{f.restore_bytes / (1 << 20):.0f} MiB at "
                    f"{f.throughput_bytes_per_second / (1 << 20):.1f} MiB/s"),
        ("basis", f.basis),
    ])
    return f"{fields}\n\n{table}"


def recovery_plan_delete(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.call(_stub(ctx).DeleteRecoveryPlan,
                    recovery_pb2.DeleteRecoveryPlanRequest(name=args.recovery_plan))
    ctx.out.resource(empty_pb2.Empty(), lambda _: f"deleted {args.recovery_plan}")
    return EXIT_OK


# --- executions -------------------------------------------------------------------------

def recovery_run(ctx: Context, args: argparse.Namespace) -> int:
    point = ""
    if args.point:
        parents: tuple[str, ...] = ()
        if "/" not in args.point:
            rp = ctx.client.call(_stub(ctx).GetRecoveryPlan,
                                 recovery_pb2.GetRecoveryPlanRequest(name=args.recovery_plan))
            parents = (names.short_name(rp.protection_plan),)
        try:
            point = names.expand(names.RECOVERY_POINT, args.point, parents=parents)
        except names.InvalidName as e:
            raise UsageError(f"argument --point: {e}") from None
    execution = ctx.client.call(_stub(ctx).StartRecovery, recovery_pb2.StartRecoveryRequest(
        name=args.recovery_plan, recovery_point=point, mode=args.mode,
        ttl_seconds=args.ttl))
    if not args.wait:
        ctx.out.resource(execution, render_execution)
        ctx.out.note(f"follow it with `drctl recovery get {names.short_name(execution.name)} "
                     f"--wait`")
        return EXIT_OK
    return _finish(ctx, wait_execution(ctx, execution))


def recovery_list(ctx: Context, args: argparse.Namespace) -> int:
    executions = ctx.client.list_all(
        _stub(ctx).ListExecutions, recovery_pb2.ListExecutionsRequest(parent=args.recovery_plan),
        "executions")
    ctx.out.resources(executions, render_executions)
    return EXIT_OK


def recovery_get(ctx: Context, args: argparse.Namespace) -> int:
    execution = _get(ctx, args.execution)
    if not args.wait:
        ctx.out.resource(execution, render_execution)
        return EXIT_OK
    return _finish(ctx, wait_execution(ctx, execution))


def recovery_cancel(ctx: Context, args: argparse.Namespace) -> int:
    execution = ctx.client.call(_stub(ctx).CancelExecution,
                                recovery_pb2.CancelExecutionRequest(name=args.execution))
    if not args.wait:
        ctx.out.resource(execution, render_execution)
        return EXIT_OK
    execution = wait_execution(ctx, execution)
    ctx.out.resource(execution, render_execution)
    return EXIT_OK if execution.state == "cancelled" else EXIT_FAILURE


def recovery_refresh(ctx: Context, args: argparse.Namespace) -> int:
    execution = ctx.client.call(_stub(ctx).RefreshExecution,
                                recovery_pb2.RefreshExecutionRequest(name=args.execution))
    ctx.out.resource(execution, render_execution)
    return EXIT_OK


def recovery_cleanup(ctx: Context, args: argparse.Namespace) -> int:
    execution = ctx.client.call(_stub(ctx).CleanupExecution,
                                recovery_pb2.CleanupExecutionRequest(name=args.execution))
    if not args.wait:
        ctx.out.resource(execution, render_execution)
        return EXIT_OK
    return _finish(ctx, wait_execution(ctx, execution))


def _get(ctx: Context, name: str) -> recovery_pb2.Execution:
    return ctx.client.call(_stub(ctx).GetExecution, recovery_pb2.GetExecutionRequest(name=name))


def wait_execution(ctx: Context, execution: recovery_pb2.Execution) -> recovery_pb2.Execution:
    """Polls until the execution is done, printing each new step on stderr."""
    shown = 0
    try:
        while True:
            for event in execution.events[shown:]:
                ctx.out.note(event_line(event))
            shown = len(execution.events)
            if execution.done:
                return execution
            time.sleep(POLL_INTERVAL)
            execution = _get(ctx, execution.name)
    except KeyboardInterrupt:
        raise CliError(
            f"interrupted; {execution.name} keeps running on dr-control: "
            f"`drctl recovery get {names.short_name(execution.name)} --wait` to follow it",
            exit_code=EXIT_INTERRUPTED) from None


def _finish(ctx: Context, execution: recovery_pb2.Execution) -> int:
    ctx.out.resource(execution, render_execution)
    error = task_error_text(execution.error)
    if execution.state == "failed":
        ctx.out.note(f"error: {execution.name} failed{': ' + error if error else ''}")
        return EXIT_FAILURE
    if execution.state == "partially-completed":
        ctx.out.note(f"error: {execution.name} partially completed"
                     f"{': ' + error if error else ''}")
        return EXIT_FAILURE
    last = execution.events[-1].step if execution.events else ""
    if last == "cleanup-failed":
        ctx.out.note(f"error: {execution.name}: {error}")
        return EXIT_FAILURE
    return EXIT_OK


# --- rendering --------------------------------------------------------------------------

def event_line(event: recovery_pb2.ExecutionEvent) -> str:
    where = " ".join(x for x in (event.group, names.short_name(event.workload)
                                 if event.workload else "") if x)
    parts = [format_time(event.time), event.step]
    if where:
        parts.append(where)
    if event.detail:
        parts.append(event.detail)
    return "  ".join(parts)


def _network(w: recovery_pb2.RecoveryWorkload) -> str:
    if w.HasField("vsphere"):
        v = w.vsphere
        text = ",".join(f"{n.source or '-'}>{n.port_group}" for n in v.networks) or "-"
        return text + (f" test={v.isolated_port_group}" if v.isolated_port_group else "")
    if w.HasField("azure"):
        a = w.azure
        return " ".join(x for x in (
            a.subnet_id.rsplit("/", 1)[-1],
            f"nsg={a.network_security_group_id.rsplit('/', 1)[-1]}"
            if a.network_security_group_id else "",
            f"ip={a.private_ip}" if a.private_ip else "",
            f"test={a.test_subnet_id.rsplit('/', 1)[-1]}" if a.test_subnet_id else "") if x)
    if w.HasField("kvm"):
        return ",".join(f"{n.source or '-'}>{n.network}" + "".join(
            f" {f}" for f in n.forwards) for n in w.kvm.networks) or "-"
    n = w.network_mapping
    text = n.subnet_id
    if n.security_group_ids:
        text += f" sg={','.join(n.security_group_ids)}"
    if n.private_ip:
        text += f" ip={n.private_ip}"
    return text


def render_recovery_plan(plan: recovery_pb2.RecoveryPlan) -> str:
    fields = format_fields([
        ("recovery plan", plan.name),
        ("protection plan", plan.protection_plan),
        ("recovery site", plan.recovery_site or "-"),
        ("boot groups", len(plan.boot_groups)),
        ("created", format_time(plan.create_time)),
    ])
    table = format_table(
        ["ORDER", "GROUP", "WORKLOAD", "INSTANCE TYPE", "NETWORK", "TAGS"],
        [[i, g.name, names.short_name(w.workload), w.instance_type or (
            f"{w.vsphere.cpus} vCPU {w.vsphere.memory_mib} MiB {w.vsphere.datastore}"
            if w.HasField("vsphere") else f"{w.kvm.cpus} vCPU {w.kvm.memory_mib} MiB"
            if w.HasField("kvm") else w.azure.vm_size or "-"), _network(w),
          ",".join(f"{k}={v}" for k, v in sorted(w.tags.items())) or "-"]
         for i, g in enumerate(plan.boot_groups, start=1) for w in g.workloads],
        right=["ORDER"])
    return f"{fields}\n\n{table}"


def render_recovery_plans(plans: list[recovery_pb2.RecoveryPlan]) -> str:
    return format_table(
        ["RECOVERY PLAN", "PROTECTION PLAN", "GROUPS", "WORKLOADS", "CREATED"],
        [[names.short_name(p.name), names.short_name(p.protection_plan), len(p.boot_groups),
          sum(len(g.workloads) for g in p.boot_groups), format_time(p.create_time)]
         for p in plans],
        right=["GROUPS", "WORKLOADS"])


def _duration(e: recovery_pb2.Execution) -> str:
    if not is_set(e.create_time):
        return "-"
    return format_duration(span_seconds(e.create_time, e.end_time))


def render_execution(e: recovery_pb2.Execution) -> str:
    fields = [
        ("execution", e.name),
        ("state", e.state + ("" if e.done else " (in progress)")),
        ("mode", e.mode),
        ("recovery point", e.recovery_point),
        ("started", format_time(e.create_time)),
        ("ended", format_time(e.end_time)),
        ("duration", _duration(e)),
    ]
    if is_set(e.expire_time):
        fields.append(("cleaned up by itself", format_time(e.expire_time)))
    if task_error_text(e.error):
        fields.append(("error", task_error_text(e.error)))
    blocks = [format_fields(fields)]
    if e.workloads:
        blocks.append(format_table(
            ["GROUP", "WORKLOAD", "STATE", "CHECKS", "REASON"],
            [[w.group, names.short_name(w.workload), w.state,
              f"{sum(c.passed for c in w.checks)}/{len(w.checks)}" if w.checks else "-",
              w.reason or "-"] for w in e.workloads]))
    if e.instances:
        blocks.append(format_table(
            ["WORKLOAD", "INSTANCE", "STATE", "PRIVATE IP", "IMAGE", "VOLUMES"],
            [[names.short_name(i.workload), i.instance_id, i.state, i.private_ip or "-",
              i.image_id or "-", ",".join(i.volume_ids) or "-"] for i in e.instances]))
    if e.events:
        blocks.append(format_table(
            ["TIME", "STEP", "GROUP", "WORKLOAD", "DETAIL"],
            [[format_time(v.time), v.step, v.group or "-",
              names.short_name(v.workload) if v.workload else "-", v.detail or "-"]
             for v in e.events]))
    return "\n\n".join(blocks)


def render_executions(executions: list[recovery_pb2.Execution]) -> str:
    return format_table(
        ["EXECUTION", "STATE", "MODE", "POINT", "INSTANCES", "STARTED", "DURATION"],
        [[names.short_name(e.name), e.state, e.mode, names.short_name(e.recovery_point),
          len(e.instances), format_time(e.create_time), _duration(e)] for e in executions],
        right=["INSTANCES", "DURATION"])
