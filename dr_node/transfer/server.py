"""The target node's side of a pair: the TransferService (proto/dr/v1/transfer.proto).

Each stream writes one disk through the sink of an ordinary repository target
(dr_common.targets.open_target, then Target.sink), so what lands in the
repository is exactly what a direct replication would write. Per chunk: check the
credits (a source that overruns them is cut off), hold its bytes under this node's
byte budget, check that its content matches its id (damage on the wire is answered
"rejected" and the source sends it again), write it, acknowledge it and extend the
credits. Chunks are written concurrently and acknowledged as they finish; commits,
checkpoints and the finish come in stream order after the acknowledgements they
depend on, because the source sends them only then. An acknowledged chunk is written;
it is synced before any checkpoint that covers it, as in a direct replication.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import grpc
import structlog

from dr_common import tls
from dr_common import grpc_errors
from dr_common.errors import InvalidArgument, as_dr_error, first_error
from dr_common.proto.dr.v1 import common_pb2, transfer_pb2, transfer_pb2_grpc
from dr_common.repository import CHUNK_OVERHEAD, ID_SIZE, SEGMENT_CHUNKS
from dr_common import targets
from dr_common.targets.base import Checkpoint, SinkRequest, Target
from dr_common.targets.repository import RepositorySink
from dr_node import metrics
from dr_node.config import NodeConfig
from dr_node.transfer import MAX_MESSAGE_BYTES, split_ids
from dr_node.transfer.credits import CreditWindow

log = structlog.get_logger()

_END = object()


def _ids(blob: bytes, what: str) -> list[bytes]:
    if len(blob) % ID_SIZE:
        raise InvalidArgument(f"{what}: {len(blob)} bytes is not a whole number of ids")
    return split_ids(blob)


class _DiskStream:
    """One disk's stream at the target node."""

    def __init__(self, config: NodeConfig, engine, peer: str, open_target,
                 share: Callable[[], int]):
        self.share = share  # this stream's part of the node's byte budget (credits)
        self.config = config
        self.engine = engine
        self.peer = peer
        self.open_target = open_target
        self.out: asyncio.Queue = asyncio.Queue()
        self.writes: set[asyncio.Task] = set()
        self.sink: RepositorySink | None = None
        self.credits: CreditWindow | None = None
        self.target: Target | None = None
        self.repo = None
        self.previous = None

    async def open(self, req: transfer_pb2.OpenDisk) -> transfer_pb2.DiskOpened:
        if not req.task or not req.lease_token:
            raise InvalidArgument("a transfer stream needs its task and lease token",
                                  field="open.task")
        if not req.chunk_size_bytes or not req.size_bytes:
            raise InvalidArgument("size_bytes and chunk_size_bytes must be positive",
                                  field="open.chunk_size_bytes")
        structlog.contextvars.bind_contextvars(task=req.task, disk=req.disk, peer=self.peer)
        kind = targets.kind(targets.kind_of(req.target), field="open.target")
        if not kind.repository:
            # Chunk ids, probes and previous segments are the repository format's; a
            # target of its own format (EBS) is written by the source node directly.
            raise InvalidArgument(
                f"a paired target node writes repository targets; a {kind.name} target "
                "is written by the source node directly", field="open.target")
        self.target = await self.open_target(
            req.target, self.engine.target_env(self.config.file_roots))
        self.repo = self.target.repository
        self.sink = await self.target.sink(SinkRequest(
            plan="", cycle="", disk=req.disk, size=req.size_bytes,
            chunk_size=req.chunk_size_bytes, compression=req.compression or "none",
            previous_root_hash=req.previous_root_hash))
        self.previous = self.sink.previous
        cp = req.checkpoint if req.HasField("checkpoint") else None
        start = await self.sink.begin(
            Checkpoint(cp.watermark_chunk, list(cp.segments), cp.tail)
            if cp and cp.watermark_chunk else None)
        t = self.config.transfer
        self.credits = CreditWindow(
            f"pair:{req.disk}", chunk_bytes=req.chunk_size_bytes + CHUNK_OVERHEAD,
            window_bytes=t.window_bytes, min_window_bytes=t.min_window_bytes,
            max_window_bytes=t.max_window_bytes, share=self.share)
        log.info("transfer stream opened", lease_token=req.lease_token, start_chunk=start,
                 previous=bool(self.previous), window_bytes=self.credits.window_bytes)
        return transfer_pb2.DiskOpened(
            start_chunk=start, has_previous=self.previous is not None,
            chunk_id_key=self.repo.chunk_id_key(),
            segment_chunks=self.previous.segment_chunks if self.previous else SEGMENT_CHUNKS,
            credit_limit_bytes=self.credits.limit)

    async def chunk(self, msg: transfer_pb2.ChunkData) -> None:
        n = len(msg.data)
        self.credits.receive(n)
        metrics.TRANSFER_INFLIGHT.labels(side="target").inc(n)
        taken = await self.engine.budget.acquire(n)
        task = asyncio.create_task(self._write(msg, n, taken))
        self.writes.add(task)
        task.add_done_callback(self.writes.discard)

    async def _write(self, msg: transfer_pb2.ChunkData, n: int, taken: int) -> None:
        t0 = time.monotonic()
        try:
            ok = await asyncio.get_running_loop().run_in_executor(
                self.engine.pool, self.repo.check_chunk, msg.id, msg.data)
            if not ok:
                outcome = "rejected"
                log.warning("chunk damaged in transit: its content does not match its id; "
                            "asking for it again", index=msg.index)
            else:
                # Not retried here: a failed write ends the stream, which the source
                # resumes from its checkpoint (remote stores retry below the sink).
                stored = await self.sink.put(msg.index, msg.id, msg.data)
                outcome = "stored" if stored else "deduplicated"
        except Exception as e:  # noqa: BLE001 - ends the stream with the target's error
            self.out.put_nowait(e)
            return
        finally:
            self.engine.budget.release(taken)
            metrics.TRANSFER_INFLIGHT.labels(side="target").dec(n)
        metrics.TRANSFER_CHUNKS.labels(side="target", outcome=outcome).inc()
        metrics.TRANSFER_BYTES.labels(side="target").inc(n)
        limit = self.credits.complete(n, latency=time.monotonic() - t0)
        # Written, not yet synced: like a direct write, the chunk is made durable before
        # any checkpoint or finish that covers it (those are calls on this stream).
        self.out.put_nowait(transfer_pb2.TransferResponse(ack=transfer_pb2.ChunkAck(
            index=msg.index, outcome=outcome, credit_limit_bytes=limit)))

    async def call(self, call: transfer_pb2.Call) -> transfer_pb2.CallReply:
        reply = transfer_pb2.CallReply(call_id=call.call_id)
        kind = call.WhichOneof("body")
        if kind == "previous_segment":
            if self.previous is None:
                raise InvalidArgument("this disk has no previous point to read ids from")
            ids = await self.repo.segment_ids(self.previous, call.previous_segment)
            reply.ids = b"".join(ids)
        elif kind == "probe_id":
            reply.stored = await self.sink.stored_before(call.probe_id)
        elif kind == "checkpoint":
            cp = await self.sink.checkpoint()
            reply.checkpoint.CopyFrom(common_pb2.Checkpoint(
                watermark_chunk=cp.watermark_chunk, segments=cp.segments, tail=cp.tail))
        elif kind == "finish":
            result = await self.sink.finish()
            reply.finished.CopyFrom(transfer_pb2.DiskFinished(
                size_bytes=result.size, root_hash=result.root_hash))
            log.info("transfer stream finished", root_hash=result.root_hash)
        elif kind == "ping":
            reply.pong = True
        else:
            raise InvalidArgument(f"unknown call {kind!r}")
        return reply

    async def serve(self, requests) -> None:
        """Reads the source's messages in order; answers go to `self.out`."""
        try:
            first = await anext(requests, None)
            if first is None or first.WhichOneof("body") != "open":
                raise InvalidArgument("a transfer stream starts with `open`")
            opened = await self.open(first.open)
            self.out.put_nowait(transfer_pb2.TransferResponse(opened=opened))
            async for req in requests:
                kind = req.WhichOneof("body")
                if kind == "chunk":
                    await self.chunk(req.chunk)
                elif kind == "commit":
                    await self.sink.add(_ids(req.commit.ids, "commit"))
                elif kind == "call":
                    reply = await self.call(req.call)
                    self.out.put_nowait(transfer_pb2.TransferResponse(reply=reply))
                    if req.call.WhichOneof("body") == "finish":
                        break
            self.out.put_nowait(_END)
        except BaseException as e:  # noqa: BLE001 - handed to the response stream
            self.out.put_nowait(e)

    async def close(self) -> None:
        for t in list(self.writes):
            t.cancel()
        await asyncio.gather(*self.writes, return_exceptions=True)
        if self.target is not None:
            await self.target.close()
        structlog.contextvars.unbind_contextvars("task", "disk", "peer")


