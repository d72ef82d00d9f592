"""The front: a threaded HTTPS server on a loopback port that forwards vSphere's SOAP API
(/sdk) and datastore HTTP access (/folder) to vcsim and corrects them (see __init__.py), and
serves the peer's /_peer/ control endpoints (control.py)."""

from __future__ import annotations

import http.server
import socket
import ssl
import struct
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.peers.vsphere import soap
from tests.peers.vsphere.disks import BLOCK, ZERO, Disk
from tests.peers.vsphere.inventory import Inventory
from tests.peers.vsphere.state import DATASTORE_GET, DATASTORE_PUT, PeerState
from tests.peers.vsphere.vcsim import Vcsim
from tests.peers.vsphere.wire import Reply, text_reply

SESSION_COOKIE = "vmware_soap_session"
FORWARD_HEADERS = ("content-type", "soapaction", "cookie", "user-agent", "range", "accept")
HOP_HEADERS = ("transfer-encoding", "connection", "content-length", "keep-alive", "date",
               "server")


class Reset(Exception):
    """Answer nothing: reset the client's connection."""


class Peer:
    """Everything one front serves; the handler class reaches it as `server.peer`."""

    def __init__(self, vcsim: Vcsim):
        self.vcsim = vcsim
        self.state = PeerState()
        self.inventory = Inventory(vcsim)

    def reset(self) -> None:
        self.vcsim.restart()
        self.state.reset()
        self.inventory.reset()
        self.inventory.sync()

    # -- forwarding

    def forward(self, method: str, target: str, headers: Any, body: bytes | None) -> Reply:
        sent = {k: v for k, v in headers.items() if k.lower() in FORWARD_HEADERS}
        status, got, data = self.vcsim.request(method, target, body, sent)
        out = [(k, v) for k, v in got if k.lower() not in HOP_HEADERS]
        return status, out, data

    # -- sessions: what /folder checks, as vCenter does

    def note_session(self, call: soap.Call | None, request_headers: Any, reply: Reply) -> None:
        status, headers, _ = reply
        if call and call.method == "Logout":
            session = session_of(request_headers.get("Cookie", ""))
            with self.state.lock:
                self.state.sessions.discard(session)
            return
        if status != 200:
            return
        for k, v in headers:
            if k.lower() == "set-cookie" and SESSION_COOKIE in v:
                session = session_of(v)
                if session:
                    with self.state.lock:
                        self.state.sessions.add(session)

    def logged_in(self, headers: Any) -> bool:
        session = session_of(headers.get("Cookie", ""))
        with self.state.lock:
            return bool(session) and session in self.state.sessions

    def apply_datastore(self, name: str) -> None:
        with self.state.lock:
            space = self.state.datastores.get(name)
        if space:
            self.vcsim.api("/_vcsim/datastore", {"Name": name, "Capacity": space["capacity"],
                                                  "Free": space["free"]})


