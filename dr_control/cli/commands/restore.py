"""`drctl restore`: rebuild a disk image from a recovery point on a node."""

from __future__ import annotations

import argparse

from dr_common.proto.dr.v1 import common_pb2, restore_pb2

from .. import argtypes, names
from ..context import Context
from ..errors import EXIT_OK
from ..wait import wait_operation
from .operations import finish, render_operation, render_restore_result


def register(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "restore", parents=parents,
        help="restore a disk image from a recovery point, verifying every chunk",
    )
    p.add_argument("point", metavar="POINT", type=argtypes.name(names.RECOVERY_POINT),
                   help="PLAN/POINT")
    p.add_argument(
        "--to", default="", metavar="PATH", dest="destination",
        # Not resolved locally: the path is on the node that writes it.
        help="where the node writes the image (a path on the node, inside its allowed roots)",
    )
    p.add_argument("--availability-zone", default="", metavar="AZ",
                   help="ebs points: restore as a new EBS volume in this zone")
    p.add_argument("--disk", metavar="D", type=argtypes.name(names.DISK),
                   help="SITE/WORKLOAD/DISK; may be omitted when the point holds one disk")
    p.add_argument("--format", default="",
                   help='image format: "raw" (the default, sparse) or "qcow2"; ebs points '
                        'restore as "ebs-volume"')
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.add_argument("--no-wait", action="store_true",
                   help="print the operation and return; follow it with `drctl operation get`")
    p.set_defaults(handler=restore)


def restore(ctx: Context, args: argparse.Namespace) -> int:
    op = ctx.client.call(
        ctx.client.restore.RestoreDisk,
        restore_pb2.RestoreDiskRequest(
            recovery_point=args.point,
            disk=args.disk or "",
            destination_path=args.destination,
            format=args.format,
            overwrite=args.overwrite,
            availability_zone=args.availability_zone,
        ),
    )
    if args.no_wait:
        ctx.out.resource(op, render_operation)
        return EXIT_OK
    op = wait_operation(ctx, op)
    return finish(ctx, op, render_restored)


def render_restored(op: common_pb2.Operation) -> str:
    if op.state == "completed" and op.WhichOneof("result") == "restore_result":
        return render_restore_result(op.restore_result)
    return render_operation(op)
