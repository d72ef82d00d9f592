"""Conversions from the metadata models to the wire messages (one place, one name each)."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import json_format, timestamp_pb2

from dr_common import names
from dr_common.errors import InvalidArgument
from dr_common.proto.dr.v1 import (common_pb2, inventory_pb2, nodes_pb2, protection_pb2,
                                   recovery_points_pb2)
from dr_control.db import models
from dr_control.services import taskspecs
from dr_control.services.inventory import is_paired, public_settings
from dr_control.services.leasing import NO_TARGET_NODE
from dr_control.services.nodes import node_load

DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 100, 1000


def paginate(items: list, page_size: int, page_token: str) -> tuple[list, str]:
    """Offset pagination: the token is the offset of the next page."""
    if page_size < 0:
        raise InvalidArgument("page_size must not be negative", field="page_size")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    try:
        start = int(page_token or 0)
    except ValueError:
        raise InvalidArgument("page_token is not valid", field="page_token") from None
    page = items[start:start + size]
    nxt = str(start + size) if start + size < len(items) else ""
    return page, nxt


def ts(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(value)
    return t


def stats(d: dict) -> common_pb2.TransferStats:
    return json_format.ParseDict(d or {}, common_pb2.TransferStats(), ignore_unknown_fields=True)


def task_error(reason: str, message: str) -> common_pb2.TaskError | None:
    if not reason:
        return None
    return common_pb2.TaskError(reason=reason, message=message)


def site(s: models.Site) -> inventory_pb2.Site:
    return inventory_pb2.Site(name=names.site_name(s.id), kind=s.kind, path=s.path,
                              description=s.description, credential_ref=s.credential_ref,
                              create_time=ts(s.create_time),
                              workload_count=getattr(s, "workload_count", 0),
                              # Public settings only: the secret stays sealed.
                              **public_settings(s),
                              paired=is_paired(s))


def disk(d: models.Disk) -> inventory_pb2.Disk:
    return inventory_pb2.Disk(name=d.name, display_name=d.display_name, size_bytes=d.size,
                              sector_size=d.sector_size, cbt=d.cbt, locator=d.locator)


def workload(w: models.Workload) -> inventory_pb2.Workload:
    return inventory_pb2.Workload(name=names.workload_name(w.site_id, w.id),
                                  display_name=w.display_name,
                                  disks=[disk(d) for d in w.disks])


def plan(p: models.Plan, state: str) -> protection_pb2.Plan:
    return protection_pb2.Plan(
        name=names.plan_name(p.id), source_site=names.site_name(p.source_site),
        target_site=names.site_name(p.target_site), target_kind=p.target_kind,
        workloads=p.workloads, disks=p.disks, rpo_seconds=p.rpo_seconds, keep_last=p.keep_last,
        chunk_size_bytes=p.chunk_size, compression=p.compression, state=state, paused=p.paused,
        create_time=ts(p.create_time), bandwidth_bytes_per_second=p.bandwidth,
        quiesce=bool(p.quiesce),
        retention=protection_pb2.Retention(keep_last=p.keep_last, keep_hourly=p.keep_hourly,
                                           keep_daily=p.keep_daily, keep_weekly=p.keep_weekly))


RETENTION_FIELDS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly")


def retention_fields(r: protection_pb2.Retention) -> dict[str, tuple]:
    """UpdatePlan's field-mask paths for retention: the whole message or one field."""
    values = {f: getattr(r, f) for f in RETENTION_FIELDS}
    return {"retention": ("retention", values),
            **{f"retention.{f}": (f, v) for f, v in values.items()}}


def disk_progress(t: models.Task, chunk_size: int) -> protection_pb2.DiskProgress:
    watermark = int((t.checkpoint or {}).get("watermark_chunk", 0)) * chunk_size
    state = {"leased": "running"}.get(t.state, t.state)
    done = t.bytes_total if t.state == "completed" else min(watermark, t.bytes_total)
    return protection_pb2.DiskProgress(disk=t.disk, state=state, size_bytes=t.bytes_total,
                                       watermark_bytes=done, full_sync=t.full_sync,
                                       stats=stats(t.stats),
                                       message=t.error_message
                                       if t.error_reason == NO_TARGET_NODE else "")


def cycle(c: models.Cycle, tasks: list[models.Task], chunk_size: int) -> protection_pb2.Cycle:
    total: dict[str, int] = {}
    for t in tasks:
        for k, v in (t.stats or {}).items():
            total[k] = total.get(k, 0) + int(v)
    return protection_pb2.Cycle(
        name=names.cycle_name(c.plan_id, c.seq), state=c.state, create_time=ts(c.create_time),
        end_time=ts(c.end_time),
        recovery_point=names.point_name(c.plan_id, c.recovery_point_id)
        if c.recovery_point_id else "",
        stats=stats(total), disks=[disk_progress(t, chunk_size) for t in tasks],
        error=task_error(c.error_reason, c.error_message))


