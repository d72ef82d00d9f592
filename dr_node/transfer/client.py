"""The source node's side of a pair: connections to target nodes, and the RemoteSink.

`RemoteSink` is a Sink (dr_common.targets.base) whose chunks go to the paired target node over
one gRPC stream per disk; the engine drives it like any other sink, so windows, the
byte budget, the bandwidth cap, resume and probing all work unchanged across the hop.
The target node decides how much may be in flight (credits); `put` waits for credits,
sends, and returns when the target acknowledges the write. A chunk the target rejects
(damaged on the wire) is sent again.

`Pairs` holds the HTTP/2 connections to each target node: `connections` channels per
target (disks spread over them by name), each with its own TCP connection, so one slow
disk or one broken connection does not stall the others. It also keeps the health
figures reported in heartbeats (PairHealth).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from dataclasses import dataclass, field

import grpc
import structlog

from dr_common import tls
from dr_common.errors import DRError
from dr_common.proto.dr.v1 import nodes_pb2, transfer_pb2, transfer_pb2_grpc
from dr_common.repository import chunk_id as keyed_chunk_id
from dr_node import metrics
from dr_node.config import NodeConfig
from dr_common.targets.base import Checkpoint, SinkResult
from dr_common.targets.repository import encode_for_repository
from dr_node.transfer import MAX_MESSAGE_BYTES, PAIR_DISCONNECTED, error_from_rpc, split_ids
from dr_node.transfer.credits import CreditGate

log = structlog.get_logger()

# A chunk rejected this many times in a row is not a flipped bit on the wire: the
# source is reading something unstable, or a node is broken. Fail the task.
MAX_REJECTS = 5
# Seconds between round-trip measurements on an open stream.
PING_SECONDS = 5.0


@dataclass
class _PairStats:
    node: str
    address: str
    streams: int = 0
    rtt: float = 0.0
    acked_bytes: int = 0
    errors: int = 0
    gates: set[CreditGate] = field(default_factory=set)  # of each open stream
    _last_bytes: int = 0
    _last_time: float = 0.0

    def observe_rtt(self, seconds: float) -> None:
        self.rtt = seconds if not self.rtt else 0.8 * self.rtt + 0.2 * seconds
        metrics.TRANSFER_RTT.labels(pair=self.node).set(self.rtt)


class Pairs:
    """The source node's connections to its paired target nodes."""

    def __init__(self, config: NodeConfig):
        self.config = config
        # (address, certificate name) -> its channels: a channel checks one name.
        self._channels: dict[tuple[str, str], list[grpc.aio.Channel]] = {}
        self._stats: dict[str, _PairStats] = {}

    @staticmethod
    def _tls_name(node: str, tls_name: str) -> str:
        return tls_name or node.rsplit("/", 1)[-1]

    def channel(self, node: str, address: str, disk: str, tls_name: str = "") -> grpc.aio.Channel:
        """A channel to the target node `node` at `address`, whose certificate must bear
        `tls_name` (default: the node id)."""
        key = (address, self._tls_name(node, tls_name))
        chans = self._channels.get(key)
        if chans is None:
            chans = self._channels[key] = [
                self._open(node, address, key[1])
                for _ in range(max(1, self.config.transfer.connections))]
        return chans[zlib.crc32(disk.encode()) % len(chans)]

    def _open(self, node: str, address: str, tls_name: str = "") -> grpc.aio.Channel:
        options = [
            # A channel of its own per connection: without this, channels with the same
            # target share one subchannel, i.e. one TCP connection.
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Notice a dead peer (a cut WAN link) within a minute, not a TCP timeout.
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.keepalive_permit_without_calls", 0),
        ]
        if not self.config.tls_ca_file:
            return grpc.aio.insecure_channel(address, options=options)
        # The target must show a certificate of our CA bearing the name the control plane
        # authenticated the node it paired us with by (its node id, or the prefix of a
        # certificate its pods share): a node of another CA, or another node, is not our pair.
        options.append(("grpc.ssl_target_name_override", self._tls_name(node, tls_name)))
        return grpc.aio.secure_channel(address, tls.channel_credentials(
            self.config.tls_ca_file, self.config.tls_cert_file, self.config.tls_key_file),
            options=options)

    def stats(self, node: str, address: str) -> _PairStats:
        st = self._stats.get(address)
        if st is None or st.node != node:
            st = self._stats[address] = _PairStats(node, address)
        return st

    def health(self) -> list[nodes_pb2.PairHealth]:
        """Each pair's figures; throughput is over the time since the previous call."""
        now = time.monotonic()
        out = []
        for st in self._stats.values():
            elapsed = now - st._last_time if st._last_time else 0.0
            rate = (st.acked_bytes - st._last_bytes) / elapsed if elapsed > 0 else 0.0
            st._last_bytes, st._last_time = st.acked_bytes, now
            out.append(nodes_pb2.PairHealth(
                node=st.node, address=st.address, streams=st.streams, rtt_seconds=st.rtt,
                throughput_bytes_per_second=rate, errors=st.errors,
                credit_bytes=sum(g.available for g in st.gates)))
        return out

    async def close(self) -> None:
        for chans in self._channels.values():
            for ch in chans:
                await ch.close()
        self._channels.clear()


