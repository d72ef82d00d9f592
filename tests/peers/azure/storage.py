"""The Storage front: plain HTTP on its own loopback port, in front of Azurite. It passes
every request through unchanged (path, query and headers, so Shared Key signatures, which
cover the account and path but not the host, still verify) except:

* managed-disk blobs (`/devstoreaccount1/md-*/abcd`): only the SAS of a live access grant
  is accepted (sas.py); the request is forwarded with the peer's Azurite account SAS in
  its place. Put Page / Clear Page are recorded in the disk's change journal (pages.py).
* Get Page Ranges of a managed blob is answered from the journal, not by Azurite: with
  `x-ms-previous-snapshot-url` (what `get_page_range_diff_for_managed_disk` sends) the
  diff against that snapshot - PageRange for pages written since, ClearRange for pages
  valid then and clear now - which Azurite gets wrong (it answers the full list and never
  a ClearRange); without it, the valid ranges merged as Azure merges them.
* Get Page Ranges with `prevsnapshot` on an ordinary page blob (blob snapshots, Shared
  Key): answered by comparing the two versions' bytes through Azurite (no journal exists
  for blobs the front does not own), so a page rewritten with identical bytes is not
  reported, where Azure would.
* faults (faults.py) for every request, managed or not, and counters per blob.
* Azure's error codes where Azurite's differ (CORRECTIONS): a Shared Key signature that
  does not verify is 403 AuthenticationFailed (Azurite: AuthorizationFailure), a body that
  does not match its Content-MD5 is 400 Md5Mismatch (Azurite: InvalidOperation)."""

from __future__ import annotations

import http.client
import re
import threading
import time
import uuid
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from tests.peers.azure import pages
from tests.peers.azure.pages import Journal, Span, clip, diff, merge, page_list_xml, subtract
from tests.peers.azure.sas import SAS_PARAMS, Denied, check
from tests.peers.azure.state import Managed, PeerState
from tests.peers.azure.wire import Handler, Reply, Reset, xml_reply

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "host", "content-length",
               "proxy-connection", "te", "upgrade"}
STREAM_CHUNK = 1 << 20
RANGE = re.compile(r"bytes=(\d+)-(\d*)")
# (status, Azurite's code, a phrase of its message) -> Azure's code for the same answer.
CORRECTIONS = {
    (403, "AuthorizationFailure", b"failed to authenticate"): "AuthenticationFailed",
    (400, "InvalidOperation", b"contentMD5 doesn't match"): "Md5Mismatch",
}

FAULT_REPLIES = {
    "server_busy": (503, "ServerBusy",
                    ("The server is currently unable to receive requests. Please retry your "
                     "request.")),
    "timeout": (500, "OperationTimedOut",
                "Operation could not be completed within the specified time."),
}


def operation(method: str, query: dict[str, str], headers: Any) -> str:
    """A Storage request's operation name (what fault filters and SAS permissions use)."""
    comp = query.get("comp", "")
    if comp == "page":
        return "clearpage" if headers.get("x-ms-page-write", "").lower() == "clear" else "putpage"
    if comp:
        return {"pagelist": "pagelist", "block": "putblock", "list": "list",
                "blocklist": "putblocklist" if method == "PUT" else "getblocklist",
                }.get(comp, f"{method.lower()}{comp}")
    if query.get("restype") == "container":
        return f"{method.lower()}container"
    if method == "PUT":
        return "copy" if headers.get("x-ms-copy-source") else "putblob"
    return {"GET": "get", "HEAD": "getproperties", "DELETE": "delete"}.get(method, method.lower())


def parse_range(headers: Any) -> tuple[int, int] | None:
    """[start, end) of an `x-ms-range` or `Range` header; None without one."""
    value = headers.get("x-ms-range") or headers.get("Range")
    m = RANGE.fullmatch(value.strip()) if value else None
    if not m:
        return None
    end = int(m.group(2)) + 1 if m.group(2) else 1 << 62
    return int(m.group(1)), end


def storage_error(status: int, code: str, message: str, detail: str = "",
                  headers: list[tuple[str, str]] | None = None) -> Reply:
    """Azure Storage's error answer: XML body, `x-ms-error-code`, a request id."""
    request_id = str(uuid.uuid4())
    text = (f"{message}\nRequestId:{request_id}\nTime:"
            f"{time.strftime('%Y-%m-%dT%H:%M:%S.0000000Z', time.gmtime())}")
    body = pages.error_xml(code, text)
    if detail:
        body = body.replace(b"</Error>", f"<AuthenticationErrorDetail>{detail}"
                                         f"</AuthenticationErrorDetail></Error>".encode())
    return xml_reply(status, body, [("x-ms-error-code", code), ("x-ms-request-id", request_id),
                                    *(headers or [])])


