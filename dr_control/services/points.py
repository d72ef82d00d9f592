"""Recovery points, and the operations users run on them (restore, verify, gc), locks
and deletion (dr_control/services/deletion.py does the deleting).

Both operations are tasks run by a node, because target storage may be reachable only
from inside the recovery site. An operation's name is "operations/{task id}".
"""

from __future__ import annotations

import os

from sqlalchemy import select

from dr_common import names, targets
from dr_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from dr_common.paths import check_within_roots
from dr_common.proto.dr.v1 import nodes_pb2
from dr_control.db.models import Plan, RecoveryPoint, Task, utcnow
from dr_control.services import deletion, taskspecs
from dr_control.services.context import ServiceContext
from dr_control.services.routing import target_task

OPERATION_KINDS = ("restore", "verify", "gc")


class PointService:
    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx

    async def list_points(self, parent: str) -> list[RecoveryPoint]:
        plan_id = names.parse_plan(parent, field="parent")
        async with self.ctx.db() as s:
            if await s.get(Plan, plan_id) is None:
                raise NotFound(f"plan {parent} not found")
            return list((await s.scalars(select(RecoveryPoint).where(
                RecoveryPoint.plan_id == plan_id).order_by(RecoveryPoint.create_time))).all())

    async def get_point(self, name: str, *, field: str = "name") -> RecoveryPoint:
        plan_id, point_id = names.parse_point(name, field=field)
        async with self.ctx.db() as s:
            point = await s.get(RecoveryPoint, (plan_id, point_id))
        if point is None:
            raise NotFound(f"recovery point {name} not found")
        return point

    async def set_locked(self, name: str, locked: bool) -> RecoveryPoint:
        plan_id, point_id = names.parse_point(name)
        async with self.ctx.db() as s, s.begin():
            point = await s.get(RecoveryPoint, (plan_id, point_id))
            if point is None:
                raise NotFound(f"recovery point {name} not found")
            if locked and point.state == deletion.DELETING:
                raise FailedPrecondition(f"recovery point {name} is being deleted",
                                         reason="deleting")
            point.locked = locked
        return point

    async def delete_point(self, name: str) -> None:
        """Starts deleting a point (see deletion.py); deleting one that is already
        being deleted is not an error (a retried request)."""
        plan_id, point_id = names.parse_point(name)
        async with self.ctx.db() as s, s.begin():
            point = await s.get(RecoveryPoint, (plan_id, point_id))
            if point is None:
                raise NotFound(f"recovery point {name} not found")
            if point.state == deletion.DELETING:
                return
            await deletion.check_deletable(s, point, name)
            await deletion.queue_delete(self.ctx, s, await s.get(Plan, plan_id), point)

    async def collect_garbage(self, parent: str, grace_seconds: int | None) -> Task:
        plan_id = names.parse_plan(parent, field="parent")
        async with self.ctx.db() as s, s.begin():
            plan = await s.get(Plan, plan_id)
            if plan is None:
                raise NotFound(f"plan {parent} not found")
            return await deletion.queue_gc(self.ctx, s, plan, grace_seconds)

    @staticmethod
    async def _task(s, plan_id: str, kind: str, *, spec, **fields) -> Task:
        """Adds a task on the plan's repository (bound to the site that reaches it)."""
        task = await target_task(s, await s.get(Plan, plan_id), kind, spec=spec, **fields)
        s.add(task)
        return task

    async def _target_kind(self, plan_id: str) -> targets.TargetKind:
        async with self.ctx.db() as s:
            return targets.kind((await s.get(Plan, plan_id)).target_kind)

    async def verify(self, name: str) -> Task:
        point = await self.get_point(name)
        kind = await self._target_kind(point.plan_id)
        if not kind.repository:
            raise FailedPrecondition(f"recovery point {name} is at a {kind.name} target: "
                                     f"{kind.no_verify}")
        async with self.ctx.db() as s, s.begin():
            task = await self._task(s, point.plan_id, "verify", target=name,
                                    bytes_total=sum(d["size_bytes"] for d in point.disks),
                                    spec=nodes_pb2.VerifySpec(
                                        recovery_point=name,
                                        disks=[taskspecs.finalize_disk(d)
                                               for d in point.disks]))
        self.ctx.tasks_queued.notify()
        return task

    async def restore(self, point_name: str, *, disk: str, destination: str, fmt: str,
                      overwrite: bool, availability_zone: str = "") -> Task:
        point = await self.get_point(point_name, field="recovery_point")
        if not disk:
            if len(point.disks) != 1:
                raise InvalidArgument(
                    f"recovery point {point_name} holds {len(point.disks)} disks; name one",
                    field="disk")
            disk = point.disks[0]["disk"]
        entry = next((d for d in point.disks if d["disk"] == disk), None)
        if entry is None:
            raise NotFound(f"disk {disk} is not in recovery point {point_name}")
        kind = await self._target_kind(point.plan_id)
        fmt = fmt or kind.restore_formats[0]
        if fmt not in kind.restore_formats:
            raise InvalidArgument(f"recovery points of a {kind.name} target restore as "
                                  f"{' or '.join(map(repr, kind.restore_formats))}, "
                                  f"not {fmt!r}", field="format")
        if not kind.repository:
            # Repository points restore as image files; the others as the target's own
            # objects (EBS: a new volume).
            return await self._restore_volume(point, entry, fmt, availability_zone)
        if not destination:
            raise InvalidArgument("destination_path is required", field="destination_path")
        dest = check_within_roots(destination, self.ctx.config.file_roots,
                                  field="destination_path")
        if dest.exists() and not overwrite:
            raise AlreadyExists(f"{dest} exists; pass overwrite to replace it")
        if not dest.parent.is_dir():
            raise InvalidArgument(f"directory {dest.parent} does not exist",
                                  field="destination_path")
        async with self.ctx.db() as s, s.begin():
            task = await self._task(s, point.plan_id, "restore", target=point_name, disk=disk,
                                    bytes_total=entry["size_bytes"],
                                    spec=nodes_pb2.RestoreSpec(
                                        recovery_point=point_name, disk=disk,
                                        root_hash=entry["root_hash"],
                                        destination_path=os.fspath(dest), format=fmt,
                                        overwrite=overwrite))
        self.ctx.tasks_queued.notify()
        return task

    async def _restore_volume(self, point: RecoveryPoint, entry: dict, fmt: str,
                              availability_zone: str) -> Task:
        kind = await self._target_kind(point.plan_id)
        if kind.restore_zone and not availability_zone:
            raise InvalidArgument(f"an {kind.name} recovery point restores as a new volume: "
                                  f"give its availability_zone ({kind.restore_zone})",
                                  field="availability_zone")
        name = names.point_name(point.plan_id, point.id)
        async with self.ctx.db() as s, s.begin():
            task = await self._task(s, point.plan_id, "restore", target=name,
                                    disk=entry["disk"], bytes_total=entry["size_bytes"],
                                    spec=nodes_pb2.RestoreSpec(
                                        recovery_point=name, disk=entry["disk"],
                                        format=fmt, snapshot_id=entry["snapshot_id"],
                                        availability_zone=availability_zone))
        self.ctx.tasks_queued.notify()
        return task

    async def get_operation(self, name: str) -> Task:
        task_id = names.parse_operation(name)
        async with self.ctx.db() as s:
            task = await s.get(Task, int(task_id)) if task_id.isdigit() else None
        if task is None or task.kind not in OPERATION_KINDS:
            raise NotFound(f"operation {name} not found")
        return task

    async def list_operations(self) -> list[Task]:
        async with self.ctx.db() as s:
            return list((await s.scalars(select(Task).where(
                Task.kind.in_(OPERATION_KINDS)).order_by(Task.id))).all())

    async def cancel_operation(self, name: str) -> None:
        task = await self.get_operation(name)
        async with self.ctx.db() as s, s.begin():
            request_cancel(await s.get(Task, task.id), "cancelled by a user")


def request_cancel(task: Task | None, why: str) -> None:
    """Cancels a node task (caller holds a transaction): a queued one at once; a leased
    one is told to stop at its next progress report (ProgressReply.cancel)."""
    if task is None:
        return
    if task.state == "queued":
        task.state, task.end_time = "cancelled", utcnow()
        task.error_reason, task.error_message = "cancelled", why
    elif task.state == "leased":
        task.cancel_requested = True
