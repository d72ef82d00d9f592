"""The AWS peer's server: a WSGI middleware in front of moto that serves the /_peer/
control endpoints and the EBS direct APIs, classifies every request by service and
operation (for counters and targeted faults), injects faults, and hands the rest to
moto. `python -m tests.peers.aws` runs `main`."""

from __future__ import annotations

import argparse
import io
import json
import re
import socket
import struct
import time
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

from tests.peers.aws.blocks import LOCK, discard_volume, read_volume, volume_sha256, write_volume
from tests.peers.aws.ebs import EbsRequest, ebs_route
from tests.peers.aws.moto_patches import (account_of, ec2_backend, find_volume, patch_ec2,
                                          patch_images)
from tests.peers.aws.state import STATE, Faults
from tests.peers.aws.wire import (EbsError, PeerError, Response, json_response, request_id,
                                  throttle_response)

MAX_PEER_READ = 64 << 20  # bytes a /_peer/ read may ask for: one response in memory


# -- the /_peer/ control endpoints


def peer_request(method: str, path: str, query: dict[str, str], body: bytes) -> Response:
    """The /_peer/ control endpoints."""
    if (method, path) == ("POST", "/_peer/reset"):
        STATE.reset()
    elif path == "/_peer/faults" and method in ("POST", "DELETE"):
        STATE.set_faults(Faults(**json.loads(body or b"{}")) if method == "POST" else Faults())
    elif (method, path) == ("GET", "/_peer/stats"):
        return json_response(200, STATE.stats())
    elif (method, path) == ("POST", "/_peer/stats/reset"):
        STATE.reset_stats()
    elif match := re.fullmatch(r"/_peer/volumes/([^/]+)/(write|discard|read|sha256)", path):
        return volume_request(method, match.group(1), match.group(2), query, body)
    else:
        raise PeerError(404, f"no peer endpoint {method} {path}")
    return json_response(200, {"ok": True})


def volume_request(method: str, volume_id: str, action: str, query: dict[str, str],
                   body: bytes) -> Response:
    volume = find_volume(volume_id)
    if volume is None:
        raise PeerError(404, f"no volume {volume_id}")
    offset, length = int(query.get("offset", 0)), int(query.get("length", 0))
    with LOCK:
        if (method, action) == ("POST", "write"):
            write_volume(volume, offset, body)
        elif (method, action) == ("POST", "discard"):
            discard_volume(volume, offset, length)
        elif (method, action) == ("GET", "read"):
            if length > MAX_PEER_READ:
                raise PeerError(400, f"reads are limited to {MAX_PEER_READ} bytes")
            data = read_volume(volume, offset, length)
            return 200, {"Content-Type": "application/octet-stream"}, data
        elif (method, action) == ("GET", "sha256"):
            return json_response(200, {"sha256": volume_sha256(volume)})
        else:
            raise PeerError(405, f"{method} not allowed on {action}")
    return json_response(200, {"ok": True})

# -- request classification (service from SigV4, operation per protocol)

CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/]+/([^/]+)/([^/]+)/aws4_request")


