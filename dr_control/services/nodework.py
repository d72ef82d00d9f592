"""Waiting, in a recovery execution, for a node task it queued (a restore), and asking it
to stop when the execution is cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from dr_control.db.models import Task
from dr_control.services.context import ServiceContext
from dr_control.services.points import request_cancel

FINISHED = ("completed", "failed", "cancelled")
# Fast at first (a small disk is written in a second), then at most once a second
# (each poll is a database read).
POLL_FIRST = 0.05
POLL_CAP = 1.0


class Cancelled(Exception):
    """CancelExecution was asked for: raised at the execution's next step boundary, or
    while it waits for a task (which is then asked to stop too)."""


async def wait_task(ctx: ServiceContext, task_id: int,
                    cancelled: Callable[[], Awaitable[bool]]) -> Task:
    """The task once it has finished (completed, failed or cancelled). If `cancelled()`
    turns true first, the task is cancelled (a queued one at once, a leased one at its
    node's next report) and Cancelled raised."""
    ctx.tasks_queued.notify()
    delay = POLL_FIRST
    while True:
        async with ctx.db() as s:
            task = await s.get(Task, task_id)
        if task.state in FINISHED:
            return task
        if await cancelled():
            async with ctx.db() as s, s.begin():
                request_cancel(await s.get(Task, task_id),
                               "its recovery execution was cancelled")
            raise Cancelled()
        await asyncio.sleep(delay)
        delay = min(POLL_CAP, delay * 2)
