"""Task handlers: one module per task kind, found in one table.

A handler is `async def run(ctx: TaskContext) -> None`: it does the task described by
`ctx.spec`, reports progress through `ctx.reporter` and fills in `ctx.result` (the
CompleteTaskRequest the agent sends). Handlers reach sources and targets only through
their registries (`dr_common.sources.open_source`, `dr_common.targets.opened`), so they
hold no per-platform branch; leases, heartbeats and completion are the agent's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from dr_common.errors import InvalidArgument
from dr_common.proto.dr.v1 import nodes_pb2
from dr_node.tasks import (delete, finalize, gc, drop_snapshots, replicate, restore, snapshot,
                           verify)
from dr_node.tasks.base import TaskContext

Handler = Callable[[TaskContext], Awaitable[None]]

HANDLERS: dict[str, Handler] = {
    "replicate": replicate.run,
    "snapshot": snapshot.run,
    "finalize": finalize.run,
    "drop_snapshots": drop_snapshots.run,
    "delete": delete.run,
    "gc": gc.run,
    "restore": restore.run,
    "verify": verify.run,
}


def handler(task: nodes_pb2.Task) -> Handler:
    kind = task.kind
    if task.WhichOneof("spec") != kind:
        raise InvalidArgument(f"task {task.name} of kind {kind!r} carries a "
                              f"{task.WhichOneof('spec') or 'missing'} spec", field="task.spec")
    found = HANDLERS.get(kind)
    if found is None:
        raise InvalidArgument(f"this node does not know task kind {kind!r} (it knows "
                              f"{', '.join(HANDLERS)}): upgrade it", field="task.kind")
    return found