class Azurite:
    """Forwarding to Azurite over one keep-alive connection per front thread."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.local = threading.local()

    def request(self, method: str, target: str, headers: list[tuple[str, str]],
                body: bytes | None) -> http.client.HTTPResponse:
        for attempt in (1, 2):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection(self.host, self.port,
                                                                    timeout=120)
            try:
                conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
                conn.putheader("Host", f"{self.host}:{self.port}")
                for k, v in headers:
                    conn.putheader(k, v)
                conn.putheader("Content-Length", str(len(body or b"")))
                conn.endheaders(body or None)
                return conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()  # a keep-alive connection Azurite had closed: once more
                self.local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


class StorageHandler(Handler):
    server: Any  # wire.Server whose peer is a StoragePeer
    corrupt_answer = False  # this request's answer is to be damaged (a fault)

    def route(self) -> None:
        peer: StoragePeer = self.server.peer
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        op = operation(self.command, query, self.headers)
        body = self.body()
        kind, latency = peer.state.faults.storage_fault(self.command, op)
        if latency:
            time.sleep(latency)  # the injected latency itself, not a readiness wait
        if kind == "reset":
            raise Reset()
        if kind in FAULT_REPLIES:
            return self.send(storage_error(*FAULT_REPLIES[kind]))
        if kind == "corrupt_request" and body:
            body = flip(body)
        self.corrupt_answer = kind == "corrupt_response"
        parts = unquote(url.path).split("/")  # "", account, container, blob...
        container = parts[2] if len(parts) > 2 else ""
        managed = peer.state.managed.get(container)
        if managed is not None or container.startswith("md-"):
            return self.managed(managed, container, url.query, query, op, body)
        if op == "pagelist" and "prevsnapshot" in query:
            return self.send(peer.snapshot_diff(self.path, self.forward_headers(), query,
                                                self.headers))
        key = "/".join(parts[2:])
        self.relay(self.path, self.forward_headers(), body, key, op)

    def forward_headers(self) -> list[tuple[str, str]]:
        return [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_HEADERS]

    def managed(self, managed: Managed | None, container: str, raw_query: str,
                query: dict[str, str], op: str, body: bytes) -> None:
        peer: StoragePeer = self.server.peer
        try:
            if managed is None:  # a deleted disk's URL: its grants went with it
                raise Denied(403, "AuthenticationFailed", "Server failed to authenticate the "
                             "request.", "Signed identifier not found.")
            check(peer.state, container, query, op)
        except Denied as e:
            return self.send(storage_error(e.status, e.code, e.message, e.detail))
        # The client's SAS is ours; Azurite gets the peer's account SAS in its place.
        kept = [p for p in raw_query.split("&") if p and p.split("=", 1)[0] not in SAS_PARAMS]
        target = urlsplit(self.path).path + "?" + "&".join([*kept, peer.state.blobs.account_sas])
        headers = self.forward_headers()
        if op == "pagelist":
            return self.send(peer.page_list(managed, target, headers, self.headers))
        if op in ("putpage", "clearpage"):
            span = parse_range(self.headers)
            with managed.io_lock:
                status = self.relay(target, headers, body, managed.container, op)
                if status == 201 and span:  # the journal is the io_lock's
                    if op == "putpage":
                        managed.journal.write(span[0], span[1], pages.tick())
                    else:
                        managed.journal.clear(*span)
            return
        self.relay(target, headers, body, managed.container, op)

    def relay(self, target: str, headers: list[tuple[str, str]], body: bytes, key: str,
              op: str) -> int:
        """Forwards to Azurite and streams the answer back; counts what passed."""
        peer: StoragePeer = self.server.peer
        response = peer.azurite.request(self.command, target, headers, body or None)
        out = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_HEADERS]
        length = response.getheader("Content-Length")
        damage = self.corrupt_answer and response.status < 300
        if length is None or self.command == "HEAD" or response.status >= 400 or damage:
            data = response.read()
            if response.status >= 400:
                out, data = correct(response.status, out, data)
            if damage and data:
                data = flip(data)
            if self.command != "HEAD":
                length = str(len(data))  # a corrected code may be longer
            self.send((response.status, out + ([("Content-Length", length)] if length else []),
                       data))
            sent = len(data)
        else:
            self.send_response(response.status)
            for k, v in out:
                self.send_header(k, v)
            self.send_header("Content-Length", length)
            self.end_headers()
            sent = 0
            while chunk := response.read(STREAM_CHUNK):
                self.wfile.write(chunk)
                sent += len(chunk)
        counts = {"requests": 1}
        if op == "get" and response.status in (200, 206):
            counts.update(gets=1, bytes_read=sent)
        elif op == "putpage" and response.status == 201:
            counts.update(put_pages=1, bytes_written=len(body))
        elif op == "clearpage" and response.status == 201:
            counts.update(clear_pages=1)
        peer.state.count_blob(key, **counts)
        return response.status


def correct(status: int, headers: list[tuple[str, str]], body: bytes
            ) -> tuple[list[tuple[str, str]], bytes]:
    """Azurite's error answer as Azure gives it (CORRECTIONS), else as it is."""
    code = next((v for k, v in headers if k.lower() == "x-ms-error-code"), "")
    for (when, azurite_says, phrase), azure_says in CORRECTIONS.items():
        if (status, code) == (when, azurite_says) and phrase in body:
            headers = [(k, azure_says if k.lower() == "x-ms-error-code" else v)
                       for k, v in headers]
            return headers, body.replace(f"<Code>{azurite_says}</Code>".encode(),
                                         f"<Code>{azure_says}</Code>".encode())
    return headers, body


