"""`drctl point ...`: recovery points of a plan, verifying them end to end, locking and
deleting them; `drctl repository gc`: collecting a repository's garbage now."""

from __future__ import annotations

import argparse

from dr_common.proto.dr.v1 import common_pb2, recovery_points_pb2

from .. import argtypes, names
from ..context import Context
from ..errors import EXIT_FAILURE, EXIT_OK
from ..table import format_fields, format_table
from ..units import format_size, format_time
from ..wait import wait_operation
from .operations import finish, render_operation, render_verify_result


def register(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    point = sub.add_parser("point", help="recovery points: validated point-in-time copies")
    point_sub = point.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = point_sub.add_parser("list", parents=parents, help="list a plan's recovery points")
    p.add_argument("plan", metavar="PLAN", type=argtypes.name(names.PLAN))
    p.set_defaults(handler=point_list)

    p = point_sub.add_parser("show", parents=parents, help="show a recovery point")
    p.add_argument("point", metavar="POINT", type=argtypes.name(names.RECOVERY_POINT),
                   help="PLAN/POINT")
    p.set_defaults(handler=point_show)

    p = point_sub.add_parser(
        "verify", parents=parents,
        help="read every chunk of a point and check it against its hashes",
    )
    p.add_argument("point", metavar="POINT", type=argtypes.name(names.RECOVERY_POINT),
                   help="PLAN/POINT")
    p.add_argument("--no-wait", action="store_true",
                   help="print the operation and return; follow it with `drctl operation get`")
    p.set_defaults(handler=point_verify)

    for action, text in (
        ("lock", "protect a point from retention and deletion"),
        ("unlock", "let retention and delete act on a point again"),
        ("delete", "delete a point (refused when locked or the plan's newest)"),
    ):
        p = point_sub.add_parser(action, parents=parents, help=text)
        p.add_argument("point", metavar="POINT", type=argtypes.name(names.RECOVERY_POINT),
                       help="PLAN/POINT")
        p.set_defaults(handler=point_change)

    repo = sub.add_parser("repository", help="the repository a plan's points are stored in")
    repo_sub = repo.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = repo_sub.add_parser(
        "gc", parents=parents,
        help="delete the repository objects no recovery point references (garbage "
             "collection), now rather than on the scheduler's interval")
    p.add_argument("plan", metavar="PLAN", type=argtypes.name(names.PLAN))
    p.add_argument("--grace", type=argtypes.duration, metavar="DURATION",
                   help="keep unreferenced objects younger than this (default: the "
                        "server's scheduler.gc_grace_seconds); keep it above the longest "
                        "cycle")
    p.add_argument("--no-wait", action="store_true",
                   help="print the operation and return; follow it with `drctl operation get`")
    p.set_defaults(handler=repository_gc)


def point_list(ctx: Context, args: argparse.Namespace) -> int:
    points = ctx.client.list_all(
        ctx.client.recovery_points.ListRecoveryPoints,
        recovery_points_pb2.ListRecoveryPointsRequest(parent=args.plan),
        "recovery_points",
    )
    ctx.out.resources(points, render_points)
    return EXIT_OK


def point_show(ctx: Context, args: argparse.Namespace) -> int:
    point = ctx.client.call(
        ctx.client.recovery_points.GetRecoveryPoint,
        recovery_points_pb2.GetRecoveryPointRequest(name=args.point),
    )
    ctx.out.resource(point, render_point)
    return EXIT_OK


def point_verify(ctx: Context, args: argparse.Namespace) -> int:
    op = ctx.client.call(
        ctx.client.recovery_points.VerifyRecoveryPoint,
        recovery_points_pb2.VerifyRecoveryPointRequest(name=args.point),
    )
    if args.no_wait:
        ctx.out.resource(op, render_operation)
        return EXIT_OK
    op = wait_operation(ctx, op)
    code = finish(ctx, op, render_verify)
    if code == EXIT_OK and not op.verify_result.ok:
        ctx.out.note(
            f"error: {args.point} failed verification: "
            f"{len(op.verify_result.bad_chunks)} bad chunk(s)"
        )
        return EXIT_FAILURE
    return code


_CHANGES = {
    "lock": ("LockRecoveryPoint", recovery_points_pb2.LockRecoveryPointRequest),
    "unlock": ("UnlockRecoveryPoint", recovery_points_pb2.UnlockRecoveryPointRequest),
    "delete": ("DeleteRecoveryPoint", recovery_points_pb2.DeleteRecoveryPointRequest),
}


def point_change(ctx: Context, args: argparse.Namespace) -> int:
    method, request = _CHANGES[args.action]
    answer = ctx.client.call(getattr(ctx.client.recovery_points, method),
                             request(name=args.point))
    if isinstance(answer, recovery_points_pb2.RecoveryPoint):
        ctx.out.resource(answer, render_point)
    else:
        ctx.out.note(f"{args.point}: deleting (a node removes it from the target)")
    return EXIT_OK


def repository_gc(ctx: Context, args: argparse.Namespace) -> int:
    req = recovery_points_pb2.CollectGarbageRequest(parent=args.plan)
    if args.grace is not None:
        argtypes.set_field(req, "grace_seconds", args.grace, "--grace")
    op = ctx.client.call(ctx.client.recovery_points.CollectGarbage, req)
    if not args.no_wait:
        op = wait_operation(ctx, op)
    return finish(ctx, op, render_operation)


def render_verify(op: common_pb2.Operation) -> str:
    if op.state != "completed" or op.WhichOneof("result") != "verify_result":
        return render_operation(op)
    head = format_fields([("recovery point", op.target or "-"), ("operation", op.name)])
    return f"{head}\n{render_verify_result(op.verify_result)}"


def render_points(points: list[recovery_points_pb2.RecoveryPoint]) -> str:
    return format_table(
        ["POINT", "CREATED", "DISKS", "FULL-SYNC DISKS", "STORED", "FULL-SYNC REASONS"],
        [
            [
                names.short_name(p.name),
                format_time(p.create_time),
                len(p.disks),
                sum(1 for d in p.disks if d.full_sync),
                format_size(p.stats.bytes_stored),
                _reasons(p),
            ]
            for p in points
        ],
        right=["DISKS", "FULL-SYNC DISKS", "STORED"],
    )


def _reasons(point: recovery_points_pb2.RecoveryPoint) -> str:
    """Why disks were read in full, e.g. "bitmap-missing (1)"; "-" when none were."""
    counts: dict[str, int] = {}
    for d in point.disks:
        if d.full_sync:
            reason = d.full_sync_reason or "unknown"
            counts[reason] = counts.get(reason, 0) + 1
    return ", ".join(f"{r} ({n})" for r, n in sorted(counts.items())) or "-"


def render_point(point: recovery_points_pb2.RecoveryPoint) -> str:
    s = point.stats
    head = format_fields(
        [
            ("recovery point", point.name),
            ("created", format_time(point.create_time)),
            ("cycle", point.cycle or "-"),
            ("locked", "yes" if point.locked else "no"),
            ("state", point.state or "ready"),
            ("bytes read/sent/stored",
             f"{format_size(s.bytes_read)} / {format_size(s.bytes_sent)} / "
             f"{format_size(s.bytes_stored)}"),
        ]
    )
    disks = format_table(
        ["DISK", "SIZE", "FULL SYNC", "ROOT HASH"],
        [
            [names.short_name(d.disk), format_size(d.size_bytes),
             f"yes ({d.full_sync_reason})" if d.full_sync_reason else
             ("yes" if d.full_sync else "no"), d.root_hash]
            for d in point.disks
        ],
        right=["SIZE"],
    )
    return f"{head}\n\n{disks}"
