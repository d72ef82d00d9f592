"""Task `snapshot`: the cycle's consistency group at a source that snapshots (aws), taken
before its disks are replicated (they are then read from these snapshots)."""

from __future__ import annotations

from dr_common import sources
from dr_node.tasks.base import TaskContext


async def run(ctx: TaskContext) -> None:
    ctx.result.source_snapshots.extend(await sources.take_snapshots(ctx.spec, ctx.source_env))
