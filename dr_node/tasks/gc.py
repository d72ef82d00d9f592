"""Task `gc`: mark-and-sweep garbage collection of a repository target."""

from __future__ import annotations

from dr_common import targets
from dr_node.tasks.base import TaskContext


async def run(ctx: TaskContext) -> None:
    async with targets.opened(ctx.spec.target, ctx.target_env) as target:
        ctx.result.gc_result.CopyFrom(await target.gc(ctx.spec))
