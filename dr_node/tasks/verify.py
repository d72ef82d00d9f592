"""Task `verify`: reads a recovery point's disks back and checks every chunk."""

from __future__ import annotations

import structlog

from dr_common import targets
from dr_node.tasks.base import TaskContext

log = structlog.get_logger()


async def run(ctx: TaskContext) -> None:
    async with targets.opened(ctx.spec.target, ctx.target_env) as target:
        result = await target.verify(ctx.spec, ctx.progress)
    ctx.result.verify_result.CopyFrom(result)
    if not result.ok:
        bad = result.bad_chunks
        log.warning("recovery point failed verification", point=ctx.spec.recovery_point,
                    bad_chunks=len(bad), first_disk=bad[0].disk, first_offset=bad[0].offset)
