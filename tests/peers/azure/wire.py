"""HTTP plumbing shared by the peer's two servers (the Storage front and the harness ARM):
a threaded http.server handler that reads bodies (Content-Length or chunked), sends
replies and can reset a connection; and the reply shapes, (status, headers, body)."""

from __future__ import annotations

import http.server
import json
import socket
import struct
from collections.abc import Iterator
from typing import Any

Reply = tuple[int, list[tuple[str, str]], bytes]


class Reset(Exception):
    """Answer nothing: reset the client's connection (a fault, or an outage)."""


def json_reply(status: int, value: Any, headers: list[tuple[str, str]] | None = None) -> Reply:
    return (status, [("Content-Type", "application/json; charset=utf-8"), *(headers or [])],
            json.dumps(value).encode())


def xml_reply(status: int, data: bytes, headers: list[tuple[str, str]] | None = None) -> Reply:
    return status, [("Content-Type", "application/xml"), *(headers or [])], data


class Server(http.server.ThreadingHTTPServer):
    """One thread per connection (the product's async clients open several at once);
    `peer` is what the handlers serve."""

    daemon_threads = True
    # The product's clients open many connections at once; the default 5 drops some.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type, peer: Any):
        self.peer = peer
        super().__init__(address, handler)


class Handler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive; subclasses implement `route()`."""

    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a line per request drowns the log; tracebacks still reach stderr

    def do_GET(self) -> None:
        try:
            self.route()
        except Reset:
            self.reset_connection()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_GET

    def route(self) -> None:
        raise NotImplementedError

    def body(self) -> bytes:
        return b"".join(self._chunks())

    def _chunks(self) -> Iterator[bytes]:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 20))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk

    def send(self, reply: Reply) -> None:
        status, headers, data = reply
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if not any(k.lower() == "content-length" for k, _ in headers):
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)

    def reset_connection(self) -> None:
        """Close the client's socket without an answer (RST: linger 0), as a dropped
        connection or a load balancer's reset looks to the client."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.wfile.close()
            self.connection.close()
        except OSError:
            pass


__all__ = ["Handler", "Reply", "Reset", "Server", "json_reply", "xml_reply"]
