"""Task `snapshot`: the cycle's consistency group at a source that snapshots (aws), taken
before its disks are replicated (they are then read from these snapshots).

The final cycle of a migration (`spec.stop_workloads`) first stops the group's workloads
and leaves them stopped, so its point holds every write they made. What was stopped is
logged with the task (CompleteTaskRequest has no place for notes)."""

from __future__ import annotations

import structlog

from dr_common import sources
from dr_node.tasks.base import TaskContext

log = structlog.get_logger()


async def run(ctx: TaskContext) -> None:
    if ctx.spec.stop_workloads:
        # Before the snapshots, never after: a write between the point and the stop
        # would be lost by the migration. Stopping again on a retry is harmless.
        stopped = await sources.stop_workloads(ctx.spec, ctx.source_env)
        log.info("workloads stopped before the snapshot", stopped=stopped)
    ctx.result.source_snapshots.extend(await sources.take_snapshots(ctx.spec, ctx.source_env))
