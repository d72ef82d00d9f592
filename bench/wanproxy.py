"""A user-space WAN emulator: a TCP proxy that adds latency, caps bandwidth, resets
connections and corrupts bytes, for benchmarking and testing replication over a WAN.

Why user space: the kernel on our build and test machines has no `netem` qdisc
(../shared/PEERS.md, "Networks"), so latency and faults cannot be injected with `tc`.
A proxy in front of the target node sees the same bytes the kernel would (plaintext or
TLS gRPC, it does not care) and can do everything we need:

- latency: each direction is a pipe, bytes read at time t are written at t + rtt/2, and
  the proxy keeps reading meanwhile, so throughput is not limited to one buffer per RTT;
- bandwidth: one token bucket per direction shared by all connections, like one WAN
  link shaped by `tbf`;
- resets: per `reset_every_bytes` sent client->server, with `reset_probability` both
  sockets of the connection are aborted with RST;
- corruption: `corrupt(marker)` flips one byte inside the next occurrence of `marker` in
  the client->server stream (a chunk payload the test wrote on purpose), which breaks
  the payload's checksum without breaking HTTP/2 framing.

Because TCP terminates at the proxy, the kernel's windows see loopback RTTs; what the
emulated RTT constrains is end-to-end, application-level flow control (gRPC/HTTP/2
windows, request/response round trips), which is what we want to measure.

Use it from asyncio (`async with WanProxy(host, port, rtt=0.05) as p: ... p.port`),
from sync code (`p = WanProxy.start_in_thread(host, port, ...)`, `p.close()`), or as a
process: `python -m bench.wanproxy --upstream HOST:PORT --rtt-ms 50 --rate-mbit 200`,
which prints its port on stdout and runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import random
import signal
import socket
import struct
import sys
import threading

KiB = 1 << 10
MiB = 1 << 20

# Largest single read: big enough that the proxy costs little CPU per byte (> 100 MB/s on
# one core), small enough that one read is ~10 ms at 200 Mbit/s, so pacing stays smooth.
READ_SIZE = 256 * KiB
# Token bucket depth: a burst this large passes at full speed, so over 1 s the cap is
# accurate to ~0.3 % at 200 Mbit/s (tbf-like; a big burst would let a short transfer
# beat the cap).
BURST_BYTES = 64 * KiB
# Per-direction queue bound, on top of the bandwidth-delay product: absorbs scheduling
# jitter and a read or two, yet keeps memory small when the receiver stalls.
QUEUE_SLACK_BYTES = 4 * MiB
# With no rate cap the queue must still hold rtt/2 worth of data to keep the pipe full;
# size it for 1 Gbit/s, well above what we emulate and what the proxy itself sustains
# with a comfortable margin at 50 ms.
UNCAPPED_SIZING_RATE = 125_000_000


class _Reset(Exception):
    """The connection was reset on purpose (reset_probability)."""


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close a socket with RST rather than FIN: SO_LINGER 0, then abort. A plain close
    sends FIN, which a peer would take for a clean end of stream."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass  # already closed
    writer.transport.abort()


class TokenBucket:
    """Bytes per second with a small burst, shared by every connection of one direction.

    `take(n)` may drive the bucket into debt and sleeps the debt off, so reads larger
    than the burst work, and concurrent takers queue up behind each other's debt, which
    serialises them at the link rate like one shared link."""

    def __init__(self, rate: float, burst: int = BURST_BYTES):
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp: float | None = None

    async def take(self, n: int) -> None:
        if not self.rate:
            return
        now = asyncio.get_running_loop().time()
        if self._stamp is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= n
        if self._tokens < 0:
            await asyncio.sleep(-self._tokens / self.rate)


class _Pipe:
    """One direction of one connection: what is read at t is written at t + delay.

    `pump` reads, passes bytes through the inspection hook (resets, corruption) and the
    shared token bucket, and queues (due_time, bytes); `deliver` writes them when due.
    When the queue holds `limit` bytes, `pump` stops reading, so a slow receiver pushes
    back on the sender through TCP instead of growing our memory."""

    def __init__(self, reader, writer, delay: float, bucket: TokenBucket, limit: int,
                 inspect, on_sent):
        self.reader = reader
        self.writer = writer
        self.delay = delay
        self.bucket = bucket
        self.limit = limit
        self.inspect = inspect
        self.on_sent = on_sent
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.queued = 0
        self.peak = 0
        self._ready = asyncio.Event()
        self._room = asyncio.Event()

    async def pump(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await self.reader.read(READ_SIZE)
            if data:
                data = self.inspect(data)
                await self.bucket.take(len(data))
                while self.queue and self.queued + len(data) > self.limit:
                    self._room.clear()
                    await self._room.wait()
            self.queue.append((loop.time() + self.delay, data or None))
            self.queued += len(data)
            self.peak = max(self.peak, self.queued)
            self._ready.set()
            if not data:
                return  # EOF queued: delivered after the same delay as the data

    async def deliver(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.queue:
                self._ready.clear()
                await self._ready.wait()
            wait = self.queue[0][0] - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            # Everything due by now goes out in one write (after a slow drain, that may
            # be a lot): fewer syscalls and wakeups per byte.
            now, batch, eof = loop.time(), [], False
            while self.queue and self.queue[0][0] <= now:
                data = self.queue.popleft()[1]
                if data is None:
                    eof = True
                    break
                batch.append(data)
            n = sum(map(len, batch))
            if batch:
                self.writer.writelines(batch)
                self.queued -= n
                self._room.set()
                self.on_sent(n)
                await self.writer.drain()
            if eof:
                if self.writer.can_write_eof():
                    self.writer.write_eof()
                return


class _Connection:
    """A client connection and its upstream connection, joined by two pipes."""

    def __init__(self, proxy: WanProxy, client, upstream):
        self.proxy = proxy
        (self.c_reader, self.c_writer), (self.u_reader, self.u_writer) = client, upstream
        self.up_since_roll = 0  # client->server bytes since the last reset roll
        self.tail = b""  # end of the previous client->server read, for split markers
        p = proxy
        self.up = _Pipe(self.c_reader, self.u_writer, p.rtt / 2, p._bucket_up, p.queue_limit,
                        self._inspect_up, p._count_up)
        self.down = _Pipe(self.u_reader, self.c_writer, p.rtt / 2, p._bucket_down,
                          p.queue_limit, lambda data: data, p._count_down)

    def abort(self) -> None:
        _abort(self.c_writer)
        _abort(self.u_writer)

    async def run(self) -> None:
        """Forward until both directions reach EOF (then close cleanly); on any error, a
        reset, or cancellation, abort both sockets so each peer sees the link die."""
        tasks = [asyncio.create_task(coro) for coro in (
            self.up.pump(), self.up.deliver(), self.down.pump(), self.down.deliver())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            if any(t.exception() for t in done):
                self.abort()
            else:
                self.c_writer.close()
                self.u_writer.close()
        except BaseException:
            self.abort()
            raise
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _inspect_up(self, data: bytes) -> bytes:
        data = self._corrupt(data)
        p = self.proxy
        self.up_since_roll += len(data)
        while self.up_since_roll >= p.reset_every_bytes:
            self.up_since_roll -= p.reset_every_bytes
            if p.reset_probability and p._rng.random() < p.reset_probability:
                p.resets += 1
                self.abort()
                raise _Reset()
        return data

    def _corrupt(self, data: bytes) -> bytes:
        """Flip the *last* byte of each armed marker occurrence. An occurrence that
        spans two reads always ends in the current one, so the byte to flip has not
        been queued yet, and keeping len(marker) - 1 bytes of tail finds it."""
        p = self.proxy
        marker = p._marker
        if not p._corrupt_left or not marker:
            self.tail = b""
            return data
        buf = bytearray(self.tail + data)
        skip = len(self.tail)
        start = 0
        while p._corrupt_left:
            i = buf.find(marker, start)
            if i < 0:
                break
            last = i + len(marker) - 1
            buf[last] ^= 0xFF
            p._corrupt_left -= 1
            p.corruptions += 1
            start = last + 1
        self.tail = bytes(buf[-(len(marker) - 1):]) if len(marker) > 1 else b""
        return bytes(buf[skip:])


class WanProxy:
    """An emulated WAN link in front of `upstream_host:upstream_port`.

    rtt: round-trip latency added, in seconds (rtt/2 each way).
    rate_bytes_per_second: cap per direction for all connections together; 0 = none.
    reset_probability, reset_every_bytes: the chance of resetting a connection per
        that many client->server bytes.
    seed: for the reset dice, so a failing run can be replayed.
    queue_limit: bytes queued per direction per connection before the proxy stops
        reading; default a few MiB plus the bandwidth-delay product.

    Counters: bytes_up (client->server), bytes_down, connections (accepted), resets,
    corruptions.
    """

    def __init__(self, upstream_host: str, upstream_port: int, *,
                 listen_host: str = "127.0.0.1", listen_port: int = 0, rtt: float = 0.0,
                 rate_bytes_per_second: float = 0, reset_probability: float = 0.0,
                 reset_every_bytes: int = 65536, seed: int | None = None,
                 queue_limit: int | None = None):
        if reset_every_bytes <= 0:
            raise ValueError("reset_every_bytes must be positive")
        self.upstream_host, self.upstream_port = upstream_host, upstream_port
        self.listen_host, self.port = listen_host, listen_port
        self.rtt = rtt
        self.rate = rate_bytes_per_second
        self.reset_probability = reset_probability
        self.reset_every_bytes = reset_every_bytes
        if queue_limit is None:
            queue_limit = QUEUE_SLACK_BYTES + int((self.rate or UNCAPPED_SIZING_RATE) * rtt / 2)
        self.queue_limit = max(queue_limit, READ_SIZE)
        self.bytes_up = self.bytes_down = 0
        self.connections = self.resets = self.corruptions = 0
        self._rng = random.Random(seed)
        self._bucket_up = TokenBucket(self.rate)
        self._bucket_down = TokenBucket(self.rate)
        self._marker = b""
        self._corrupt_left = 0
        self._server: asyncio.Server | None = None
        self._conns: set[_Connection] = set()
        self._tasks: set[asyncio.Task] = set()

    # -- control --

    def corrupt(self, marker: bytes, count: int = 1) -> None:
        """Flip one byte (xor 0xFF) inside each of the next `count` occurrences of
        `marker` in the client->server stream of any connection."""
        if not marker:
            raise ValueError("empty marker")
        self._marker, self._corrupt_left = bytes(marker), count

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting in the delay queues right now, all connections."""
        return sum(c.up.queued + c.down.queued for c in self._conns)

    @property
    def peak_queued(self) -> int:
        """The most any open connection's queue has held (compare with queue_limit)."""
        return max((max(c.up.peak, c.down.peak) for c in self._conns), default=0)

    def _count_up(self, n: int) -> None:
        self.bytes_up += n

    def _count_down(self, n: int) -> None:
        self.bytes_down += n

    # -- lifecycle --

    async def start(self) -> WanProxy:
        self._server = await asyncio.start_server(
            self._serve, self.listen_host, self.port, limit=READ_SIZE)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening and abort every open connection (both ends see a reset, as
        if the link died); returns when no task of ours is left running."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> WanProxy:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _serve(self, c_reader, c_writer) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        self.connections += 1
        try:
            try:
                upstream = await asyncio.open_connection(
                    self.upstream_host, self.upstream_port, limit=READ_SIZE)
            except OSError:
                _abort(c_writer)
                return
            conn = _Connection(self, (c_reader, c_writer), upstream)
            self._conns.add(conn)
            try:
                await conn.run()
            finally:
                self._conns.discard(conn)
        except asyncio.CancelledError:
            _abort(c_writer)  # closing: cancellation ends here, not in asyncio's callback
        finally:
            self._tasks.discard(task)

    # -- for sync callers --

    @classmethod
    def start_in_thread(cls, *args, **kwargs) -> ThreadedWanProxy:
        """Start a proxy on its own event loop in a daemon thread; for sync code such
        as tests that drive subprocess daemons. Same arguments as the constructor."""
        return ThreadedWanProxy(cls(*args, **kwargs))


