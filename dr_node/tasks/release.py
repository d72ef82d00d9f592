"""Task `release`: when a cycle ends, completed or failed, a source that releases (vsphere)
lets go of what the cycle's snapshot task took."""

from __future__ import annotations

from dr_common import sources
from dr_node.tasks.base import TaskContext


async def run(ctx: TaskContext) -> None:
    await sources.release(ctx.spec, ctx.source_env)
