"""Task specs as typed messages: how they are stored with a task and read back.

The control plane builds every task's spec as its proto message (nodes.proto:
ReplicateSpec, FinalizeSpec, ...), never as a dict. The `tasks.spec` column holds the
message's proto-JSON form (field names as in the proto), and is read back strictly: a
field the message does not have — a typo, or a row older than its migration — is an
error that names it, never a silently dropped key.

What only the control plane needs (whose credentials a task gets, which site's nodes may
be its pair) is in task columns (source_site, target_site, pair_site), not in the spec.
"""

from __future__ import annotations

from google.protobuf import json_format
from google.protobuf.message import Message

from dr_common.errors import InvalidArgument
from dr_common.proto.dr.v1 import common_pb2, nodes_pb2
from dr_control.db.models import Task

SPEC_TYPES: dict[str, type[Message]] = {
    "replicate": nodes_pb2.ReplicateSpec,
    "snapshot": nodes_pb2.SnapshotSpec,
    "finalize": nodes_pb2.FinalizeSpec,
    "drop_snapshots": nodes_pb2.DropSnapshotsSpec,
    "restore": nodes_pb2.RestoreSpec,
    "verify": nodes_pb2.VerifySpec,
    "delete": nodes_pb2.DeleteSpec,
    "gc": nodes_pb2.GcSpec,
}


def store(msg: Message) -> dict:
    """The column value of a spec message."""
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def load(task: Task) -> Message:
    """The task's spec message, read strictly from its column."""
    kind = SPEC_TYPES.get(task.kind)
    if kind is None:
        raise InvalidArgument(f"task {task.id} has an unknown kind {task.kind!r}",
                              field="task.kind")
    try:
        return json_format.ParseDict(task.spec or {}, kind())
    except json_format.ParseError as e:
        raise InvalidArgument(f"the spec of task {task.id} ({task.kind}) does not match "
                              f"{kind.DESCRIPTOR.name}: {e}", field="task.spec") from None


def point_disk(d: nodes_pb2.FinalizeDisk) -> dict:
    """A disk of a recovery point as the recovery_points.disks column keeps it (every
    key present, sizes as numbers)."""
    return {"disk": d.disk, "root_hash": d.root_hash, "size_bytes": d.size_bytes,
            "full_sync": d.full_sync, "bitmap": d.bitmap,
            "full_sync_reason": d.full_sync_reason, "snapshot_id": d.snapshot_id,
            "source_snapshot_id": d.source_snapshot_id, "consistency": d.consistency,
            "spread_seconds": d.spread_seconds}


def finalize_disk(entry: dict) -> nodes_pb2.FinalizeDisk:
    """The reverse of point_disk: a point's disk for a verify spec."""
    return nodes_pb2.FinalizeDisk(**{k: v for k, v in entry.items()
                                     if k in nodes_pb2.FinalizeDisk.DESCRIPTOR.fields_by_name})


def checkpoint(d: dict) -> common_pb2.Checkpoint:
    return json_format.ParseDict(d, common_pb2.Checkpoint())