class TransferServicer(transfer_pb2_grpc.TransferServiceServicer):
    """`open_target` opens a stream's target (dr_common.targets.open_target; tests wrap
    its repository's store to slow or fail writes)."""

    def __init__(self, config: NodeConfig, engine, open_target=targets.open_target):
        self.config = config
        self.engine = engine
        self.open_target = open_target
        # The most chunk bytes any stream had received and not yet written, against the
        # largest window it could have granted: what credits promise.
        self.peak_outstanding = 0
        self.open_streams = 0

    def _share(self) -> int:
        return self.engine.budget.capacity // max(1, self.open_streams)

    async def Transfer(self, request_iterator, context: grpc.aio.ServicerContext):
        stream = _DiskStream(self.config, self.engine, context.peer(), self.open_target,
                             self._share)
        reader = asyncio.create_task(stream.serve(request_iterator))
        metrics.TRANSFER_STREAMS.labels(side="target").inc()
        self.open_streams += 1
        try:
            while True:
                item = await stream.out.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    await self._abort(context, item)
                    return
                yield item
        finally:
            self.open_streams -= 1
            metrics.TRANSFER_STREAMS.labels(side="target").dec()
            if stream.credits is not None:
                self.peak_outstanding = max(self.peak_outstanding,
                                            stream.credits.peak_outstanding)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await stream.close()

    async def _abort(self, context: grpc.aio.ServicerContext, exc: BaseException) -> None:
        if isinstance(first_error(exc), asyncio.CancelledError):
            raise first_error(exc)
        err = as_dr_error(exc)
        if err.reason == "internal":
            log.error("transfer stream failed", exc_info=first_error(exc))
        log.warning("transfer stream failed", reason=err.reason, message=err.message)
        metrics.TRANSFER_ERRORS.labels(side="target", reason=err.reason).inc()
        await grpc_errors.abort(context, err)


def server_options() -> list[tuple[str, int]]:
    return [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]


async def start_server(config: NodeConfig, engine, servicer: TransferServicer | None = None
                       ) -> tuple[grpc.aio.Server, int]:
    """The TransferService on `transfer.listen`, with mutual TLS when the node has TLS
    files: only nodes whose certificates the same CA signed may open streams. Returns
    the server and the port bound (`listen` may ask for port 0)."""
    server = grpc.aio.server(options=server_options())
    transfer_pb2_grpc.add_TransferServiceServicer_to_server(
        servicer or TransferServicer(config, engine), server)
    if config.tls_ca_file:
        port = server.add_secure_port(config.transfer.listen, tls.server_credentials(
            config.tls_cert_file, config.tls_key_file, client_ca_file=config.tls_ca_file))
    else:
        port = server.add_insecure_port(config.transfer.listen)
    if not port:
        raise InvalidArgument(f"cannot listen on {config.transfer.listen!r}",
                              field="transfer.listen")
    await server.start()
    log.info("transfer service listening", address=config.transfer.listen, port=port,
             tls=bool(config.tls_ca_file))
    return server, port
