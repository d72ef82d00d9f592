"""gRPC servicers: decode a request, call the service layer, encode the answer.

No validation or state lives here (the service layer owns both), so the REST face can
reuse the same services.
"""

from __future__ import annotations

from google.protobuf import empty_pb2, json_format

from dr_common import names
from dr_common.errors import InvalidArgument
from dr_common.proto.dr.v1 import (inventory_pb2, inventory_pb2_grpc, nodes_pb2,
                                   nodes_pb2_grpc, operations_pb2, operations_pb2_grpc,
                                   protection_pb2, protection_pb2_grpc, recovery_points_pb2,
                                   recovery_points_pb2_grpc, restore_pb2_grpc)
from dr_control.api import convert
from dr_control.api.errors import rpc
from dr_control.db.models import utcnow
from dr_control.services import leasing, nodes
from dr_control.services.context import ServiceContext
from dr_control.services.inventory import InventoryService
from dr_control.services.leasing import Leases
from dr_control.services.points import PointService
from dr_control.services.protection import ProtectionService

# Longest a node's AcquireTask waits for work before answering "nothing".
MAX_WAIT_SECONDS = 30


# The fields of Site that hold one kind's own settings (aws, vsphere): each site kind
# reads its own.
SITE_SETTINGS_FIELDS = tuple(f.name for f in inventory_pb2.Site.DESCRIPTOR.fields
                             if f.message_type is not None
                             and f.message_type.name.endswith("Settings"))


def _dict(msg) -> dict:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def _cert_name(context) -> str:
    """The common name on the caller's client certificate, which auth.py authenticated
    ("" when TLS is off)."""
    cns = context.auth_context().get("x509_common_name") or []
    return cns[0].decode() if cns else ""


class Inventory(inventory_pb2_grpc.InventoryServiceServicer):
    def __init__(self, svc: InventoryService):
        self.svc = svc

    @rpc
    async def CreateSite(self, request, context):
        s = request.site
        site = await self.svc.create_site(request.site_id, kind=s.kind, path=s.path,
                                          description=s.description,
                                          credential_ref=s.credential_ref,
                                          settings={k: _dict(getattr(s, k))
                                                    for k in SITE_SETTINGS_FIELDS
                                                    if s.HasField(k)},
                                          paired=s.paired)
        return convert.site(site)

    @rpc
    async def GetSite(self, request, context):
        return convert.site(await self.svc.get_site(request.name))

    @rpc
    async def ListSites(self, request, context):
        page, nxt = convert.paginate(await self.svc.list_sites(), request.page_size,
                                     request.page_token)
        return inventory_pb2.ListSitesResponse(sites=[convert.site(s) for s in page],
                                               next_page_token=nxt)

    @rpc
    async def RefreshSite(self, request, context):
        return convert.site(await self.svc.refresh_site(request.name))

    @rpc
    async def ListWorkloads(self, request, context):
        page, nxt = convert.paginate(await self.svc.list_workloads(request.parent),
                                     request.page_size, request.page_token)
        return inventory_pb2.ListWorkloadsResponse(
            workloads=[convert.workload(w) for w in page], next_page_token=nxt)

    @rpc
    async def GetWorkload(self, request, context):
        return convert.workload(await self.svc.get_workload(request.name))


