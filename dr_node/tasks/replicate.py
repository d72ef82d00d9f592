"""Task `replicate`: one disk of a cycle, from its source to its target (DESIGN section 4,
stages 1-5), directly or through the paired target node.

The source comes from the source registry, the sink from the target registry (or, on a
paired plan, a RemoteSink to the target node the control plane chose); the engine
drives either the same way.
"""

from __future__ import annotations

import asyncio

import structlog

from dr_common import sources, targets
from dr_common.errors import DRError, first_error
from dr_common.proto.dr.v1 import common_pb2, nodes_pb2, transfer_pb2
from dr_common.sources.base import SourceDisk
from dr_common.targets.base import Checkpoint, SinkRequest
from dr_node import metrics
from dr_node.engine import ReplicateResult, Stats
from dr_node.tasks.base import TaskContext
from dr_node.transfer import PAIR_DISCONNECTED
from dr_node.transfer.client import RemoteSink

log = structlog.get_logger()

# Broken pair streams in a row, none storing a chunk, before a paired replicate task
# fails (and is retried by the control plane) instead of resuming in place.
# Five: on a link that resets often, a stream can break before its first
# acknowledgement now and then without the pair being unusable.
RESUME_STALLS = 5


def checkpoint_of(spec: nodes_pb2.ReplicateSpec) -> Checkpoint | None:
    """The resume point of an interrupted attempt, if it got anywhere."""
    if not (spec.HasField("checkpoint") and spec.checkpoint.watermark_chunk):
        return None
    cp = spec.checkpoint
    return Checkpoint(cp.watermark_chunk, list(cp.segments), cp.tail,
                      snapshot_id=cp.snapshot_id, changed_blocks=cp.changed_blocks)


def sink_request(spec: nodes_pb2.ReplicateSpec, source: SourceDisk) -> SinkRequest:
    return SinkRequest(
        plan=spec.plan, cycle=spec.cycle, disk=spec.disk, size=source.size,
        chunk_size=spec.chunk_size_bytes, compression=spec.compression or "none",
        previous_root_hash=spec.previous_root_hash,
        previous_snapshot_id=spec.previous_snapshot_id,
        # Hash-diff sources, and sources that lost their tracking, give no clean extents.
        source_tracked=source.tracking != "hash-diff" and not source.full_sync_reason)


async def run(ctx: TaskContext) -> None:
    spec: nodes_pb2.ReplicateSpec = ctx.spec

    async def progress(cp, bytes_done, stats, full_sync):
        await ctx.reporter.report(checkpoint=cp, bytes_done=bytes_done, stats=stats,
                                  full_sync=full_sync)

    source = await sources.open_source(spec.source, ctx.source_env)
    try:
        request = sink_request(spec, source)
        common = dict(disk=spec.disk, source=source, chunk_size=spec.chunk_size_bytes,
                      checkpoint=checkpoint_of(spec),
                      checkpoint_interval=spec.checkpoint_interval_bytes,
                      progress=progress, plan_bandwidth=ctx.reporter.bandwidth)
        if spec.HasField("pair"):
            result = await _replicate_paired(ctx, request, common)
        else:
            async with targets.opened(spec.target, ctx.target_env) as target:
                result = await ctx.engine.replicate(sink=await target.sink(request), **common)
    finally:
        await asyncio.get_running_loop().run_in_executor(ctx.engine.pool, source.close)
    req = ctx.result
    req.root_hash = result.root_hash
    req.snapshot_id = result.snapshot_id
    req.size_bytes = result.size
    req.full_sync = result.full_sync or bool(source.full_sync_reason)
    req.full_sync_reason = source.full_sync_reason or result.full_sync_reason or (
        "first-cycle" if result.full_sync else "")
    req.bitmap = getattr(source, "bitmap", "")
    req.stats.CopyFrom(common_pb2.TransferStats(**result.stats.as_dict()))
    log.info("disk replicated", root_hash=result.root_hash, snapshot=result.snapshot_id,
             full_sync=result.full_sync, **result.stats.as_dict())


async def _replicate_paired(ctx: TaskContext, request: SinkRequest, common: dict
                            ) -> ReplicateResult:
    """Replicates through the paired target node. A stream that breaks is opened
    again here, from the newest checkpoint, for as long as streams make progress: a
    WAN drops connections now and then, and resuming in place costs re-reading since
    the checkpoint (the target is probed, so what it stored is not sent again), not
    one of the task's attempts. Streams that break RESUME_STALLS times in a row
    without storing a chunk fail the task, which the control plane retries (perhaps
    with another target node)."""
    spec: nodes_pb2.ReplicateSpec = ctx.spec
    # The target node's credits bound what is in flight; the engine's window must not
    # be the tighter bound.
    window = -(-ctx.config.transfer.max_window_bytes // spec.chunk_size_bytes)
    checkpoint, report = common["checkpoint"], common["progress"]
    # The task's stats count every stream's work: those of streams that broke are
    # carried over (`live`: the running stream's, which the engine counts into).
    carried, live = Stats(), Stats()

    async def progress(cp, bytes_done, stats, full_sync):
        nonlocal checkpoint
        checkpoint = cp or checkpoint
        await report(cp, bytes_done, carried + stats, full_sync)

    stalls, resumed = 0, False
    while True:
        async with _paired_sink(ctx, request) as sink:
            try:
                # A resumed stream asks the target about chunks before sending them,
                # even with no checkpoint yet: it holds what the broken one sent.
                result = await ctx.engine.replicate(
                    sink=sink, window=window, stats=live, probe=resumed,
                    **{**common, "checkpoint": checkpoint, "progress": progress})
                result.stats = carried + result.stats
                return result
            except BaseException as exc:  # noqa: BLE001 - re-raised unless resumable
                err = first_error(exc)
                if not isinstance(err, DRError) or err.reason != PAIR_DISCONNECTED:
                    raise
                stalls = 0 if sink.chunks_acked else stalls + 1
                if stalls >= RESUME_STALLS:
                    raise err from None
                carried, live, resumed = carried + live, Stats(), True
        log.warning("stream to the target node broke; resuming in place",
                    pair=spec.pair.node, message=err.message,
                    watermark_chunk=checkpoint.watermark_chunk if checkpoint else 0)
        metrics.TRANSFER_RESUMES.inc()
        await asyncio.sleep(0.5 * 2 ** stalls)


def _paired_sink(ctx: TaskContext, request: SinkRequest) -> RemoteSink:
    """The disk goes to the paired target node the control plane chose; its
    certificate must bear the name the control plane authenticated it by (an older
    control plane sends none: then its node id)."""
    spec: nodes_pb2.ReplicateSpec = ctx.spec
    pair = spec.pair
    return RemoteSink(ctx.pairs, node=pair.node, address=pair.address,
                      tls_name=pair.cert_name or pair.node.rsplit("/", 1)[-1],
                      connect_timeout=ctx.config.transfer.connect_timeout_seconds,
                      open_disk=transfer_pb2.OpenDisk(
                          task=ctx.task.name, lease_token=ctx.task.lease_token,
                          disk=spec.disk, target=spec.target, size_bytes=request.size,
                          chunk_size_bytes=request.chunk_size,
                          compression=request.compression,
                          previous_root_hash=request.previous_root_hash))
