"""Polling until a long-running operation or a replication cycle ends.

The API has no server-push for these (DESIGN.md section 5 models them on
google.longrunning), so drctl polls. Each poll is an ordinary call with the --timeout
deadline; the wait as a whole has no limit, and Ctrl-C stops only the waiting, never
the work on the server, which is said so the operator knows how to find it again.
"""

from __future__ import annotations

import time

from dr_common.proto.dr.v1 import common_pb2, operations_pb2, protection_pb2

from .context import Context
from .errors import EXIT_INTERRUPTED, CliError
from .names import parent_of, short_name
from .progress import ProgressBar

# Long enough not to load dr-control with a poll per waiting operator, short enough
# that a finished restore is reported without a noticeable delay.
POLL_INTERVAL = 1.0

CYCLE_TERMINAL_STATES = frozenset({"completed", "partially-completed", "failed"})


def wait_operation(ctx: Context, operation: common_pb2.Operation) -> common_pb2.Operation:
    """Poll GetOperation until `done`; draws progress from bytes_done/bytes_total."""
    bar = ProgressBar(ctx.out.stderr) if ctx.progress else None
    try:
        while True:
            if bar is not None:
                bar.update(operation.bytes_done, operation.bytes_total)
            if operation.done:
                return operation
            time.sleep(POLL_INTERVAL)
            operation = ctx.client.call(
                ctx.client.operations.GetOperation,
                operations_pb2.GetOperationRequest(name=operation.name),
            )
    except KeyboardInterrupt:
        op_id = short_name(operation.name)
        raise CliError(
            f"interrupted; {operation.name} keeps running on dr-control: "
            f"`drctl operation get {op_id}` to follow it, "
            f"`drctl operation cancel {op_id}` to stop it",
            exit_code=EXIT_INTERRUPTED,
        ) from None
    finally:
        if bar is not None:
            bar.close()


def wait_cycle(ctx: Context, cycle: protection_pb2.Cycle) -> protection_pb2.Cycle:
    """Poll until the cycle reaches a terminal state; progress is the disks' watermarks."""
    bar = ProgressBar(ctx.out.stderr) if ctx.progress else None
    try:
        while True:
            if bar is not None:
                bar.update(
                    sum(d.watermark_bytes for d in cycle.disks),
                    sum(d.size_bytes for d in cycle.disks),
                )
            if cycle.state in CYCLE_TERMINAL_STATES:
                return cycle
            time.sleep(POLL_INTERVAL)
            cycle = fetch_cycle(ctx, cycle.name)
    except KeyboardInterrupt:
        plan_id = short_name(parent_of(cycle.name))
        raise CliError(
            f"interrupted; {cycle.name} keeps running on dr-control: "
            f"`drctl plan status {plan_id}` to follow it",
            exit_code=EXIT_INTERRUPTED,
        ) from None
    finally:
        if bar is not None:
            bar.close()


def fetch_cycle(ctx: Context, name: str) -> protection_pb2.Cycle:
    """The current state of one cycle.

    There is no GetCycle call: a running cycle is the plan's current_cycle (one cheap
    call, with per-disk progress); once it ended, it is found in ListCycles.
    """
    plan = parent_of(name)
    status = ctx.client.call(
        ctx.client.protection.GetPlanStatus, protection_pb2.GetPlanStatusRequest(name=plan)
    )
    if status.current_cycle.name == name:
        return status.current_cycle
    for cycle in ctx.client.list_all(
        ctx.client.protection.ListCycles, protection_pb2.ListCyclesRequest(parent=plan), "cycles"
    ):
        if cycle.name == name:
            return cycle
    raise CliError(f"{name} is neither {plan}'s current cycle nor in its cycle list")
