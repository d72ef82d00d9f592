"""The node's side of the control protocol: register, heartbeat, lease tasks, run them,
report progress (which renews the lease) and completion.

A node keeps nothing it cannot lose: a task's progress lives in its checkpoint at the
control plane, its data in the repository. On SIGTERM the node hands its tasks back
(reason "node-stopping") so they resume elsewhere from their watermark at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import grpc
import structlog

from dr_common import __version__
from dr_common.errors import DRError, as_dr_error, first_error
from dr_common.proto.dr.v1 import common_pb2, nodes_pb2, nodes_pb2_grpc
from dr_node import metrics, tasks
from dr_node.bandwidth import TokenBucket
from dr_node.config import NodeConfig
from dr_node.engine import Checkpoint, Engine, Stats
from dr_node.tasks.base import TaskContext, check_known
from dr_node.transfer import server as transfer_server
from dr_node.transfer.client import Pairs

log = structlog.get_logger()

RELEASED = "node-stopping"  # the coordinator requeues these without using an attempt
ACQUIRE_WAIT_SECONDS = 5


class LeaseLost(Exception):
    """The control plane gave this task to another holder: stop without reporting."""


class Cancelled(DRError):
    reason = "cancelled"


class Released(DRError):
    """The node is draining: the task goes back to the queue (reason "node-stopping",
    no attempt used) and resumes on another node from its checkpoint."""

    reason = RELEASED
    retryable = True


def spec_of(task: nodes_pb2.Task):
    """The task's spec message (None if it has none: the handler lookup then fails the
    task with a clear error)."""
    which = task.WhichOneof("spec")
    return getattr(task, which) if which else None


class Reporter:
    """Sends a task's progress; learns of lost leases, cancellations, and changes to the
    plan's bandwidth cap (applied to `bandwidth` at once)."""

    def __init__(self, stub: nodes_pb2_grpc.NodeServiceStub, task: nodes_pb2.Task):
        self.stub = stub
        self.task = task
        self.bandwidth = TokenBucket(getattr(spec_of(task), "bandwidth_bytes_per_second", 0))

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
                    tasks=list(self.running),
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
        spec = spec_of(task)
        structlog.contextvars.bind_contextvars(task=task.name, kind=task.kind,
                                               disk=getattr(spec, "disk", ""),
                                               plan=getattr(spec, "plan", ""))
        reporter = Reporter(self.stub, task)
        req = nodes_pb2.CompleteTaskRequest(task=task.name, lease_token=task.lease_token)
        log.info("task started")
        started = time.monotonic()
        try:
            check_known(task)
            await tasks.handler(task)(TaskContext(
                task=task, spec=spec, config=self.config, engine=self.engine,
                pairs=self.pairs, reporter=reporter, result=req))
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
            dr = as_dr_error(err)
            req.error.CopyFrom(common_pb2.TaskError(
                reason=dr.reason, message=dr.message, retryable=dr.retryable))
            if isinstance(err, Released):
                log.info("task handed back: the node is draining")
                outcome = "released"
            else:
                if isinstance(err, DRError):
                    log.warning("task failed", reason=dr.reason, message=dr.message)
                else:
                    log.error("task failed", reason=dr.reason, exc_info=err)
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