class Protection(protection_pb2_grpc.ProtectionServiceServicer):
    def __init__(self, svc: ProtectionService):
        self.svc = svc

    async def _plan(self, plan) -> protection_pb2.Plan:
        return convert.plan(plan, await self.svc.plan_state(plan))

    @rpc
    async def CreatePlan(self, request, context):
        p = request.plan
        plan = await self.svc.create_plan(
            request.plan_id, source_site=p.source_site, target_site=p.target_site,
            target_kind=p.target_kind, workloads=list(p.workloads), disks=list(p.disks),
            rpo_seconds=p.rpo_seconds, keep_last=p.retention.keep_last or p.keep_last,
            chunk_size=p.chunk_size_bytes, compression=p.compression,
            bandwidth=p.bandwidth_bytes_per_second, keep_hourly=p.retention.keep_hourly,
            keep_daily=p.retention.keep_daily, keep_weekly=p.retention.keep_weekly,
            quiesce=p.quiesce)
        return await self._plan(plan)

    @rpc
    async def UpdatePlan(self, request, context):
        p = request.plan
        fields = {"rpo_seconds": ("rpo_seconds", p.rpo_seconds),
                  "keep_last": ("keep_last", p.keep_last),
                  **convert.retention_fields(p.retention),
                  "bandwidth_bytes_per_second": ("bandwidth", p.bandwidth_bytes_per_second)}
        changes = {}
        for path in request.update_mask.paths:
            if path not in fields:
                raise InvalidArgument(f"field {path!r} cannot be updated; updatable: "
                                      f"{', '.join(fields)}", field="update_mask")
            key, value = fields[path]
            if isinstance(value, dict):  # a whole message: every one of its fields
                changes.update(value)
            else:
                changes[key] = value
        return await self._plan(await self.svc.update_plan(p.name, changes))

    @rpc
    async def GetPlan(self, request, context):
        return await self._plan(await self.svc.get_plan(request.name))

    @rpc
    async def ListPlans(self, request, context):
        page, nxt = convert.paginate(await self.svc.list_plans(), request.page_size,
                                     request.page_token)
        states = await self.svc.plan_states(page)  # one batch for the page
        return protection_pb2.ListPlansResponse(
            plans=[convert.plan(p, states[p.id]) for p in page], next_page_token=nxt)

    @rpc
    async def DeletePlan(self, request, context):
        await self.svc.delete_plan(request.name)
        return empty_pb2.Empty()

    @rpc
    async def PausePlan(self, request, context):
        return await self._plan(await self.svc.set_paused(request.name, True))

    @rpc
    async def ResumePlan(self, request, context):
        return await self._plan(await self.svc.set_paused(request.name, False))

    @rpc
    async def RunPlan(self, request, context):
        plan = await self.svc.get_plan(request.name)
        cycle = await self.svc.run_plan(request.name)
        return convert.cycle(cycle, [], plan.chunk_size)

    @rpc
    async def GetPlanStatus(self, request, context):
        st = await self.svc.status(request.name)
        last = st.last_point
        return protection_pb2.PlanStatus(
            plan=convert.plan(st.plan, st.state),
            last_recovery_point=names.point_name(st.plan.id, last.id) if last else "",
            last_recovery_point_time=convert.ts(last.create_time) if last else None,
            rpo_lag_seconds=st.rpo_lag_seconds, rpo_met=st.rpo_met,
            disks=[protection_pb2.DiskStatus(disk=d, state=s) for d, s in st.disks],
            in_sync_count=sum(1 for _, s in st.disks if s == "in-sync"),
            current_cycle=convert.cycle(st.current_cycle, st.current_tasks, st.plan.chunk_size)
            if st.current_cycle else None)

    @rpc
    async def GetRpoReport(self, request, context):
        now = utcnow()
        report = protection_pb2.RpoReport(report_time=convert.ts(now))
        for st in await self.svc.rpo_report():
            last = st.last_point
            report.plans.append(protection_pb2.PlanRpo(
                plan=names.plan_name(st.plan.id), rpo_seconds=st.plan.rpo_seconds,
                last_recovery_point=names.point_name(st.plan.id, last.id) if last else "",
                last_recovery_point_time=convert.ts(last.create_time) if last else None,
                # The same clock reading as the lag: with a point, both are its age.
                recovery_point_age_seconds=max(0.0, st.rpo_lag_seconds) if last else 0.0,
                rpo_lag_seconds=st.rpo_lag_seconds, rpo_met=st.rpo_met,
                in_sync_count=sum(1 for _, s in st.disks if s == "in-sync"),
                disk_count=len(st.disks), state=st.state, paused=st.plan.paused))
        report.met_count = sum(1 for p in report.plans if p.rpo_met)
        report.breached_count = len(report.plans) - report.met_count
        return report

    @rpc
    async def ListCycles(self, request, context):
        plan = await self.svc.get_plan(request.parent)
        page, nxt = convert.paginate(await self.svc.list_cycles(request.parent),
                                     request.page_size, request.page_token)
        return protection_pb2.ListCyclesResponse(
            cycles=[convert.cycle(c, tasks, plan.chunk_size) for c, tasks in page],
            next_page_token=nxt)