def point(p: models.RecoveryPoint) -> recovery_points_pb2.RecoveryPoint:
    return recovery_points_pb2.RecoveryPoint(
        name=names.point_name(p.plan_id, p.id), create_time=ts(p.create_time),
        cycle=names.cycle_name(p.plan_id, p.cycle_seq),
        disks=[recovery_points_pb2.RecoveryPointDisk(
            disk=d["disk"], size_bytes=d["size_bytes"], root_hash=d["root_hash"],
            full_sync=d.get("full_sync", False),
            full_sync_reason=d.get("full_sync_reason", ""),
            snapshot_id=d.get("snapshot_id", ""),
            consistency=d.get("consistency", ""),
            spread_seconds=d.get("spread_seconds", 0.0)) for d in p.disks],
        stats=stats(p.stats), locked=p.locked, state=p.state)


_OP_STATE = {"queued": "queued", "leased": "running", "completed": "completed",
             "failed": "failed", "cancelled": "cancelled"}


def operation(t: models.Task) -> common_pb2.Operation:
    op = common_pb2.Operation(
        name=names.operation_name(t.id), kind=t.kind, state=_OP_STATE[t.state],
        done=t.state in ("completed", "failed", "cancelled"), target=t.target,
        bytes_done=t.bytes_done, bytes_total=t.bytes_total, create_time=ts(t.create_time),
        end_time=ts(t.end_time), error=task_error(t.error_reason, t.error_message)
        if t.state in ("failed", "cancelled") else None)
    if t.state == "completed" and t.result:
        if t.kind == "restore":
            json_format.ParseDict(t.result, op.restore_result, ignore_unknown_fields=True)
        elif t.kind == "verify":
            json_format.ParseDict(t.result, op.verify_result, ignore_unknown_fields=True)
        elif t.kind == "gc":
            json_format.ParseDict(t.result, op.gc_result, ignore_unknown_fields=True)
    return op


def node(n: models.Node, online: bool) -> nodes_pb2.Node:
    return nodes_pb2.Node(name=names.node_name(n.id), hostname=n.hostname, version=n.version,
                          max_tasks=n.max_tasks, budget_bytes=n.budget_bytes,
                          state="online" if online else "offline",
                          last_heartbeat_time=ts(n.last_heartbeat_time),
                          running_tasks=n.running_tasks, inflight_bytes=n.inflight_bytes,
                          draining=bool(n.draining), backpressure=n.backpressure or 0.0,
                          leased_tasks=getattr(n, "leased_tasks", 0),
                          load=node_load(getattr(n, "leased_tasks", 0), n.max_tasks,
                                         n.backpressure or 0.0),
                          site=n.site or "", transfer_address=n.transfer_address or "",
                          pairs=[json_format.ParseDict(p, nodes_pb2.PairHealth(),
                                                       ignore_unknown_fields=True)
                                 for p in n.pairs or []])


def task(t: models.Task) -> nodes_pb2.Task:
    """The task as a node gets it: its typed spec read strictly (taskspecs.load), with
    the replicate checkpoint the last holder reported."""
    msg = nodes_pb2.Task(name=names.task_name(t.id), kind=t.kind, lease_token=t.lease_token,
                         lease_expire_time=ts(t.lease_expire_time))
    spec = getattr(msg, t.kind)
    spec.CopyFrom(taskspecs.load(t))
    if t.kind == "replicate" and t.checkpoint:
        spec.checkpoint.CopyFrom(taskspecs.checkpoint(t.checkpoint))
    return msg


# --- recovery (RecoveryService) ------------------------------------------------------------
# Imported here, with the conversions that need them, to keep this section self-contained.
from dr_common.proto.dr.v1 import recovery_pb2  # noqa: E402
from dr_control.services.recovery import (ENDED_STATES, execution_name,  # noqa: E402
                                          expire_time, recovery_plan_name)


def _ts_text(text: str) -> timestamp_pb2.Timestamp | None:
    return ts(datetime.fromisoformat(text)) if text else None


def recovery_plan(rp: models.RecoveryPlan) -> recovery_pb2.RecoveryPlan:
    return recovery_pb2.RecoveryPlan(
        name=recovery_plan_name(rp.id), protection_plan=names.plan_name(rp.plan_id),
        recovery_site=names.site_name(rp.site_id) if rp.site_id else "",
        create_time=ts(rp.create_time), failed_over_by=rp.failed_over_by or "",
        pre_scripts=[recovery_pb2.Script(**x) for x in (rp.scripts or {}).get("pre", [])],
        post_scripts=[recovery_pb2.Script(**x) for x in (rp.scripts or {}).get("post", [])],
        boot_groups=[recovery_pb2.BootGroup(
            name=g["name"], delay_seconds=g.get("delay_seconds", 0),
            workloads=[_recovery_workload(w) for w in g["workloads"]])
            for g in rp.boot_groups])


