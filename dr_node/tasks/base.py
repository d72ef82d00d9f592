"""What a task handler gets: the task, its spec, the node's shared parts, the reporter
and the completion it fills in; and the check that a spec holds nothing unknown."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from google.protobuf import unknown_fields
from google.protobuf.message import Message

from dr_common.errors import InvalidArgument
from dr_common.proto.dr.v1 import nodes_pb2
from dr_common.sources.base import SourceEnv
from dr_common.targets.base import TargetEnv

if TYPE_CHECKING:
    from dr_node.agent import Reporter
    from dr_node.config import NodeConfig
    from dr_node.engine import Engine
    from dr_node.transfer.client import Pairs


@dataclass
class TaskContext:
    task: nodes_pb2.Task
    spec: Any  # the task's spec message (ReplicateSpec, FinalizeSpec, ...)
    config: NodeConfig
    engine: Engine
    pairs: Pairs
    reporter: Reporter
    result: nodes_pb2.CompleteTaskRequest

    @property
    def target_env(self) -> TargetEnv:
        return self.engine.target_env(self.config.file_roots)

    @property
    def source_env(self) -> SourceEnv:
        return SourceEnv(roots=tuple(self.config.file_roots), executor=self.engine.pool,
                         connections=self.config.engine.workers,
                         snapshot_timeout=self.config.snapshot_timeout_seconds)

    async def progress(self, done: int, total: int) -> None:
        """A `Progress` for targets' long operations (restore, verify)."""
        await self.reporter.report(checkpoint=None, bytes_done=done)


def check_known(msg: Message, path: str = "") -> None:
    """Refuses a spec with fields this node does not know (a newer control plane's):
    doing the task without them would silently use defaults in their place."""
    unknown = [f.field_number for f in unknown_fields.UnknownFieldSet(msg)]
    name = path or msg.DESCRIPTOR.name
    if unknown:
        raise InvalidArgument(
            f"{name} has fields this dr-node does not know (numbers "
            f"{', '.join(map(str, sorted(set(unknown))))}): upgrade the node to the "
            f"control plane's version", field=name)
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        if field.is_repeated:
            if field.message_type.GetOptions().map_entry:
                continue
            for i, item in enumerate(value):
                check_known(item, f"{name}.{field.name}[{i}]")
        else:
            check_known(value, f"{name}.{field.name}")
