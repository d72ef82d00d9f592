"""`drctl operation ...`: long-running operations (restore, verify), and how they are shown."""

from __future__ import annotations

import argparse

from google.protobuf import empty_pb2

from dr_common.proto.dr.v1 import common_pb2, operations_pb2

from .. import argtypes, names
from ..context import Context
from ..errors import EXIT_FAILURE, EXIT_OK, task_error_text
from ..table import format_fields, format_table
from ..units import format_size, format_time


def register(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    op = sub.add_parser("operation", help="long-running operations: restores, verifications")
    op_sub = op.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = op_sub.add_parser("list", parents=parents, help="list operations")
    p.set_defaults(handler=operation_list)
    for action, handler, text in (
        ("get", operation_get, "show an operation"),
        ("cancel", operation_cancel, "ask dr-control to cancel an operation"),
    ):
        p = op_sub.add_parser(action, parents=parents, help=text)
        p.add_argument("operation", metavar="ID", type=argtypes.name(names.OPERATION))
        p.set_defaults(handler=handler)


def operation_list(ctx: Context, args: argparse.Namespace) -> int:
    ops = ctx.client.list_all(
        ctx.client.operations.ListOperations, operations_pb2.ListOperationsRequest(), "operations"
    )
    ctx.out.resources(ops, render_operations)
    return EXIT_OK


def operation_get(ctx: Context, args: argparse.Namespace) -> int:
    op = ctx.client.call(
        ctx.client.operations.GetOperation, operations_pb2.GetOperationRequest(name=args.operation)
    )
    ctx.out.resource(op, render_operation)
    return EXIT_OK


def operation_cancel(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.call(
        ctx.client.operations.CancelOperation,
        operations_pb2.CancelOperationRequest(name=args.operation),
    )
    # Cancelling is a request: the operation ends when its node notices.
    ctx.out.resource(
        empty_pb2.Empty(),
        lambda _: f"cancel requested for {args.operation}; "
        f"`drctl operation get {names.short_name(args.operation)}` shows when it stops",
    )
    return EXIT_OK


def progress_text(op: common_pb2.Operation) -> str:
    if not op.bytes_total:
        return format_size(op.bytes_done) if op.bytes_done else "-"
    return f"{100 * op.bytes_done // op.bytes_total}%"


def render_operation(op: common_pb2.Operation) -> str:
    fields = [
        ("operation", op.name),
        ("kind", op.kind),
        ("state", op.state),
        ("target", op.target or "-"),
        ("progress", f"{progress_text(op)}  "
                     f"{format_size(op.bytes_done)}/{format_size(op.bytes_total)}"),
        ("created", format_time(op.create_time)),
        ("ended", format_time(op.end_time)),
    ]
    if task_error_text(op.error):
        fields.append(("error", task_error_text(op.error)))
        fields.append(("retryable", "yes" if op.error.retryable else "no"))
    blocks = [format_fields(fields)]
    result = op.WhichOneof("result")
    if result == "restore_result":
        blocks.append(render_restore_result(op.restore_result))
    elif result == "verify_result":
        blocks.append(render_verify_result(op.verify_result))
    elif result == "gc_result":
        g = op.gc_result
        blocks.append(format_fields([
            ("points", g.points),
            ("removed", f"{g.objects_removed} objects, {format_size(g.bytes_removed)}"),
            ("kept (referenced)", f"{g.objects_kept} objects, {format_size(g.bytes_kept)}"),
            ("kept (younger than grace)",
             f"{g.objects_young} objects, {format_size(g.bytes_young)}"),
        ]))
    return "\n\n".join(blocks)


def render_operations(ops: list[common_pb2.Operation]) -> str:
    return format_table(
        ["OPERATION", "KIND", "STATE", "TARGET", "PROGRESS", "CREATED"],
        [
            [
                names.short_name(o.name),
                o.kind,
                o.state,
                names.short_name(o.target) if o.target else "-",
                progress_text(o),
                format_time(o.create_time),
            ]
            for o in ops
        ],
        right=["PROGRESS"],
    )


def render_restore_result(result: common_pb2.RestoreResult) -> str:
    if result.volume_id:
        return format_fields([("volume", result.volume_id)])
    return format_fields(
        [
            ("destination", result.destination_path),
            (
                "bytes written",
                f"{format_size(result.bytes_written)} ({result.bytes_written} bytes)",
            ),
            ("root hash", result.root_hash),
        ]
    )


def render_verify_result(result: common_pb2.VerifyResult) -> str:
    blocks = [
        format_fields(
            [
                ("result", "ok" if result.ok else "NOT OK"),
                ("chunks checked", result.chunks_checked),
                ("bad chunks", len(result.bad_chunks)),
            ]
        )
    ]
    if result.bad_chunks:
        blocks.append(
            format_table(
                ["DISK", "OFFSET", "LENGTH", "REASON"],
                [
                    [names.short_name(b.disk), b.offset, b.length, b.reason]
                    for b in result.bad_chunks
                ],
                right=["OFFSET", "LENGTH"],
            )
        )
    return "\n\n".join(blocks)


def finish(ctx: Context, op: common_pb2.Operation, render) -> int:
    """Print a finished (or --no-wait) operation; exit 1 when it failed or was cancelled."""
    ctx.out.resource(op, render)
    if op.done and op.state != "completed":
        reason = task_error_text(op.error) or "no reason given"
        ctx.out.note(f"error: {op.kind or 'operation'} {op.name} {op.state}: {reason}")
        return EXIT_FAILURE
    return EXIT_OK
