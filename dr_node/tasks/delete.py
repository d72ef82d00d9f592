"""Task `delete`: removes one recovery point at its target. Idempotent: a retry after a
lost completion finds nothing left to remove."""

from __future__ import annotations

import structlog

from dr_common import targets
from dr_node.tasks.base import TaskContext

log = structlog.get_logger()


async def run(ctx: TaskContext) -> None:
    async with targets.opened(ctx.spec.target, ctx.target_env) as target:
        removed = await target.delete(ctx.spec)
    log.info("recovery point deleted", point=ctx.spec.recovery_point, removed=removed)