def flip(data: bytes) -> bytes:
    """`data` with one bit of its middle byte flipped: damage an MD5 catches."""
    mid = len(data) // 2
    return data[:mid] + bytes([data[mid] ^ 0x01]) + data[mid + 1:]


class StoragePeer:
    def __init__(self, state: PeerState, azurite_host: str, azurite_port: int):
        self.state = state
        self.azurite = Azurite(azurite_host, azurite_port)

    def _properties(self, target: str, headers: list[tuple[str, str]]
                    ) -> tuple[http.client.HTTPResponse, bytes]:
        """Azurite's Get Blob Properties for the blob (and snapshot) a pagelist names."""
        path, _, q = target.partition("?")
        kept = "&".join(p for p in q.split("&") if p.split("=", 1)[0] not in
                        ("comp", "prevsnapshot", "marker", "maxresults"))
        kept_headers = [(k, v) for k, v in headers
                        if k.lower() not in ("x-ms-range", "range", "x-ms-previous-snapshot-url")]
        response = self.azurite.request("HEAD", f"{path}?{kept}", kept_headers, None)
        return response, response.read()

    def _answer(self, props: http.client.HTTPResponse, spans: list[Span], clears: list[Span],
                request_headers: Any) -> Reply:
        size = int(props.getheader("x-ms-blob-content-length") or props.getheader(
            "Content-Length") or 0)
        wanted = parse_range(request_headers) or (0, size)
        spans, clears = clip(spans, *wanted), clip(clears, *wanted)
        return xml_reply(200, page_list_xml(spans, clears), [
            ("Last-Modified", props.getheader("Last-Modified", "")),
            ("ETag", props.getheader("ETag", "")),
            ("x-ms-blob-content-length", str(size)),
            ("x-ms-request-id", str(uuid.uuid4())),
            ("x-ms-version", request_headers.get("x-ms-version", "")),
            ("Date", formatdate(usegmt=True))])

    def page_list(self, managed: Managed, target: str, headers: list[tuple[str, str]],
                  request_headers: Any) -> Reply:
        props, _ = self._properties(target, headers)
        if props.status != 200:
            return storage_error(props.status, props.getheader("x-ms-error-code", "BlobNotFound"),
                                 "The specified blob does not exist.")
        previous_url = request_headers.get("x-ms-previous-snapshot-url")
        if previous_url:
            previous = self.state.managed.get(_container_of(previous_url))
            refused = _refuse_diff(managed, previous)
            if refused:
                return refused
            # Journals are guarded by their io_locks, taken in one order (by container).
            locks = sorted({managed.container: managed.io_lock,
                            previous.container: previous.io_lock}.items())
            for _, lock in locks:
                lock.acquire()
            try:
                spans, clears = diff(managed.journal, previous.journal, previous.seq)
            finally:
                for _, lock in reversed(locks):
                    lock.release()
            self.state.count_blob(managed.container, pagelists=1, diffs=1)
        elif "prevsnapshot=" in urlsplit(target).query:
            # Managed blobs have no blob snapshots: a disk's snapshots are resources.
            return storage_error(409, "PreviousSnapshotNotFound",
                                 "The previous snapshot is not found.")
        else:
            with managed.io_lock:
                spans, clears = managed.journal.valid(), []
            self.state.count_blob(managed.container, pagelists=1)
        return self._answer(props, spans, clears, request_headers)

    def snapshot_diff(self, target: str, headers: list[tuple[str, str]], query: dict[str, str],
                      request_headers: Any) -> Reply:
        """prevsnapshot on an ordinary page blob: both versions' valid ranges, and the bytes
        where both hold data, compared through Azurite."""
        # Azurite judges the client's own credentials on the request as sent (a Shared Key
        # signature covers the query, so it cannot be rewritten); its answer is discarded.
        first = self.azurite.request("GET", target, headers, None)
        data = first.read()
        if first.status != 200:
            return first.status, [(k, v) for k, v in first.getheaders()
                                  if k.lower() not in HOP_HEADERS], data
        path = urlsplit(target).path
        auth = parse_qsl(self.state.blobs.account_sas)
        headers = [(k, v) for k, v in headers if k.lower() not in ("authorization", "x-ms-range",
                                                                     "range")]
        new, old = query.get("snapshot"), query["prevsnapshot"]
        props, _ = self._properties(path + "?" + _encode(
            [*([("snapshot", new)] if new else []), *auth]), headers)
        new_valid = self._valid(path, new, auth, headers)
        old_valid = self._valid(path, old, auth, headers)
        if new_valid is None or old_valid is None:
            return storage_error(409, "PreviousSnapshotNotFound",
                                 "The previous snapshot is not found.")
        changed = subtract(new_valid, old_valid)
        for s, e in _intersect(new_valid, old_valid):
            for at in range(s, e, STREAM_CHUNK):
                n = min(STREAM_CHUNK, e - at)
                a = self._read(path, new, auth, headers, at, n)
                b = self._read(path, old, auth, headers, at, n)
                changed.extend((at + i, at + i + pages.PAGE) for i in range(0, n, pages.PAGE)
                               if a[i:i + pages.PAGE] != b[i:i + pages.PAGE])
        return self._answer(props, merge(changed), subtract(old_valid, new_valid),
                            request_headers)

    def _valid(self, path: str, snapshot: str | None, auth: list, headers: list
               ) -> list[Span] | None:
        q = [("comp", "pagelist"), *([("snapshot", snapshot)] if snapshot else []), *auth]
        response = self.azurite.request("GET", path + "?" + _encode(q), headers, None)
        data = response.read()
        if response.status != 200:
            return None
        found = re.findall(rb"<PageRange><Start>(\d+)</Start><End>(\d+)</End></PageRange>", data)
        return merge((int(s), int(e) + 1) for s, e in found)

    def _read(self, path: str, snapshot: str | None, auth: list, headers: list, at: int,
              n: int) -> bytes:
        q = [*([("snapshot", snapshot)] if snapshot else []), *auth]
        response = self.azurite.request("GET", path + "?" + _encode(q),
                                        headers + [("x-ms-range", f"bytes={at}-{at + n - 1}")], None)
        return response.read()