def session_of(cookie_text: str) -> str:
    """The session id in a Cookie or Set-Cookie header, unquoted."""
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookie_text)
    except Exception:
        return ""
    morsel = jar.get(SESSION_COOKIE)
    return morsel.value.strip('"') if morsel else ""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "FrontServer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # one line per request drowns the log; errors still go to stderr

    def do_GET(self) -> None:  # noqa: N802
        self.route()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_GET

    # -- request plumbing

    def body(self) -> bytes:
        return b"".join(self.body_chunks())

    def body_chunks(self):
        """The request body as it arrives: Content-Length or chunked transfer encoding."""
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
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def reset_connection(self) -> None:
        """Close the client's socket without an answer (RST: linger 0)."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.wfile.close()
            self.connection.close()
        except OSError:
            pass

    def route(self) -> None:
        from tests.peers.vsphere.control import control
        peer = self.server.peer
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            if url.path.startswith("/_peer/"):
                return self.send(control(peer, self.command, url.path, query, self.body()))
            if peer.state.outage:
                raise Reset()
            if url.path.startswith("/folder/"):
                return self.folder(url.path, query)
            if url.path.startswith("/sdk") and self.command == "POST":
                return self.soap()
            self.send(peer.forward(self.command, self.path, self.headers, self.body() or None))
        except Reset:
            self.reset_connection()

    # -- SOAP

    def soap(self) -> None:
        from tests.peers.vsphere.methods import handle
        peer = self.server.peer
        body = self.body()
        call = soap.parse_call(body)
        reply = handle(peer, call, self.path, self.headers, body)
        peer.note_session(call, self.headers, reply)
        self.send(reply)

    # -- datastore HTTP access

    def folder(self, path: str, query: dict[str, str]) -> None:
        peer = self.server.peer
        if not peer.logged_in(self.headers):
            self.body()
            return self.send(text_reply(401, "Unauthorized: no vmware_soap_session of a "
                                             "logged-in session"))
        ds = query.get("dsName", "")
        ds_path = f"[{ds}] {unquote(path[len('/folder/'):])}"
        rule = peer.state.draw(DATASTORE_PUT if self.command == "PUT" else DATASTORE_GET)
        if rule and rule.reset:
            raise Reset()
        if self.command in ("GET", "HEAD"):
            disk = peer.inventory.flat_file(ds_path)
            if disk is not None:
                return self.serve_disk(ds_path, disk)
            descriptor = peer.inventory.by_file.get(ds_path)
            if (descriptor is not None and descriptor.base == ds_path
                    and ds_path not in peer.inventory.uploaded):
                return self.send(text_reply(200, vmdk_descriptor(descriptor)))
            reply = peer.forward(self.command, self.path, self.headers, None)
            peer.state.count_bytes(peer.state.served, ds_path, len(reply[2]))
            return self.send(reply)
        if self.command == "PUT":
            return self.put_file(ds, ds_path)
        self.send(peer.forward(self.command, self.path, self.headers, self.body() or None))

    def serve_disk(self, ds_path: str, disk: Disk) -> None:
        size = disk.capacity
        start, end, status = 0, size, 200
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes=") and "," not in wanted:
            a, _, b = wanted[6:].partition("-")
            if a:
                start, end = int(a), (int(b) + 1 if b else size)
            elif b:  # the last b bytes
                start, end = max(0, size - int(b)), size
            end = min(end, size)
            if start >= size or start >= end:
                return self.send((416, [("Content-Range", f"bytes */{size}")], b""))
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        with peer_lock(self):
            chunks = list(disk.iter_read(start, end - start, disk.layers[0]))
        for chunk in chunks:
            self.wfile.write(chunk)
            self.server.peer.state.count_bytes(self.server.peer.state.served, ds_path, len(chunk))

    def put_file(self, ds: str, ds_path: str) -> None:
        peer = self.server.peer
        with peer.state.lock:
            space = peer.state.datastores.get(ds)
        size = 0
        full = False
        if ds_path.endswith("-flat.vmdk"):
            disk = Disk(ds_path[:-len("-flat.vmdk")] + ".vmdk", 0)
            pending, stored = bytearray(), 0
            for chunk in self.body_chunks():
                size += len(chunk)
                peer.state.count_bytes(peer.state.received, ds_path, len(chunk))
                full = full or bool(space) and size > space["free"]
                if full:
                    continue  # drained, so the connection stays usable for the answer
                pending += chunk
                while len(pending) >= BLOCK:
                    block = bytes(pending[:BLOCK])
                    del pending[:BLOCK]
                    if block != ZERO:  # sparse: zeros are not allocated
                        disk.layers[0].blocks[stored // BLOCK] = block
                    stored += BLOCK
            if pending and not full and any(pending):
                disk.layers[0].blocks[stored // BLOCK] = bytes(pending) + bytes(
                    BLOCK - len(pending))
            disk.capacity = size
            data = b""  # vcsim keeps an empty placeholder; the content lives here
        else:
            data = self.body()
            size = len(data)
            peer.state.count_bytes(peer.state.received, ds_path, size)
            full = bool(space) and size > space["free"]
        if full:
            return self.send(text_reply(500, f"Insufficient disk space on datastore '{ds}': "
                                             f"{size} bytes do not fit"))
        reply = peer.forward("PUT", self.path, self.headers, data)
        if reply[0] in (200, 201):
            if ds_path.endswith("-flat.vmdk"):
                peer.inventory.put_flat(ds_path, disk)
            elif ds_path.endswith(".vmdk"):
                peer.inventory.uploaded.add(ds_path)
            if space:
                with peer.state.lock:
                    space["free"] -= size
                peer.apply_datastore(ds)
        self.send(reply)


class peer_lock:
    """The inventory's lock around reads of disk content (writes hold it too)."""

    def __init__(self, handler: Handler):
        self.lock = handler.server.peer.inventory.lock

    def __enter__(self) -> None:
        self.lock.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.lock.release()


def vmdk_descriptor(disk: Disk) -> bytes:
    """A monolithic flat descriptor as ESXi writes it for a thin/flat VMFS disk."""
    name = disk.base.rsplit("/", 1)[-1]
    sectors = disk.capacity // 512
    cylinders = max(1, sectors // (255 * 63))
    return (f'# Disk DescriptorFile\nversion=1\nencoding="UTF-8"\nCID=fffffffe\n'
            f'parentCID=ffffffff\ncreateType="vmfs"\n\n# Extent description\n'
            f'RW {sectors} VMFS "{name[:-5]}-flat.vmdk"\n\n# The Disk Data Base\n#DDB\n\n'
            f'ddb.adapterType = "lsilogic"\nddb.geometry.cylinders = "{cylinders}"\n'
            f'ddb.geometry.heads = "255"\nddb.geometry.sectors = "63"\n'
            f'ddb.thinProvisioned = "1"\nddb.virtualHWVersion = "13"\n').encode()


class FrontServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], peer: Peer, context: ssl.SSLContext):
        super().__init__(address, Handler)
        self.peer, self.context = peer, context

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs in the request's thread, not in the accept loop.
        try:
            request = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            request.close()
            return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, ssl.SSLError, BrokenPipeError)):
            return  # a client that went away (or a reset we made)
        super().handle_error(request, client_address)
