"""Task `restore`: rebuilds one disk of a recovery point (an image file, a volume),
every chunk verified, reporting progress as it goes."""

from __future__ import annotations

import time

from dr_common import targets
from dr_node.tasks.base import TaskContext

# Progress is reported at most this often (and at the end): a report is a database write.
REPORT_SECONDS = 0.5


async def run(ctx: TaskContext) -> None:
    last = 0.0

    async def progress(done: int, total: int) -> None:
        nonlocal last
        if time.monotonic() - last >= REPORT_SECONDS or done == total:
            last = time.monotonic()
            await ctx.progress(done, total)

    async with targets.opened(ctx.spec.target, ctx.target_env) as target:
        ctx.result.restore_result.CopyFrom(await target.restore(ctx.spec, progress))