class RecoveryPoints(recovery_points_pb2_grpc.RecoveryPointServiceServicer):
    def __init__(self, svc: PointService):
        self.svc = svc

    @rpc
    async def ListRecoveryPoints(self, request, context):
        page, nxt = convert.paginate(await self.svc.list_points(request.parent),
                                     request.page_size, request.page_token)
        return recovery_points_pb2.ListRecoveryPointsResponse(
            recovery_points=[convert.point(p) for p in page], next_page_token=nxt)

    @rpc
    async def GetRecoveryPoint(self, request, context):
        return convert.point(await self.svc.get_point(request.name))

    @rpc
    async def VerifyRecoveryPoint(self, request, context):
        return convert.operation(await self.svc.verify(request.name))

    @rpc
    async def LockRecoveryPoint(self, request, context):
        return convert.point(await self.svc.set_locked(request.name, True))

    @rpc
    async def UnlockRecoveryPoint(self, request, context):
        return convert.point(await self.svc.set_locked(request.name, False))

    @rpc
    async def DeleteRecoveryPoint(self, request, context):
        await self.svc.delete_point(request.name)
        return empty_pb2.Empty()

    @rpc
    async def CollectGarbage(self, request, context):
        grace = request.grace_seconds if request.HasField("grace_seconds") else None
        return convert.operation(await self.svc.collect_garbage(request.parent, grace))


class Restore(restore_pb2_grpc.RestoreServiceServicer):
    def __init__(self, svc: PointService):
        self.svc = svc

    @rpc
    async def RestoreDisk(self, request, context):
        task = await self.svc.restore(request.recovery_point, disk=request.disk,
                                      destination=request.destination_path, fmt=request.format,
                                      overwrite=request.overwrite,
                                      availability_zone=request.availability_zone)
        return convert.operation(task)


class Operations(operations_pb2_grpc.OperationsServiceServicer):
    def __init__(self, svc: PointService):
        self.svc = svc

    @rpc
    async def GetOperation(self, request, context):
        return convert.operation(await self.svc.get_operation(request.name))

    @rpc
    async def ListOperations(self, request, context):
        page, nxt = convert.paginate(await self.svc.list_operations(), request.page_size,
                                     request.page_token)
        return operations_pb2.ListOperationsResponse(
            operations=[convert.operation(t) for t in page], next_page_token=nxt)

    @rpc
    async def CancelOperation(self, request, context):
        await self.svc.cancel_operation(request.name)
        return empty_pb2.Empty()


class Nodes(nodes_pb2_grpc.NodeServiceServicer):
    def __init__(self, ctx: ServiceContext, leases: Leases):
        self.ctx = ctx
        self.leases = leases

    @rpc
    async def RegisterNode(self, request, context):
        node = await nodes.register_node(
            self.ctx, request.node_id or request.hostname, hostname=request.hostname,
            version=request.version, max_tasks=request.max_tasks,
            budget_bytes=request.budget_bytes, site=request.site,
            transfer_address=request.transfer_address, cert_name=_cert_name(context))
        return convert.node(node, True)

    @rpc
    async def Heartbeat(self, request, context):
        await nodes.heartbeat(self.ctx, request.node, running_tasks=request.running_tasks,
                              inflight_bytes=request.inflight_bytes,
                              backpressure=request.backpressure,
                              pairs=[_dict(p) for p in request.pairs],
                              tasks=list(request.tasks))
        return nodes_pb2.HeartbeatResponse(
            lease_seconds=self.ctx.config.scheduler.lease_seconds)

    async def _task_message(self, task) -> nodes_pb2.Task | None:
        """The leased task as the node gets it, with its sites' settings. A task whose
        stored spec cannot be read (a field the spec does not have) is failed at once,
        saying which field, instead of being sent with that field dropped."""
        try:
            msg = convert.task(task)
        except InvalidArgument as e:
            await self.leases.complete_task(
                names.task_name(task.id), task.lease_token, stats={}, result={},
                full_sync=False, error={"reason": "invalid-task-spec", "message": e.message,
                                        "retryable": False})
            return None
        spec = getattr(msg, msg.kind)
        for role, settings in (await leasing.site_settings(self.ctx, task)).items():
            getattr(spec, role).site.CopyFrom(settings)
        return msg

    @rpc
    async def AcquireTask(self, request, context):
        wait = min(request.wait_seconds, MAX_WAIT_SECONDS)
        signal = self.ctx.tasks_queued
        while True:
            task = await self.leases.acquire_task(request.node)
            if task is not None:
                msg = await self._task_message(task)
                if msg is not None:
                    return nodes_pb2.AcquireTaskResponse(task=msg)
                continue
            if wait <= 0:
                return nodes_pb2.AcquireTaskResponse()
            # Wait for a wake-up, but look again at least every second: another replica
            # (or the lease expiry pass) may have queued work without waking us.
            step = min(wait, 1.0)
            await signal.wait(step)
            wait -= step

    @rpc
    async def ReportProgress(self, request, context):
        progress = await self.leases.report_progress(
            request.task, request.lease_token,
            checkpoint=_dict(request.checkpoint) if request.HasField("checkpoint") else {},
            bytes_done=request.bytes_done, stats=_dict(request.stats),
            full_sync=request.full_sync)
        return nodes_pb2.ReportProgressResponse(
            cancel=progress.cancel, bandwidth_bytes_per_second=progress.bandwidth,
            release=progress.release)

    @rpc
    async def CompleteTask(self, request, context):
        result: dict = {}
        which = request.WhichOneof("result")
        if which:
            result = _dict(getattr(request, which))
        if request.root_hash or request.snapshot_id:
            result.update(root_hash=request.root_hash, size_bytes=request.size_bytes,
                          bitmap=request.bitmap, full_sync_reason=request.full_sync_reason,
                          snapshot_id=request.snapshot_id)
        if request.source_snapshots:
            result["source_snapshots"] = {d.disk: d.snapshot_id
                                          for d in request.source_snapshots}
            result["consistency"] = {d.disk: d.consistency for d in request.source_snapshots}
            result["spread_seconds"] = {d.disk: d.spread_seconds
                                        for d in request.source_snapshots}
        error = _dict(request.error) if request.HasField("error") else None
        await self.leases.complete_task(request.task, request.lease_token, error=error,
                                        stats=_dict(request.stats), result=result,
                                        full_sync=request.full_sync)
        return nodes_pb2.CompleteTaskResponse()

    @rpc
    async def ListNodes(self, request, context):
        page, nxt = convert.paginate(await nodes.list_nodes(self.ctx), request.page_size,
                                     request.page_token)
        return nodes_pb2.ListNodesResponse(
            nodes=[convert.node(n, nodes.node_online(self.ctx, n)) for n in page],
            next_page_token=nxt)

    @rpc
    async def DrainNode(self, request, context):
        node = await nodes.set_draining(self.ctx, request.name, True)
        return convert.node(node, nodes.node_online(self.ctx, node))

    @rpc
    async def UndrainNode(self, request, context):
        node = await nodes.set_draining(self.ctx, request.name, False)
        return convert.node(node, nodes.node_online(self.ctx, node))



