"""Task `drop_snapshots`: when a cycle ends, completed or failed, a source kind that drops
its snapshots (vsphere) removes what the cycle's snapshot task took."""

from __future__ import annotations

from dr_common import sources
from dr_node.tasks.base import TaskContext


async def run(ctx: TaskContext) -> None:
    await sources.drop_snapshots(ctx.spec, ctx.source_env)