class RemoteSink:
    """A disk's chunks streamed to the paired target node, written there to a repository."""

    can_probe = True
    writes_zeros = False
    full_sync_reason = ""
    # The target node paces this sink with credits: the engine adds no limiter of its own.
    paced = True

    def __init__(self, pairs: Pairs, *, node: str, address: str, open_disk: transfer_pb2.OpenDisk,
                 connect_timeout: float, tls_name: str = ""):
        self.pairs = pairs
        self.node = node
        self.address = address
        # The name the target's certificate must bear ("": the node id of `node`).
        self.tls_name = tls_name
        self.open_disk = open_disk
        self.disk = open_disk.disk
        self.compression = open_disk.compression or "none"
        self.connect_timeout = connect_timeout
        self.name = f"pair:{node}"
        self.has_previous = False
        self.gate = CreditGate()
        self._stats = pairs.stats(node, address)
        self._call = None
        self._reader: asyncio.Task | None = None
        self._pinger: asyncio.Task | None = None
        self._write_lock = asyncio.Lock()
        self._acks: dict[int, asyncio.Future] = {}
        self._calls: dict[int, asyncio.Future] = {}
        self._call_ids = 0
        self._broken: DRError | None = None
        self._key = b""
        self._segment_chunks = 0
        self._prev_segment: tuple[int, list[bytes]] | None = None
        self._next = 0
        self.chunks_acked = 0  # chunks the target acknowledged on this stream

    # -- the stream ----------------------------------------------------------------

    async def __aenter__(self) -> RemoteSink:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def begin(self, checkpoint: Checkpoint | None) -> int:
        req = transfer_pb2.OpenDisk()
        req.CopyFrom(self.open_disk)
        if checkpoint is not None:
            req.checkpoint.watermark_chunk = checkpoint.watermark_chunk
            req.checkpoint.segments.extend(checkpoint.segments)
            req.checkpoint.tail = checkpoint.tail
        stub = transfer_pb2_grpc.TransferServiceStub(
            self.pairs.channel(self.node, self.address, self.disk, self.tls_name))
        # wait_for_ready: a target node that is restarting gets `connect_timeout` to come
        # back before the task fails (and is retried from its checkpoint).
        self._call = stub.Transfer(wait_for_ready=True)
        t0 = time.monotonic()
        async def opening():
            # Both wait while the connection is not ready: both are under the timeout.
            await self._call.write(transfer_pb2.TransferRequest(open=req))
            return await self._call.read()

        try:
            resp = await asyncio.wait_for(opening(), self.connect_timeout)
        except TimeoutError:
            self._call.cancel()
            self._stats.errors += 1
            raise DRError(f"paired target node {self.node} at {self.address} did not answer "
                          f"within {self.connect_timeout:g} s; is it running and reachable?",
                          reason="pair-unavailable", retryable=True) from None
        except grpc.aio.AioRpcError as e:
            self._stats.errors += 1
            raise error_from_rpc(e, self.node) from None
        if resp is grpc.aio.EOF or resp.WhichOneof("body") != "opened":
            raise DRError(f"paired target node {self.node} answered `open` with "
                          f"{resp if resp is grpc.aio.EOF else resp.WhichOneof('body')}",
                          reason="pair-refused", retryable=True)
        self._stats.observe_rtt(time.monotonic() - t0)
        opened = resp.opened
        self.has_previous = opened.has_previous
        self._key = opened.chunk_id_key
        self._segment_chunks = opened.segment_chunks
        self._next = opened.start_chunk
        await self.gate.grant(opened.credit_limit_bytes)
        self._stats.streams += 1
        self._stats.gates.add(self.gate)
        metrics.TRANSFER_STREAMS.labels(side="source").inc()
        self._reader = asyncio.create_task(self._read())
        self._pinger = asyncio.create_task(self._ping())
        log.info("transfer stream opened", pair=self.node, address=self.address,
                 start_chunk=opened.start_chunk, credit_bytes=opened.credit_limit_bytes)
        return opened.start_chunk

    async def _read(self) -> None:
        try:
            while True:
                resp = await self._call.read()
                if resp is grpc.aio.EOF:
                    raise DRError(f"paired target node {self.node} ended the stream early",
                                  reason=PAIR_DISCONNECTED, retryable=True)
                kind = resp.WhichOneof("body")
                if kind == "ack":
                    fut = self._acks.pop(resp.ack.index, None)
                    if fut is not None and not fut.done():
                        fut.set_result(resp.ack)
                elif kind == "reply":
                    fut = self._calls.pop(resp.reply.call_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(resp.reply)
                        if resp.reply.WhichOneof("body") == "finished":
                            return
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as e:
            await self._fail(error_from_rpc(e, self.node))
        except DRError as e:
            await self._fail(e)

    async def _fail(self, err: DRError) -> None:
        if self._broken is None:
            self._broken = err
            self._stats.errors += 1
            metrics.TRANSFER_ERRORS.labels(side="source", reason=err.reason).inc()
            log.warning("transfer stream broke", pair=self.node, reason=err.reason,
                        message=err.message)
        for fut in [*self._acks.values(), *self._calls.values()]:
            if not fut.done():
                fut.set_exception(err)
                fut.exception()  # its awaiter may be gone (cancelled): no "never retrieved"
        self._acks.clear()
        self._calls.clear()
        await self.gate.break_(err)

    async def _send(self, req: transfer_pb2.TransferRequest) -> None:
        if self._broken is not None:
            raise self._broken
        try:
            async with self._write_lock:  # one write at a time on a gRPC stream
                await self._call.write(req)
        except grpc.aio.AioRpcError as e:
            await self._fail(error_from_rpc(e, self.node))
            raise self._broken from None
        except asyncio.InvalidStateError:  # the call already ended
            raise self._broken or DRError("the transfer stream is closed",
                                          reason=PAIR_DISCONNECTED, retryable=True) from None

    async def _invoke(self, **body) -> transfer_pb2.CallReply:
        self._call_ids += 1
        call_id = self._call_ids
        fut = asyncio.get_running_loop().create_future()
        self._calls[call_id] = fut
        t0 = time.monotonic()
        await self._send(transfer_pb2.TransferRequest(
            call=transfer_pb2.Call(call_id=call_id, **body)))
        reply = await fut
        if "ping" in body:  # other calls include work at the target, not just the trip
            self._stats.observe_rtt(time.monotonic() - t0)
        return reply

    async def _ping(self) -> None:
        with contextlib.suppress(DRError):
            while True:
                await asyncio.sleep(PING_SECONDS)
                await self._invoke(ping=True)

    async def close(self) -> None:
        for t in (self._pinger, self._reader):
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, DRError):
                    await t
        if self._call is not None:
            self._call.cancel()
            self._call = None
        if self._reader is not None:
            self._stats.streams -= 1
            self._stats.gates.discard(self.gate)
            metrics.TRANSFER_STREAMS.labels(side="source").dec()
            self._reader = None

    # -- Sink ----------------------------------------------------------------------

    async def previous_id(self, index: int) -> bytes | None:
        if not self.has_previous:
            return None
        seg = index // self._segment_chunks
        if self._prev_segment is None or self._prev_segment[0] != seg:
            blob = (await self._invoke(previous_segment=seg)).ids
            # Only the current segment is kept: memory stays bounded on huge disks.
            self._prev_segment = (seg, split_ids(blob))
        return self._prev_segment[1][index - seg * self._segment_chunks]

    def encode(self, frame, length, prev_id):
        return encode_for_repository(self._chunk_id, frame, length, prev_id, self.compression)

    def _chunk_id(self, data) -> bytes:
        return keyed_chunk_id(self._key, data)

    async def stored_before(self, cid: bytes) -> bool:
        return (await self._invoke(probe_id=cid)).stored

    async def put(self, index: int, cid: bytes, blob) -> bool:
        data = bytes(blob)  # protobuf needs bytes; the frame goes back to the pool
        n = len(data)
        for _ in range(MAX_REJECTS):
            await self.gate.take(n)
            fut = asyncio.get_running_loop().create_future()
            self._acks[index] = fut
            metrics.TRANSFER_INFLIGHT.labels(side="source").inc(n)
            try:
                await self._send(transfer_pb2.TransferRequest(
                    chunk=transfer_pb2.ChunkData(index=index, id=cid, data=data)))
                ack = await fut
            finally:
                metrics.TRANSFER_INFLIGHT.labels(side="source").dec(n)
            await self.gate.grant(ack.credit_limit_bytes, acked=n)
            self._stats.acked_bytes += n
            metrics.TRANSFER_CHUNKS.labels(side="source", outcome=ack.outcome).inc()
            metrics.TRANSFER_BYTES.labels(side="source").inc(n)
            if ack.outcome != "rejected":
                self.chunks_acked += 1
                return ack.outcome == "stored"
            self._stats.errors += 1
            log.warning("the target node rejected a chunk damaged in transit; sending it "
                        "again", index=index, pair=self.node)
        raise DRError(f"chunk {index} of disk {self.disk} arrived damaged at {self.node} "
                      f"{MAX_REJECTS} times in a row; check the network path and both nodes",
                      reason="corrupt-transfer", retryable=True)

    async def put_zero(self, index: int, length: int) -> None:
        raise AssertionError("a repository records zeros, it never writes them")

    async def add(self, ids: list[bytes]) -> None:
        await self._send(transfer_pb2.TransferRequest(
            commit=transfer_pb2.CommitIds(ids=b"".join(ids))))
        self._next += len(ids)

    @property
    def next_chunk(self) -> int:
        return self._next

    async def checkpoint(self) -> Checkpoint:
        cp = (await self._invoke(checkpoint=True)).checkpoint
        return Checkpoint(cp.watermark_chunk, list(cp.segments), cp.tail)

    async def finish(self) -> SinkResult:
        done = (await self._invoke(finish=True)).finished
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await self._call.done_writing()
        return SinkResult(size=done.size_bytes, root_hash=done.root_hash)