def sigv4_scope(environ: dict[str, Any], query: dict[str, str]) -> tuple[str, str, str]:
    """(access key, region, service) from the Authorization header or a presigned URL."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    presigned = "Credential=" + query.get("X-Amz-Credential", "")
    match = CREDENTIAL.search(auth) or CREDENTIAL.search(presigned)
    return match.groups() if match else ("", "us-east-1", "")  # type: ignore[return-value]


S3_SUBRESOURCES = ["tagging", "versioning", "lifecycle", "policy", "acl", "cors", "location",
                   "encryption", "object-lock", "retention", "legal-hold", "notification"]


def s3_operation(method: str, path: str, query: dict[str, str], environ: dict[str, Any]) -> str:
    bucket, _, key = path.lstrip("/").partition("/")
    if not bucket:
        return "ListBuckets"
    sub = next((s for s in S3_SUBRESOURCES if s in query), "")
    target = "Object" if key else "Bucket"
    if sub:
        verb = {"GET": "Get", "PUT": "Put", "DELETE": "Delete"}.get(method, method)
        return f"{verb}{target}{sub.title().replace('-', '')}"
    if key and "uploadId" in query:
        copy = "Copy" if "HTTP_X_AMZ_COPY_SOURCE" in environ else ""
        return {"PUT": f"UploadPart{copy}", "POST": "CompleteMultipartUpload",
                "DELETE": "AbortMultipartUpload", "GET": "ListParts"}.get(method, method)
    if "uploads" in query:
        return "CreateMultipartUpload" if key else "ListMultipartUploads"
    if key:
        put = "CopyObject" if "HTTP_X_AMZ_COPY_SOURCE" in environ else "PutObject"
        return {"PUT": put, "GET": "GetObject", "HEAD": "HeadObject",
                "DELETE": "DeleteObject", "POST": "PostObject"}.get(method, method)
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    if method == "GET":
        return ("ListObjectsV2" if query.get("list-type") == "2"
                else "ListObjectVersions" if "versions" in query else "ListObjects")
    bucket_ops = {"PUT": "CreateBucket", "HEAD": "HeadBucket", "DELETE": "DeleteBucket"}
    return bucket_ops.get(method, method)


def ec2_operation(environ: dict[str, Any], query: dict[str, str]) -> str:
    """EC2's Action is in the query or the form body; the body is read here and put back
    for moto."""
    if "Action" in query:
        return query["Action"]
    body = read_body(environ)
    environ["wsgi.input"] = io.BytesIO(body)
    form = parse_qs(body.decode("utf-8", "replace"))
    return form.get("Action", ["Unknown"])[0]


def read_body(environ: dict[str, Any]) -> bytes:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    return environ["wsgi.input"].read(length) if length else b""


def operation_of(service: str, environ: dict[str, Any], query: dict[str, str]) -> str:
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
    if service == "ebs":
        return ebs_route(method, path)[0]
    if service == "s3":
        return s3_operation(method, path, query, environ)
    if service == "ec2":
        return ec2_operation(environ, query)
    return f"{method} {path}"


# -- the WSGI middleware


class PeerApp:
    """Serves /_peer/ and the EBS direct APIs; injects faults; hands the rest to moto."""

    def __init__(self, moto_app: Callable[..., Any]):
        self.moto_app = moto_app

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        parsed = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        query = {k: v[-1] for k, v in parsed.items()}
        if path.startswith("/_peer/"):
            return self.respond(start_response, self.peer(environ, path, query))
        if path.startswith("/moto-api/"):
            if path == "/moto-api/reset":
                STATE.reset()
            return self.moto_app(environ, start_response)
        access_key, region, service = sigv4_scope(environ, query)
        operation = operation_of(service, environ, query)
        STATE.count_attempt(service or "other", operation, path)
        fault = self.inject(service, operation, environ)
        if fault == "reset":
            return self.drop_connection(environ, start_response)
        if fault == "throttled":
            return self.respond(start_response, throttle_response(service))
        STATE.count(service or "other", operation)
        if service == "ebs":
            return self.respond(start_response, self.ebs(environ, path, query, access_key, region))
        return self.moto_app(environ, start_response)

    def inject(self, service: str, operation: str, environ: dict[str, Any]) -> str | None:
        faults = STATE.faults
        if not faults.applies(service, operation):
            return None
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        for kind, rate in (("reset", faults.reset_rate), ("throttled", faults.throttle_rate)):
            if rate and STATE.draw() < rate:
                STATE.count_fault(kind)
                # Drained, or werkzeug reads the unread body as the next kept-alive request.
                read_body(environ)
                return kind
        return None

    @staticmethod
    def drop_connection(environ: dict[str, Any],
                        start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Close the client's socket without a response (RST where the OS allows it)."""
        sock = environ.get("werkzeug.socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        raise ConnectionAbortedError("peer fault: connection reset")

    @staticmethod
    def peer(environ: dict[str, Any], path: str, query: dict[str, str]) -> Response:
        try:
            return peer_request(environ["REQUEST_METHOD"], path, query, read_body(environ))
        except PeerError as e:
            return json_response(e.status, {"error": str(e)})
        except (TypeError, ValueError) as e:
            return json_response(400, {"error": str(e)})

    @staticmethod
    def ebs(environ: dict[str, Any], path: str, query: dict[str, str], access_key: str,
            region: str) -> Response:
        from werkzeug.wrappers import Request
        request = Request(environ)
        name, handler, args = ebs_route(environ["REQUEST_METHOD"], path)
        if handler is None:
            return EbsError(404, "UnknownOperationException", f"no EBS operation {name}").response()
        backend = ec2_backend(account_of(request.headers, access_key), region)
        req = EbsRequest(environ["REQUEST_METHOD"], args, query, request.headers,
                         request.get_data(), backend)
        try:
            return handler(req)
        except EbsError as e:
            return e.response()

    @staticmethod
    def respond(start_response: Callable[..., Any], response: Response) -> Iterable[bytes]:
        status, headers, body = response
        reason = {200: "OK", 201: "Created", 202: "Accepted", 400: "Bad Request",
                  404: "Not Found", 409: "Conflict", 429: "Too Many Requests",
                  503: "Service Unavailable"}.get(status, "Status")
        headers = {**headers, "Content-Length": str(len(body)), "x-amzn-RequestId": request_id()}
        start_response(f"{status} {reason}", list(headers.items()))
        return [body]

# -- the server


def make_app() -> PeerApp:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    patch_ec2()
    patch_images()
    return PeerApp(DomainDispatcherApplication(create_backend_app))


def serve(host: str, port: int) -> None:
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import make_server
    # threaded: latency injected into one request must not hold up the others
    server = make_server(host, port, make_app(), threaded=True, request_handler=MotoRequestHandler)
    print(f"aws_peer listening on http://{host}:{server.server_address[1]}", flush=True)
    server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    serve(args.host, args.port)


if __name__ == "__main__":
    main()