class ThreadedWanProxy:
    """A WanProxy running in a background thread. Counters and `port` read through to
    the proxy; `corrupt()` and `close()` run on the proxy's loop."""

    def __init__(self, proxy: WanProxy):
        self.proxy = proxy
        self._loop = asyncio.new_event_loop()
        started: concurrent.futures.Future = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(started,),
                                        name=f"wanproxy-{proxy.upstream_port}", daemon=True)
        self._thread.start()
        started.result()  # re-raises a failure to listen

    def _run(self, started) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.proxy.start())
        except BaseException as e:
            started.set_exception(e)
            self._loop.close()
            return
        started.set_result(None)
        self._loop.run_forever()
        self._loop.close()

    def __getattr__(self, name):
        return getattr(self.proxy, name)

    def corrupt(self, marker: bytes, count: int = 1) -> None:
        self._call(self.proxy.corrupt, marker, count)

    def _call(self, fn, *args):
        async def call():
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(call(), self._loop).result()

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.proxy.close(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()

    def __enter__(self) -> ThreadedWanProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.wanproxy", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", type=_host_port, default=("127.0.0.1", 0),
                    help="HOST:PORT to listen on (port 0: any; default 127.0.0.1:0)")
    ap.add_argument("--upstream", type=_host_port, required=True, help="HOST:PORT")
    ap.add_argument("--rtt-ms", type=float, default=0.0, help="round-trip latency to add")
    ap.add_argument("--rate-mbit", type=float, default=0.0,
                    help="cap per direction, Mbit/s (10^6 bits); 0 = none")
    ap.add_argument("--reset-probability", type=float, default=0.0,
                    help="chance of a reset per --reset-every-bytes client->server bytes")
    ap.add_argument("--reset-every-bytes", type=int, default=65536)
    ap.add_argument("--corrupt-marker", type=bytes.fromhex, metavar="HEX",
                    help="flip one byte in occurrences of these bytes (client->server)")
    ap.add_argument("--corrupt-count", type=int, default=1)
    ap.add_argument("--seed", type=int)
    args = ap.parse_args(argv)
    return asyncio.run(_serve_cli(args))


async def _serve_cli(args) -> int:
    proxy = WanProxy(*args.upstream, listen_host=args.listen[0], listen_port=args.listen[1],
                     rtt=args.rtt_ms / 1000, rate_bytes_per_second=args.rate_mbit * 1e6 / 8,
                     reset_probability=args.reset_probability,
                     reset_every_bytes=args.reset_every_bytes, seed=args.seed)
    if args.corrupt_marker:
        proxy.corrupt(args.corrupt_marker, args.corrupt_count)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with proxy:
        print(proxy.port, flush=True)
        await stop.wait()
    print(f"wanproxy: connections={proxy.connections} bytes_up={proxy.bytes_up} "
          f"bytes_down={proxy.bytes_down} resets={proxy.resets} "
          f"corruptions={proxy.corruptions}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
