"""The one interface every target adapter offers: `Target`, and the `Sink` of one disk.

A target is where recovery points are written (DESIGN section 4, stages 5-6): a
repository on an object store (`fs`, `s3`), or storage with its own format (`ebs`
snapshots). Nodes reach a target only through `dr_common.targets.open_target(locator)`;
the engine sees only a `Sink`, and the node's task handlers only a `Target`, so a new
target is one module and one registry line — the engine and the agent do not change.

The engine (dr_node.engine) classifies, reads and schedules chunks the same way for
every target; a sink says what a chunk becomes there and what "durable up to the
watermark" means. Ids: the engine hands the sink, in disk order, one id per chunk —
`ZERO_ID` for zeros, the previous id (`previous_id`) for clean chunks, and whatever
`encode` returned for chunks it read. The capability flags (`has_previous`,
`writes_zeros`, `can_probe`, `paced`) are everything the engine knows of a target.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from dr_common.errors import FailedPrecondition

if TYPE_CHECKING:
    from dr_common.proto.dr.v1 import common_pb2, nodes_pb2
    from dr_common.repository import DiskManifest, Repository


# What a restore of a repository point makes: an image file at a path of the node.
IMAGE_FORMATS = ("raw", "qcow2")


@dataclass(frozen=True)
class Checkpoint:
    """Resume state of a disk: everything below `watermark_chunk` is durable.

    Repository targets: the manifest segments and tail ids so far. EBS: the pending
    snapshot and the number of blocks put below the watermark."""

    watermark_chunk: int
    segments: list[str] = field(default_factory=list)
    tail: bytes = b""
    snapshot_id: str = ""
    changed_blocks: int = 0


@dataclass(frozen=True)
class SinkResult:
    size: int
    root_hash: str = ""  # repository targets: the manifest's root
    snapshot_id: str = ""  # ebs: the completed snapshot
    manifest: DiskManifest | None = None


@dataclass(frozen=True)
class SinkRequest:
    """One disk of a cycle, as a target needs to know it to write it."""

    plan: str
    cycle: str
    disk: str
    size: int
    chunk_size: int
    compression: str = "none"
    # This disk in the previous recovery point: a repository's manifest root, a native
    # target's snapshot. Empty: nothing to be relative to (a full sync).
    previous_root_hash: str = ""
    previous_snapshot_id: str = ""
    # Whether the source's tracking says which extents are unchanged (clean) since the
    # previous point. A source read in full gives no clean extents: relative to a parent
    # snapshot, every hole would then have to be written as zeros.
    source_tracked: bool = True


class Sink(Protocol):
    name: str  # the target, for the adaptive limiter ("fs:/path", "ebs:us-east-1")
    # Is there a previous point this one is relative to? (Clean chunks need one.)
    has_previous: bool
    # Must chunks that are zero now, but were not proven unchanged, be written?
    writes_zeros: bool
    # May a resumed task ask the target whether a chunk is stored (`stored_before`)?
    can_probe: bool
    # Set by `begin` when the previous point turned out unusable at the target.
    full_sync_reason: str
    # Does the target pace writes itself (credits of a paired node)? Then the engine's
    # adaptive limiter stays out of the way (optional; False when absent). The
    # bandwidth caps still apply: they count the chunk bytes sent.
    paced: bool

    async def begin(self, checkpoint: Checkpoint | None) -> int:
        """Opens the disk at the target; returns the first chunk to replicate."""

    async def previous_id(self, index: int) -> bytes | None: ...

    def encode(self, frame: bytearray, length: int, prev_id: bytes | None
               ) -> tuple[bytes, bytes | memoryview | None]:
        """In a worker thread: (id, blob to write, or None when it is unchanged). The
        data is frame[CHUNK_OVERHEAD:CHUNK_OVERHEAD + length] and is not all zeros."""

    async def stored_before(self, cid: bytes) -> bool: ...

    async def put(self, index: int, cid: bytes, blob: bytes | memoryview) -> bool:
        """Writes one chunk; False if it was already stored (deduplicated)."""

    async def put_zero(self, index: int, length: int) -> None:
        """Writes zeros over a chunk (only called when `writes_zeros`)."""

    async def add(self, ids: list[bytes]) -> None:
        """The next chunks, in order, are durable."""

    @property
    def next_chunk(self) -> int: ...

    async def checkpoint(self) -> Checkpoint: ...

    async def finish(self) -> SinkResult: ...


class Budget(Protocol):
    """The node's byte budget, as a restore holds chunk bytes under it."""

    def hold(self, n: int) -> contextlib.AbstractAsyncContextManager[None]: ...


@dataclass(frozen=True)
class TargetEnv:
    """What a node lends a target: where it may write files, its worker threads (for
    blocking I/O), its byte budget and how many chunks a restore keeps in flight."""

    roots: tuple[str, ...] = ()
    executor: Executor | None = None
    budget: Budget | None = None
    window: int = 8


# Progress of a long operation: bytes done so far, of the total.
Progress = Callable[[int, int], Awaitable[None]]


class Target(Protocol):
    """Recovery points of one target location. Open with `open_target`; close with
    `close()` (or `async with`), which releases its clients."""

    # For the adaptive limiter and logs: "fs:/srv/repo", "s3:s3://bucket/p", "ebs:us-east-1".
    name: str
    # A repository target's repository (paired target nodes write through it, and GC and
    # verify read it); None for targets with a format of their own.
    repository: Repository | None

    async def sink(self, request: SinkRequest) -> Sink:
        """Where the engine writes one disk of a cycle."""

    async def finalize(self, spec: nodes_pb2.FinalizeSpec) -> bool:
        """Makes the cycle's disks one recovery point: its last write. False if the
        point was already there (a retried finalize)."""

    async def delete(self, spec: nodes_pb2.DeleteSpec) -> int:
        """Removes one recovery point; returns how many objects went. Idempotent."""

    async def restore(self, spec: nodes_pb2.RestoreSpec, progress: Progress
                      ) -> common_pb2.RestoreResult:
        """Rebuilds one disk of a point where the spec says, every chunk verified."""

    async def verify(self, spec: nodes_pb2.VerifySpec, progress: Progress
                     ) -> common_pb2.VerifyResult:
        """Reads a point's disks back and checks every chunk against its id."""

    async def gc(self, spec: nodes_pb2.GcSpec) -> common_pb2.GcResult:
        """Removes what no recovery point references (older than the grace period)."""

    async def close(self) -> None: ...


def unsupported(target: str, operation: str, why: str) -> FailedPrecondition:
    """The error of an operation a target kind does not offer (say, GC of EBS)."""
    return FailedPrecondition(f"the {target} target cannot {operation}: {why}",
                              reason="not-supported")