def _encode(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


def _intersect(a: list[Span], b: list[Span]) -> list[Span]:
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        s, e = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if s < e:
            out.append((s, e))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _container_of(url: str) -> str:
    parts = unquote(urlsplit(url).path).split("/")
    return parts[2] if len(parts) > 2 else ""


def _refuse_diff(target: Managed, previous: Managed | None) -> Reply | None:
    """Azure's Get Page Ranges errors for a previous snapshot it cannot diff against
    (Blob service error codes: PreviousSnapshotNotFound 409, PreviousSnapshotOperation-
    NotSupported 409, PreviousSnapshotCannotBeNewer 400)."""
    if previous is None:
        return storage_error(409, "PreviousSnapshotNotFound", "The previous snapshot is not found.")
    if (previous.kind != "snapshot" or not previous.incremental
            or previous.lineage != target.lineage
            or (target.kind == "snapshot" and not target.incremental)):
        return storage_error(409, "PreviousSnapshotOperationNotSupported",
                             "Differential Get Page Ranges is not allowed on the previous "
                             "snapshot.")
    if target.kind == "snapshot" and previous.seq > target.seq:
        return storage_error(400, "PreviousSnapshotCannotBeNewer",
                             "The prevsnapshot query parameter value cannot be newer than "
                             "snapshot query parameter value.")
    return None


__all__ = ["Journal", "StorageHandler", "StoragePeer", "operation"]
