"""The node's side of the control protocol: register, heartbeat, lease tasks, run them,
report progress (which renews the lease) and completion.

A node keeps nothing it cannot lose: a task's progress lives in its checkpoint at the
control plane, its data in the repository. On SIGTERM the node hands its tasks back
(reason "node-stopping") so they resume elsewhere from their watermark at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import uuid
import socket
import time
from datetime import datetime, timezone

import grpc
import structlog
from google.protobuf import json_format

from dr_common import __version__
from dr_common.errors import AlreadyExists, DRError, InvalidArgument, first_error
from dr_common.proto.dr.v1 import common_pb2, nodes_pb2, nodes_pb2_grpc
from dr_common.repository import PointDisk, RecoveryPointRecord, Repository
from dr_common.repository import gc
from dr_common.aws import AwsSettings
from dr_common.sources import aws as aws_source
from dr_common.sources.file import FileDisk, check_within_roots
from dr_common.sources.kvm import KvmDisk
from dr_common.targets import ebs, open_repository
from dr_node import metrics
from dr_node.bandwidth import TokenBucket
from dr_node.config import NodeConfig
from dr_node.engine import Checkpoint, Engine, Stats
from dr_node.restore import convert_to_qcow2
from dr_node.sinks import EbsSink
from dr_node.transfer import server as transfer_server
from dr_node.transfer import PAIR_DISCONNECTED
from dr_node.transfer.client import Pairs, RemoteSink
from dr_common.proto.dr.v1 import transfer_pb2

log = structlog.get_logger()

RELEASED = "node-stopping"  # the coordinator requeues these without using an attempt
ACQUIRE_WAIT_SECONDS = 5
# Broken pair streams in a row, none storing a chunk, before a paired replicate task
# fails (and is retried by the control plane) instead of resuming in place.
# Five: on a link that resets often, a stream can break before its first
# acknowledgement now and then without the pair being unusable.
RESUME_STALLS = 5


class LeaseLost(Exception):
    """The control plane gave this task to another holder: stop without reporting."""


class Cancelled(DRError):
    reason = "cancelled"


class Released(DRError):
    """The node is draining: the task goes back to the queue (reason "node-stopping",
    no attempt used) and resumes on another node from its checkpoint."""

    reason = RELEASED
    retryable = True


class Reporter:
    """Sends a task's progress; learns of lost leases, cancellations, and changes to the
    plan's bandwidth cap (applied to `bandwidth` at once)."""

    def __init__(self, stub: nodes_pb2_grpc.NodeServiceStub, task: nodes_pb2.Task):
        self.stub = stub
        self.task = task
        spec = getattr(task, task.kind)
        self.bandwidth = TokenBucket(getattr(spec, "bandwidth_bytes_per_second", 0))

    async def report(self, *, checkpoint: Checkpoint | None, bytes_done: int,
                     stats: Stats | None = None, full_sync: bool = False) -> None:
        req = nodes_pb2.ReportProgressRequest(
            task=self.task.name, lease_token=self.task.lease_token, bytes_done=bytes_done,
            full_sync=full_sync,
            stats=common_pb2.TransferStats(**stats.as_dict()) if stats else None)
        if checkpoint is not None:
            req.checkpoint.CopyFrom(common_pb2.Checkpoint(
                watermark_chunk=checkpoint.watermark_chunk, segments=checkpoint.segments,
                tail=checkpoint.tail, snapshot_id=checkpoint.snapshot_id,
                changed_blocks=checkpoint.changed_blocks))
        try:
            resp = await self.stub.ReportProgress(req, timeout=30)
        except grpc.aio.AioRpcError as e:
            if e.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                raise LeaseLost(e.details()) from None
            # The control plane may be restarting: keep working; the lease has slack.
            log.warning("progress report failed", code=e.code().name, details=e.details())
            return
        if resp.cancel:
            raise Cancelled("the task was cancelled")
        if resp.release:
            raise Released("the node is draining; the task resumes on another node")
        if resp.bandwidth_bytes_per_second != self.bandwidth.rate:
            log.info("plan bandwidth changed", bytes_per_second=resp.bandwidth_bytes_per_second)
            self.bandwidth.set_rate(resp.bandwidth_bytes_per_second)


