"""Task `finalize`: the last write of a cycle — the recovery point at its target."""

from __future__ import annotations

import structlog

from dr_common import targets
from dr_node.tasks.base import TaskContext

log = structlog.get_logger()


async def run(ctx: TaskContext) -> None:
    async with targets.opened(ctx.spec.target, ctx.target_env) as target:
        written = await target.finalize(ctx.spec)
    log.info("recovery point written", point=ctx.spec.recovery_point_id, new=written)