# --- recovery ---------------------------------------------------------------------------
from dr_common.proto.dr.v1 import recovery_pb2, recovery_pb2_grpc  # noqa: E402
from dr_control.services.recovery import RecoveryService  # noqa: E402


class Recovery(recovery_pb2_grpc.RecoveryServiceServicer):
    def __init__(self, svc: RecoveryService):
        self.svc = svc

    @rpc
    async def CreateRecoveryPlan(self, request, context):
        rp = request.recovery_plan
        created = await self.svc.create_recovery_plan(
            request.recovery_plan_id, protection_plan=rp.protection_plan,
            boot_groups=convert.boot_groups(rp.boot_groups), recovery_site=rp.recovery_site,
            scripts=convert.plan_scripts(rp))
        return convert.recovery_plan(created)

    @rpc
    async def GetRecoveryPlan(self, request, context):
        return convert.recovery_plan(await self.svc.get_recovery_plan(request.name))

    @rpc
    async def ListRecoveryPlans(self, request, context):
        page, nxt = convert.paginate(await self.svc.list_recovery_plans(), request.page_size,
                                     request.page_token)
        return recovery_pb2.ListRecoveryPlansResponse(
            recovery_plans=[convert.recovery_plan(rp) for rp in page], next_page_token=nxt)

    @rpc
    async def DeleteRecoveryPlan(self, request, context):
        await self.svc.delete_recovery_plan(request.name)
        return empty_pb2.Empty()

    @rpc
    async def StartRecovery(self, request, context):
        return convert.execution(await self.svc.start_recovery(
            request.name, recovery_point=request.recovery_point, mode=request.mode,
            ttl_seconds=request.ttl_seconds))

    @rpc
    async def GetExecution(self, request, context):
        return convert.execution(await self.svc.get_execution(request.name))

    @rpc
    async def ListExecutions(self, request, context):
        page, nxt = convert.paginate(await self.svc.list_executions(request.parent),
                                     request.page_size, request.page_token)
        return recovery_pb2.ListExecutionsResponse(
            executions=[convert.execution(e) for e in page], next_page_token=nxt)

    @rpc
    async def CleanupExecution(self, request, context):
        return convert.execution(await self.svc.cleanup_execution(request.name))

    @rpc
    async def CancelExecution(self, request, context):
        return convert.execution(await self.svc.cancel_execution(request.name))

    @rpc
    async def RefreshExecution(self, request, context):
        return convert.execution(await self.svc.refresh_execution(request.name))

    @rpc
    async def ForecastRecoveryPlan(self, request, context):
        return convert.forecast(request.name, await self.svc.forecast(request.name))