class Agent:
    def __init__(self, config: NodeConfig, channel: grpc.aio.Channel):
        self.config = config
        self.stub = nodes_pb2_grpc.NodeServiceStub(channel)
        self.node_name = f"nodes/{config.id}"
        self.engine = Engine(config.engine)
        self.pairs = Pairs(config)
        self.running: dict[str, asyncio.Task] = {}
        self.stopping = False
        # The TransferService, on target nodes (transfer.listen set).
        self.transfer_server: grpc.aio.Server | None = None
        self.transfer_port = 0

    async def run(self, stop: asyncio.Event) -> None:
        if self.config.transfer.listen:
            self.transfer_server, self.transfer_port = await transfer_server.start_server(
                self.config, self.engine)
        await self._register(stop)
        heartbeat = asyncio.create_task(self._heartbeats(stop))
        try:
            await self._take_tasks(stop)
        finally:
            self.stopping = True
            for t in self.running.values():
                t.cancel()
            await asyncio.gather(*self.running.values(), return_exceptions=True)
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            if self.transfer_server is not None:
                # Streams in progress break; their source nodes resume from checkpoints.
                await self.transfer_server.stop(grace=1.0)
            await self.pairs.close()
            self.engine.close()

    async def _register(self, stop: asyncio.Event) -> None:
        delay = 0.2
        while not stop.is_set():
            try:
                await self.stub.RegisterNode(nodes_pb2.RegisterNodeRequest(
                    node_id=self.config.id, hostname=socket.gethostname(), version=__version__,
                    max_tasks=self.config.max_tasks, budget_bytes=self.config.engine.budget_bytes,
                    site=self.config.site,
                    transfer_address=self.config.transfer.advertise
                    or self.config.transfer.listen),
                    timeout=10)
                log.info("registered", node=self.node_name, control=self.config.control)
                return
            except grpc.aio.AioRpcError as e:
                log.warning("cannot register with dr-control; retrying", code=e.code().name,
                            control=self.config.control, details=e.details())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 5.0)

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.stub.Heartbeat(nodes_pb2.HeartbeatRequest(
                    node=self.node_name, running_tasks=len(self.running),
                    inflight_bytes=self.engine.budget.used,
                    backpressure=self.engine.budget.pressure, pairs=self.pairs.health()),
                    timeout=10)
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.NOT_FOUND:  # control lost us: register again
                    await self._register(stop)
                else:
                    log.warning("heartbeat failed", code=e.code().name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.heartbeat_seconds)

    async def _take_tasks(self, stop: asyncio.Event) -> None:
        slot_freed = asyncio.Event()
        while not stop.is_set():
            if len(self.running) >= self.config.max_tasks:
                slot_freed.clear()
                waiter = asyncio.create_task(slot_freed.wait())
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                continue
            acquire = asyncio.ensure_future(self.stub.AcquireTask(nodes_pb2.AcquireTaskRequest(
                node=self.node_name, wait_seconds=ACQUIRE_WAIT_SECONDS),
                timeout=ACQUIRE_WAIT_SECONDS + 10))
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({acquire, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if stop.is_set():
                acquire.cancel()
                # A task leased in this very moment is not lost: its lease expires.
                return
            try:
                resp = acquire.result()
            except grpc.aio.AioRpcError as e:
                log.warning("cannot fetch tasks", code=e.code().name, details=e.details())
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    await self._register(stop)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                continue
            if not resp.HasField("task"):
                continue
            task = resp.task
            runner = asyncio.create_task(self._run(task), name=task.name)
            self.running[task.name] = runner
            metrics.RUNNING.set(len(self.running))

            def _done(_t, name=task.name):
                self.running.pop(name, None)
                metrics.RUNNING.set(len(self.running))
                slot_freed.set()

            runner.add_done_callback(_done)

    async def _run(self, task: nodes_pb2.Task) -> None:
        spec = getattr(task, task.kind)
        structlog.contextvars.bind_contextvars(task=task.name, kind=task.kind,
                                               disk=getattr(spec, "disk", ""),
                                               plan=getattr(spec, "plan", ""))
        reporter = Reporter(self.stub, task)
        req = nodes_pb2.CompleteTaskRequest(task=task.name, lease_token=task.lease_token)
        log.info("task started")
        started = time.monotonic()
        try:
            await getattr(self, f"_{task.kind}")(spec, reporter, req)
            outcome = "completed"
        except LeaseLost as e:
            log.warning("lease lost; task abandoned", details=str(e))
            metrics.TASKS.labels(kind=task.kind, outcome="lease-lost").inc()
            return
        except asyncio.CancelledError:
            if self.stopping:
                req.error.CopyFrom(common_pb2.TaskError(
                    reason=RELEASED, message="the node is stopping", retryable=True))
                await self._complete(req)
            metrics.TASKS.labels(kind=task.kind, outcome="released").inc()
            raise
        except BaseException as exc:  # noqa: BLE001 - every failure is reported, not lost
            err = first_error(exc)
            if isinstance(err, LeaseLost):
                log.warning("lease lost; task abandoned", details=str(err))
                return
            if isinstance(err, Released):
                req.error.CopyFrom(common_pb2.TaskError(
                    reason=RELEASED, message=err.message, retryable=True))
                log.info("task handed back: the node is draining")
                outcome = "released"
            elif isinstance(err, DRError):
                req.error.CopyFrom(common_pb2.TaskError(
                    reason=err.reason, message=err.message, retryable=err.retryable))
                log.warning("task failed", reason=err.reason, message=err.message)
            elif isinstance(err, OSError):
                req.error.CopyFrom(common_pb2.TaskError(
                    reason="io-error", message=f"{err.strerror or err}: {err.filename or ''}",
                    retryable=True))
                log.warning("task failed", error=str(err))
            else:
                req.error.CopyFrom(common_pb2.TaskError(
                    reason="internal", message=f"internal error: {type(err).__name__}: {err}",
                    retryable=False))
                log.error("task failed", exc_info=err)
            if not isinstance(err, Released):
                outcome = "failed"
        finally:
            structlog.contextvars.unbind_contextvars("task", "kind", "disk", "plan")
        await self._complete(req)
        metrics.TASKS.labels(kind=task.kind, outcome=outcome).inc()
        log.info("task finished", task=task.name, outcome=outcome,
                 seconds=round(time.monotonic() - started, 3))

    async def _complete(self, req: nodes_pb2.CompleteTaskRequest) -> None:
        for attempt in range(5):
            try:
                await self.stub.CompleteTask(req, timeout=30)
                return
            except grpc.aio.AioRpcError as e:
                if e.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                    log.warning("completion refused", details=e.details())
                    return
                log.warning("completion not delivered; retrying", code=e.code().name)
                await asyncio.sleep(min(0.5 * 2 ** attempt, 5))

    @contextlib.asynccontextmanager
    async def _repository(self, locator: nodes_pb2.RepositoryLocator):
        repo = await open_repository(locator.kind, locator.path, roots=self.config.file_roots,
                                     executor=self.engine.pool, aws=_aws(locator.aws))
        try:
            yield repo
        finally:
            await repo.store.close()

    # -- task kinds -----------------------------------------------------------------

    async def _open_source(self, spec: nodes_pb2.ReplicateSpec):
        if spec.source_kind == "aws":
            return await aws_source.AwsDisk.open(
                _aws(spec.source_aws), snapshot_id=spec.source_snapshot_id,
                previous_snapshot_id=spec.previous_source_snapshot_id, size=spec.size_bytes,
                volume_id=spec.source_locator)
        path = check_within_roots(spec.source_locator, self.config.file_roots,
                                  field="source_locator")
        if spec.source_kind == "file":
            return FileDisk(path)
        if spec.source_kind == "kvm":
            # Opening rotates bitmaps and starts qemu-nbd: blocking, so in a worker thread.
            return await asyncio.get_running_loop().run_in_executor(
                self.engine.pool, functools.partial(
                    KvmDisk, path, previous_bitmap=spec.previous_bitmap, new_bitmap=spec.bitmap,
                    connections=self.config.engine.workers))
        raise InvalidArgument(f"source kind {spec.source_kind!r} is not supported",
                              field="source_kind")

    async def _replicate(self, spec: nodes_pb2.ReplicateSpec, reporter: Reporter,
                         req: nodes_pb2.CompleteTaskRequest) -> None:
        checkpoint = None
        if spec.HasField("checkpoint") and spec.checkpoint.watermark_chunk:
            cp = spec.checkpoint
            checkpoint = Checkpoint(cp.watermark_chunk, list(cp.segments), cp.tail,
                                    snapshot_id=cp.snapshot_id, changed_blocks=cp.changed_blocks)

        async def progress(cp, bytes_done, stats, full_sync):
            await reporter.report(checkpoint=cp, bytes_done=bytes_done, stats=stats,
                                  full_sync=full_sync)

        source = await self._open_source(spec)
        try:
            common = dict(disk=spec.disk, source=source, chunk_size=spec.chunk_size_bytes,
                          checkpoint=checkpoint,
                          checkpoint_interval=spec.checkpoint_interval_bytes,
                          progress=progress, plan_bandwidth=reporter.bandwidth)
            if spec.repository.kind == "ebs":
                settings = _aws(spec.repository.aws)
                async with ebs.EbsTarget(settings) as target:
                    sink = EbsSink(
                        target, name=f"ebs:{settings.region}", disk=spec.disk,
                        size=source.size, chunk_size=spec.chunk_size_bytes,
                        # A source read in full gives no clean extents: relative to a
                        # parent every hole would have to be written as zeros.
                        parent="" if source.full_sync_reason else spec.previous_snapshot_id,
                        client_token=_token(spec),
                        tags={ebs.TAG_PLAN: spec.plan, ebs.TAG_DISK: spec.disk,
                              ebs.TAG_CYCLE: spec.cycle})
                    result = await self.engine.replicate(sink=sink, **common)
            elif spec.pair_address:
                result = await self._replicate_paired(spec, reporter.task, source.size, common)
            else:
                async with self._repository(spec.repository) as repo:
                    previous = (await repo.get_manifest(spec.previous_root_hash)
                                if spec.previous_root_hash else None)
                    result = await self.engine.replicate(
                        repo=repo, target=f"{spec.repository.kind}:{spec.repository.path}",
                        compression=spec.compression or "none", previous=previous, **common)
        finally:
            await asyncio.get_running_loop().run_in_executor(self.engine.pool, source.close)
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

    async def _replicate_paired(self, spec: nodes_pb2.ReplicateSpec, task: nodes_pb2.Task,
                                size: int, common: dict):
        """Replicates through the paired target node. A stream that breaks is opened
        again here, from the newest checkpoint, for as long as streams make progress: a
        WAN drops connections now and then, and resuming in place costs re-reading since
        the checkpoint (the target is probed, so what it stored is not sent again), not
        one of the task's attempts. Streams that break RESUME_STALLS times in a row
        without storing a chunk fail the task, which the control plane retries (perhaps
        with another target node)."""
        # The target node's credits bound what is in flight; the engine's window must not
        # be the tighter bound.
        window = -(-self.config.transfer.max_window_bytes // spec.chunk_size_bytes)
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
            async with self._paired_sink(spec, task, size) as sink:
                try:
                    # A resumed stream asks the target about chunks before sending them,
                    # even with no checkpoint yet: it holds what the broken one sent.
                    result = await self.engine.replicate(
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
                        pair=spec.pair_node, message=err.message,
                        watermark_chunk=checkpoint.watermark_chunk if checkpoint else 0)
            metrics.TRANSFER_RESUMES.inc()
            await asyncio.sleep(0.5 * 2 ** stalls)

    def _paired_sink(self, spec: nodes_pb2.ReplicateSpec, task: nodes_pb2.Task,
                     size: int) -> RemoteSink:
        """The disk goes to the paired target node the control plane chose; its
        certificate must bear the name the control plane authenticated it by (an older
        control plane sends none: then its node id)."""
        return RemoteSink(self.pairs, node=spec.pair_node, address=spec.pair_address,
                          tls_name=spec.pair_cert_name or spec.pair_node.rsplit("/", 1)[-1],
                          connect_timeout=self.config.transfer.connect_timeout_seconds,
                          open_disk=transfer_pb2.OpenDisk(
                              task=task.name, lease_token=task.lease_token, disk=spec.disk,
                              repository=spec.repository, size_bytes=size,
                              chunk_size_bytes=spec.chunk_size_bytes,
                              compression=spec.compression or "none",
                              previous_root_hash=spec.previous_root_hash))

    async def _snapshot(self, spec: nodes_pb2.SnapshotSpec, reporter: Reporter,
                        req: nodes_pb2.CompleteTaskRequest) -> None:
        """The cycle's consistency group: one crash-consistent snapshot per instance."""
        settings = _aws(spec.source_aws)
        marker = {ebs.TAG_PLAN: spec.plan, "hybrid-dr:role": "change-marker"}
        by_instance: dict[str, list[str]] = {}
        for v in spec.volumes:
            by_instance.setdefault(v.instance_id, []).append(v.volume_id)
        # Snapshots of earlier cycles no point needs (failed cycles, superseded points).
        keep = set(spec.keep_snapshot_ids)
        stale = [i for i in await aws_source.stale_snapshots(settings, marker) if i not in keep]
        if stale:
            await aws_source.delete_snapshots(settings, stale)
            log.info("stale source snapshots deleted", count=len(stale))
        snaps = await aws_source.snapshot_group(
            settings, by_instance, tags={**marker, ebs.TAG_CYCLE: spec.cycle},
            timeout=self.config.snapshot_timeout_seconds)
        for v in spec.volumes:
            req.source_snapshots.add(disk=v.disk, snapshot_id=snaps[v.volume_id])
        log.info("consistency group snapshotted", volumes=len(snaps))

    async def _finalize(self, spec: nodes_pb2.FinalizeSpec, reporter: Reporter,
                        req: nodes_pb2.CompleteTaskRequest) -> None:
        if spec.repository.kind == "ebs":
            # The snapshots are complete; naming them the point is the last write.
            async with ebs.EbsTarget(_aws(spec.repository.aws)) as target:
                await target.tag([d.snapshot_id for d in spec.disks],
                                 {ebs.TAG_POINT: spec.recovery_point_id})
            log.info("recovery point tagged", point=spec.recovery_point_id)
            return
        async with self._repository(spec.repository) as repo:
            for d in spec.disks:  # validate: every manifest is there and intact
                await repo.get_manifest(d.root_hash)
            record = RecoveryPointRecord(
                id=spec.recovery_point_id, plan=spec.plan, cycle=spec.cycle,
                create_time=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                disks=tuple(PointDisk(disk=d.disk, size=d.size_bytes, root_hash=d.root_hash,
                                      full_sync=d.full_sync) for d in spec.disks))
            await repo.store.sync()  # chunks and manifests durable before the point shows
            written = await repo.put_recovery_point(record)
            await repo.store.sync()
        log.info("recovery point written", point=spec.recovery_point_id, new=written)

    async def _delete(self, spec: nodes_pb2.DeleteSpec, reporter: Reporter,
                      req: nodes_pb2.CompleteTaskRequest) -> None:
        """Removes a recovery point at its target. Idempotent: a retry after a lost
        completion finds nothing left to remove."""
        if spec.repository.kind == "ebs":
            async with ebs.EbsTarget(_aws(spec.repository.aws)) as target:
                for snapshot_id in spec.snapshot_ids:
                    await target.delete_snapshot(snapshot_id)
            log.info("recovery point snapshots deleted", point=spec.recovery_point,
                     snapshots=len(spec.snapshot_ids))
            return
        async with self._repository(spec.repository) as repo:
            removed = await repo.delete_recovery_point(spec.recovery_point_id)
            await repo.store.sync()
        log.info("recovery point deleted", point=spec.recovery_point, removed=removed)

    async def _gc(self, spec: nodes_pb2.GcSpec, reporter: Reporter,
                  req: nodes_pb2.CompleteTaskRequest) -> None:
        async with self._repository(spec.repository) as repo:
            report = await gc.collect_garbage(repo, grace_seconds=spec.grace_seconds)
            await repo.store.sync()
        req.gc_result.CopyFrom(common_pb2.GcResult(**report.as_dict()))

    async def _restore(self, spec: nodes_pb2.RestoreSpec, reporter: Reporter,
                       req: nodes_pb2.CompleteTaskRequest) -> None:
        if spec.repository.kind == "ebs":
            async with ebs.EbsTarget(_aws(spec.repository.aws)) as target:
                volume = await target.create_volume(
                    spec.snapshot_id, availability_zone=spec.availability_zone,
                    tags={ebs.TAG_POINT: spec.recovery_point.rsplit("/", 1)[-1],
                          ebs.TAG_DISK: spec.disk})
            req.restore_result.volume_id = volume
            log.info("volume restored", volume=volume, snapshot=spec.snapshot_id)
            return
        if spec.format not in ("", "raw", "qcow2"):
            raise InvalidArgument(f"restore format {spec.format!r} is not supported",
                                  field="format")
        async with self._repository(spec.repository) as repo:
            await self._restore_file(spec, reporter, req, repo)

    async def _restore_file(self, spec: nodes_pb2.RestoreSpec, reporter: Reporter,
                            req: nodes_pb2.CompleteTaskRequest, repo: Repository) -> None:
        dest = check_within_roots(spec.destination_path, self.config.file_roots,
                                  field="destination_path")
        if dest.exists() and not spec.overwrite:
            raise AlreadyExists(f"{dest} exists; pass overwrite to replace it")
        last = 0.0

        async def progress(done, total):
            nonlocal last
            if time.monotonic() - last >= 0.5 or done == total:
                last = time.monotonic()
                await reporter.report(checkpoint=None, bytes_done=done)

        # qcow2: a verified raw restore next to it first, then qemu-img converts it.
        raw = dest if spec.format != "qcow2" else (
            dest.parent / f".{dest.name}.raw-{uuid.uuid4().hex[:8]}")
        result = await self.engine.restore_raw(
            repo=repo, root_hash=spec.root_hash, disk=spec.disk, destination=str(raw),
            overwrite=spec.overwrite, roots=self.config.file_roots, progress=progress)
        if raw != dest:
            try:
                await asyncio.get_running_loop().run_in_executor(
                    self.engine.pool, convert_to_qcow2, raw, dest, spec.overwrite)
            finally:
                raw.unlink(missing_ok=True)
            result["destination_path"] = str(dest)
        json_format.ParseDict(result, req.restore_result)

    async def _verify(self, spec: nodes_pb2.VerifySpec, reporter: Reporter,
                      req: nodes_pb2.CompleteTaskRequest) -> None:
        async with self._repository(spec.repository) as repo:
            await self._verify_disks(spec, reporter, req, repo)

    async def _verify_disks(self, spec: nodes_pb2.VerifySpec, reporter: Reporter,
                            req: nodes_pb2.CompleteTaskRequest, repo: Repository) -> None:
        checked, bytes_done, bad = 0, 0, []
        for d in spec.disks:
            # Every disk is checked even after a bad one: the user needs the whole list.
            # Identical disks share a manifest: name the disk this point says it is.
            manifest = dataclasses.replace(await repo.get_manifest(d.root_hash), disk=d.disk)
            report = await repo.verify_disk(manifest)
            checked += report.chunks_checked
            bad += [common_pb2.BadChunk(disk=d.disk, offset=b.offset, length=b.length,
                                        reason=b.reason) for b in report.bad_chunks]
            bytes_done += d.size_bytes
            await reporter.report(checkpoint=None, bytes_done=bytes_done)
        req.verify_result.CopyFrom(common_pb2.VerifyResult(
            ok=not bad, chunks_checked=checked, bad_chunks=bad))
        if bad:
            log.warning("recovery point failed verification", point=spec.recovery_point,
                        bad_chunks=len(bad), first_disk=bad[0].disk, first_offset=bad[0].offset)


def _aws(msg: common_pb2.AwsSettings) -> AwsSettings | None:
    """The task's AWS settings (the control plane unsealed the secret for this task);
    None for targets and sources that are not in AWS."""
    if not msg.region:
        return None
    return AwsSettings(region=msg.region, endpoint_url=msg.endpoint_url, profile=msg.profile,
                       access_key_id=msg.access_key_id,
                       secret_access_key=msg.secret_access_key,
                       session_token=msg.session_token)


def _token(spec: nodes_pb2.ReplicateSpec) -> str:
    """StartSnapshot's idempotency token: the same for retries of one start, new for
    every attempt that starts over (a reused token would return the old snapshot)."""
    return f"{spec.cycle}/{spec.disk}/{uuid.uuid4().hex}"[-64:]