# The fields of RecoveryWorkload that are one provider's settings as a message of its
# own (vsphere: VsphereWorkload, azure: AzureWorkload), found from the proto so that a
# new provider's message needs no line here.
PROVIDER_MESSAGES = tuple(
    f.name for f in recovery_pb2.RecoveryWorkload.DESCRIPTOR.fields
    if f.message_type is not None and f.message_type.name.endswith("Workload"))


def _recovery_workload(w: dict) -> recovery_pb2.RecoveryWorkload:
    """A stored workload: its provider's settings are the fields of theirs (aws: the
    instance type and network mapping; vsphere, azure: their message)."""
    out = recovery_pb2.RecoveryWorkload(
        workload=w["workload"], instance_type=w.get("instance_type", ""), tags=w["tags"],
        checks=[json_format.ParseDict(c, recovery_pb2.ValidationCheck())
                for c in w.get("checks", [])],
        pre_scripts=[recovery_pb2.Script(**x) for x in w.get("pre_scripts", [])],
        post_scripts=[recovery_pb2.Script(**x) for x in w.get("post_scripts", [])])
    if w.get("subnet_id") or w.get("security_group_ids") or w.get("private_ip"):
        out.network_mapping.CopyFrom(recovery_pb2.NetworkMapping(
            subnet_id=w.get("subnet_id", ""), security_group_ids=w.get("security_group_ids", []),
            private_ip=w.get("private_ip", "")))
    for field in PROVIDER_MESSAGES:
        if w.get(field):
            json_format.ParseDict(w[field], getattr(out, field))
    return out


def boot_groups(groups) -> list[dict]:
    """The service layer's form of a request's boot groups (validated there, each
    workload's settings by the recovery site's provider, which refuses another
    provider's that are given)."""
    return [{"name": g.name, "delay_seconds": g.delay_seconds, "workloads": [
        {"workload": w.workload, "instance_type": w.instance_type,
         "checks": [_check(c) for c in w.checks],
         "pre_scripts": [_script(x) for x in w.pre_scripts],
         "post_scripts": [_script(x) for x in w.post_scripts],
         "subnet_id": w.network_mapping.subnet_id,
         "security_group_ids": list(w.network_mapping.security_group_ids),
         "private_ip": w.network_mapping.private_ip, "tags": dict(w.tags),
         **{f: json_format.MessageToDict(getattr(w, f), preserving_proto_field_name=True)
            for f in PROVIDER_MESSAGES}}
        for w in g.workloads]} for g in groups]


def _check(c: recovery_pb2.ValidationCheck) -> dict:
    """A request's check with what it leaves unset left out (the service's defaults)."""
    return {k: v for k, v in json_format.MessageToDict(
        c, preserving_proto_field_name=True).items()}


def _script(x: recovery_pb2.Script) -> dict:
    return json_format.MessageToDict(x, preserving_proto_field_name=True)


def plan_scripts(rp: recovery_pb2.RecoveryPlan) -> dict:
    return {"pre": [_script(x) for x in rp.pre_scripts],
            "post": [_script(x) for x in rp.post_scripts]}


def forecast(name: str, f) -> recovery_pb2.RtoForecast:
    return recovery_pb2.RtoForecast(
        recovery_plan=name, rto_seconds=f.rto_seconds, restore_seconds=f.restore_seconds,
        provider_seconds=f.provider_seconds, validation_seconds=f.validation_seconds,
        script_seconds=f.script_seconds, delay_seconds=f.delay_seconds,
        overhead_seconds=f.overhead_seconds,
        throughput_bytes_per_second=f.throughput_bytes_per_second or 0.0, basis=f.basis,
        last_measured_rto_seconds=f.last_measured_rto_seconds or 0.0,
        last_execution=f.last_execution, restore_bytes=f.restore_bytes)


def execution(e: models.Execution) -> recovery_pb2.Execution:
    return recovery_pb2.Execution(
        name=execution_name(e.recovery_plan_id, e.id), recovery_point=e.recovery_point,
        mode=e.mode, state=e.state,
        events=[recovery_pb2.ExecutionEvent(time=_ts_text(v["time"]), group=v["group"],
                                            workload=v["workload"], step=v["step"],
                                            detail=v["detail"]) for v in e.events],
        instances=[recovery_pb2.RecoveredInstance(**i) for i in e.instances],
        error=task_error(e.error_reason, e.error_message), create_time=ts(e.create_time),
        end_time=ts(e.end_time), done=e.state in ENDED_STATES and not e.cleanup_requested,
        cancel_requested=e.cancel_requested,
        expire_time=ts(expire_time(e)) if expire_time(e) else None,
        workloads=[recovery_pb2.WorkloadResult(
            workload=w["workload"], group=w["group"], state=w["state"], reason=w["reason"],
            checks=[recovery_pb2.CheckResult(**c) for c in w["checks"]])
            for w in e.workloads or []])
