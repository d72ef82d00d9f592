"""The WAN emulator (bench/wanproxy.py) on real loopback sockets: bytes pass unchanged,
latency and the shared rate cap are at least what was asked for, resets and corruption
happen where they should, close() kills the link, and a stalled receiver backpressures
the sender instead of growing the proxy's memory.

Timing assertions are lower bounds (a busy machine only makes things slower), with
generous upper bounds only to catch a proxy that hangs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.wanproxy import READ_SIZE, WanProxy

KiB = 1 << 10
MiB = 1 << 20
HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
MARKER = bytes.fromhex("deadbeef0badf00d5ca1ab1e0ddba115")

pytestmark = pytest.mark.timeout(60)


class Servers:
    """Loopback servers for the proxy to forward to: echo, sink (reads to EOF and
    records what it got) and hold (accepts, never reads). Cancels its handlers on exit
    so no task outlives the test."""

    def __init__(self):
        self.received: list[asyncio.Future[bytes]] = []
        self._tasks: set[asyncio.Task] = set()
        self._servers: list[asyncio.Server] = []

    async def _start(self, handler) -> int:
        async def tracked(reader, writer):
            task = asyncio.current_task()
            self._tasks.add(task)
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.transport.abort()
                self._tasks.discard(task)
        server = await asyncio.start_server(tracked, HOST, 0)
        self._servers.append(server)
        return server.sockets[0].getsockname()[1]

    async def echo(self) -> int:
        async def handle(reader, writer):
            while data := await reader.read(READ_SIZE):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
            await writer.drain()
            await reader.read()  # until the proxy closes its side
        return await self._start(handle)

    async def sink(self) -> int:
        async def handle(reader, writer):
            got = asyncio.get_running_loop().create_future()
            self.received.append(got)
            got.set_result(await reader.read())
        return await self._start(handle)

    async def hold(self) -> int:
        async def handle(reader, writer):
            await asyncio.Event().wait()
        return await self._start(handle)

    async def close(self) -> None:
        for s in self._servers:
            s.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for s in self._servers:
            await s.wait_closed()


@pytest.fixture
async def servers():
    s = Servers()
    yield s
    await s.close()


async def send_all(port: int, data: bytes, piece: int = MiB) -> None:
    """Connect, send `data` in `piece`-sized writes, half-close, and wait for EOF."""
    reader, writer = await asyncio.open_connection(HOST, port)
    for i in range(0, len(data), piece):
        writer.write(data[i:i + piece])
        await writer.drain()
    writer.write_eof()
    await reader.read()
    writer.close()


async def test_bytes_pass_unchanged_both_ways(servers):
    data = random.Random(1).randbytes(20 * MiB)
    async with WanProxy(HOST, await servers.echo(), rtt=0.01) as proxy:
        reader, writer = await asyncio.open_connection(HOST, proxy.port)

        async def send():
            for i in range(0, len(data), MiB):
                writer.write(data[i:i + MiB])
                await writer.drain()
            writer.write_eof()

        async def receive():
            h, n = hashlib.sha256(), 0
            while chunk := await reader.read(MiB):
                h.update(chunk)
                n += len(chunk)
            return h.hexdigest(), n

        async with asyncio.timeout(20):
            _, (digest, n) = await asyncio.gather(send(), receive())
        writer.close()
        assert n == len(data)
        assert digest == hashlib.sha256(data).hexdigest()
        assert proxy.bytes_up == proxy.bytes_down == len(data)
        assert proxy.connections == 1 and proxy.resets == proxy.corruptions == 0


async def test_rtt_is_added_to_each_round_trip(servers):
    async with WanProxy(HOST, await servers.echo(), rtt=0.1) as proxy:
        reader, writer = await asyncio.open_connection(HOST, proxy.port)
        for _ in range(3):
            start = time.monotonic()
            writer.write(b"x")
            assert await asyncio.wait_for(reader.readexactly(1), 5) == b"x"
            elapsed = time.monotonic() - start
            # >= rtt (less a millisecond for timer rounding); < 1 s catches a stall.
            assert 0.099 <= elapsed < 1.0
        writer.close()


async def test_rate_cap(servers):
    """4 MiB at 8 MiB/s takes ~0.49 s (the first 64 KiB burst is free)."""
    data = bytes(4 * MiB)
    async with WanProxy(HOST, await servers.sink(), rate_bytes_per_second=8 * MiB) as proxy:
        start = time.monotonic()
        await asyncio.wait_for(send_all(proxy.port, data), 10)
        elapsed = time.monotonic() - start
    assert await servers.received[0] == data
    assert elapsed >= 0.4


async def test_rate_cap_is_shared_by_connections(servers):
    """Two connections of 2 MiB each share one 8 MiB/s link: together ~0.49 s, not half."""
    half = bytes(2 * MiB)
    async with WanProxy(HOST, await servers.sink(), rate_bytes_per_second=8 * MiB) as proxy:
        start = time.monotonic()
        await asyncio.wait_for(asyncio.gather(send_all(proxy.port, half),
                                              send_all(proxy.port, half)), 10)
        elapsed = time.monotonic() - start
        assert proxy.connections == 2 and proxy.bytes_up == 4 * MiB
    assert elapsed >= 0.4


async def test_reset_with_probability_one(servers):
    every = 64 * KiB
    async with WanProxy(HOST, await servers.echo(), reset_probability=1.0,
                        reset_every_bytes=every, seed=7) as proxy:
        reader, writer = await asyncio.open_connection(HOST, proxy.port)
        got = 0
        with pytest.raises(ConnectionError):
            async with asyncio.timeout(10):
                writer.write(bytes(4 * MiB))
                await writer.drain()
                while chunk := await reader.read(MiB):
                    got += len(chunk)
                raise AssertionError("clean EOF: expected a reset")
        writer.close()
        assert proxy.resets == 1
        # Reset at the first roll, i.e. within the first read past `every` bytes.
        assert proxy.bytes_up <= every + READ_SIZE
        assert got <= every + READ_SIZE


async def test_no_reset_with_probability_zero(servers):
    data = bytes(2 * MiB)
    async with WanProxy(HOST, await servers.sink(), reset_probability=0.0,
                        reset_every_bytes=1024) as proxy:
        await asyncio.wait_for(send_all(proxy.port, data), 10)
        assert proxy.resets == 0
    assert await servers.received[0] == data


def with_markers(size: int, positions: list[int]) -> bytes:
    data = bytearray(random.Random(2).randbytes(size))
    for p in positions:
        data[p:p + len(MARKER)] = MARKER
    assert bytes(data).count(MARKER) == len(positions)
    return bytes(data)


def differences(a: bytes, b: bytes) -> list[int]:
    assert len(a) == len(b)
    return [i for i, (x, y) in enumerate(zip(a, b)) if x != y]


async def test_corrupts_one_byte_inside_the_marker(servers):
    """Armed for one occurrence: the first marker gets one byte flipped, the second,
    later in the stream, passes untouched."""
    first, second = 300_000, 900_000
    data = with_markers(MiB, [first, second])
    async with WanProxy(HOST, await servers.sink()) as proxy:
        proxy.corrupt(MARKER, count=1)
        await asyncio.wait_for(send_all(proxy.port, data), 10)
        assert proxy.corruptions == 1
    got = await servers.received[0]
    diffs = differences(data, got)
    assert len(diffs) == 1
    assert first <= diffs[0] < first + len(MARKER)
    assert got[diffs[0]] == data[diffs[0]] ^ 0xFF


async def test_corrupts_a_marker_split_across_reads(servers):
    at = 100_000
    split = at + 5  # the first 5 bytes of the marker go in one read, the rest in another
    data = with_markers(512 * KiB, [at])
    async with WanProxy(HOST, await servers.sink()) as proxy:
        proxy.corrupt(MARKER)
        reader, writer = await asyncio.open_connection(HOST, proxy.port)
        writer.write(data[:split])
        await writer.drain()
        async with asyncio.timeout(10):  # the proxy has read and forwarded the first part
            while proxy.bytes_up < split:
                await asyncio.sleep(0.005)
        assert proxy.corruptions == 0
        writer.write(data[split:])
        writer.write_eof()
        await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert proxy.corruptions == 1
    got = await servers.received[0]
    diffs = differences(data, got)
    assert len(diffs) == 1 and at <= diffs[0] < at + len(MARKER)


async def test_close_aborts_established_connections(servers):
    proxy = await WanProxy(HOST, await servers.echo(), rtt=0.01).start()
    reader, writer = await asyncio.open_connection(HOST, proxy.port)
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
    await proxy.close()
    try:
        rest = await asyncio.wait_for(reader.read(), 5)
    except ConnectionError:
        rest = b""
    assert rest == b""  # EOF or reset: the link is dead
    writer.close()
    assert not proxy._tasks and not proxy._conns  # nothing of the proxy's left running
    with pytest.raises(ConnectionError):
        await asyncio.open_connection(HOST, proxy.port)


async def test_stalled_receiver_backpressures_the_sender(servers):
    limit = MiB
    async with WanProxy(HOST, await servers.hold(), rtt=0.01, queue_limit=limit) as proxy:
        reader, writer = await asyncio.open_connection(HOST, proxy.port)
        piece = bytes(MiB)

        async def send():  # far more than every socket buffer on the way can hold
            for _ in range(512):
                writer.write(piece)
                await writer.drain()

        sender = asyncio.create_task(send())
        try:
            async with asyncio.timeout(10):  # the proxy's queue fills up and it stops reading
                while proxy.queued_bytes <= limit - READ_SIZE:
                    assert not sender.done()
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # and stays bounded: the sender is held back
            assert not sender.done()
            assert proxy.queued_bytes <= limit and proxy.peak_queued <= limit
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            writer.transport.abort()


class SyncEcho(socketserver.ThreadingTCPServer):
    """A plain-threads echo server, for the sync-API and CLI tests."""
    daemon_threads = True
    allow_reuse_address = True

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            with contextlib.suppress(OSError):
                while data := self.request.recv(65536):
                    self.request.sendall(data)

    def __init__(self):
        super().__init__((HOST, 0), self.Handler)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.shutdown()
        self.server_close()


@pytest.fixture
def sync_echo():
    server = SyncEcho()
    yield server
    server.close()


def echo_through(port: int, data: bytes) -> bytes:
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        return b"".join(iter(lambda: s.recv(65536), b""))


def test_start_in_thread_for_sync_callers(sync_echo):
    data = with_markers(256 * KiB, [1000])
    with WanProxy.start_in_thread(HOST, sync_echo.port, rtt=0.02) as proxy:
        assert echo_through(proxy.port, b"hello") == b"hello"
        proxy.corrupt(MARKER)
        got = echo_through(proxy.port, data)
        assert len(differences(data, got)) == 1
        assert proxy.connections == 2 and proxy.corruptions == 1
        s = socket.create_connection((HOST, proxy.port), timeout=10)
        s.sendall(b"x")
        assert s.recv(1) == b"x"
    # Closed: the open connection is dead and nothing listens any more.
    try:
        assert s.recv(1) == b""
    except ConnectionError:
        pass
    s.close()
    with pytest.raises(ConnectionError):
        socket.create_connection((HOST, proxy.port), timeout=5)


def test_cli_prints_port_and_stops_on_sigterm(sync_echo):
    with subprocess.Popen(
            [sys.executable, "-m", "bench.wanproxy", "--upstream", f"{HOST}:{sync_echo.port}",
             "--rtt-ms", "20", "--rate-mbit", "200", "--corrupt-marker", MARKER.hex()],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            port = int(proc.stdout.readline())
            data = with_markers(64 * KiB, [5000])
            got = echo_through(port, data)
            assert len(differences(data, got)) == 1
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
            assert "corruptions=1" in proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
