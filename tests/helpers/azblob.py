"""Azure Blob test helpers: settings for the product's clients on Azurite, and `BlobFront`,
an HTTP front to Azurite that injects what Azurite never does (Storage's throttling,
connection resets, bytes damaged in transit) and gives two answers as Azure does.

Azurite answers a request it cannot authenticate with 403 `AuthorizationFailure`; Azure
says 403 `AuthenticationFailed` ("Server failed to authenticate the request"). A body
that does not match its Content-MD5 gets 400 `InvalidOperation` from Azurite, 400
`Md5Mismatch` from Azure. The front corrects both answers, so the product is tested
against Azure's (PEERS.md: the harness corrects the peer, never the product)."""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Self

import aiohttp
from aiohttp import web

from dr_common.azure import AzureSettings
from tests.peers.azure.azurite import ACCOUNT, ACCOUNT_KEY


def azurite_settings(endpoint: str, **overrides: Any) -> AzureSettings:
    """The site's AzureSettings for the development account at `endpoint`
    (`http://127.0.0.1:PORT/devstoreaccount1`), its key unless overridden."""
    values: dict[str, Any] = {"subscription_id": "00000000-0000-0000-0000-000000000000",
                                  "resource_groups": ("dr-test",), "storage_account_url": endpoint,
                                  "storage_account_key": ACCOUNT_KEY}
    values.update(overrides)
    return AzureSettings(**values)


# Storage's own error answers, as Azure sends them (x-ms-error-code and an XML body).
ANSWERS = {
    "throttle": (503, "ServerBusy", "The server is busy."),
    "timeout": (500, "OperationTimedOut", ("The operation could not be completed within "
                "the permitted time.")),
}
# Where Azurite's answer differs from Azure's: (status, Azurite's code, a phrase of its
# message) → Azure's code. A bad Shared Key signature; a body whose Content-MD5 does not
# match (Azure: 400 Md5Mismatch).
_CORRECTIONS = {
    403: [("AuthorizationFailure", b"failed to authenticate", "AuthenticationFailed")],
    400: [("InvalidOperation", b"contentMD5 doesn't match", "Md5Mismatch")],
}
# Headers aiohttp recomputes for the hop.
_HOP = frozenset({"host", "content-length", "transfer-encoding", "connection",
                  "keep-alive"})


class BlobFront:
    """`async with BlobFront(azurite.endpoint) as front:` then point a client at
    `front.endpoint`. `front.fault(kind, times, method=...)` makes the next `times`
    requests (of `method`, if given) fail as `kind` says: "throttle" (503 ServerBusy),
    "timeout" (500 OperationTimedOut), "reset" (the connection drops before any answer),
    "corrupt-response" (one byte of the answer's body flipped), "corrupt-request" (one
    byte of the request's body flipped on its way to Azurite). `front.injected` counts
    what was done."""

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/").rsplit("/", 1)[0]  # scheme://host:port
        self.endpoint = ""
        self.injected: collections.Counter[str] = collections.Counter()
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._faults: list[list[Any]] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def fault(self, kind: str, times: int = 1, *, method: str = "") -> None:
        self._faults.append([kind, times, method])

    def clear(self) -> None:
        self._faults.clear()

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.endpoint = f"http://127.0.0.1:{port}/{ACCOUNT}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _take(self, method: str) -> str:
        for f in self._faults:
            kind, times, only = f
            if times > 0 and (not only or only == method):
                f[1] -= 1
                self.injected[kind] += 1
                return kind
        return ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((request.method, request.path_qs, dict(request.headers)))
        kind = self._take(request.method)
        if kind == "reset":
            assert request.transport is not None
            request.transport.abort()
            await asyncio.sleep(0)
            return web.Response()
        if kind in ANSWERS:
            status, code, message = ANSWERS[kind]
            xml = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
                   f'<Message>{message}</Message></Error>').encode()
            return web.Response(status=status, headers={"x-ms-error-code": code},
                                body=None if request.method == "HEAD" else xml,
                                content_type="application/xml")
        if kind == "corrupt-request" and body:
            body = _flip(body)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        assert self._session is not None
        async with self._session.request(
                request.method, self.upstream + request.path_qs, headers=headers,
                data=body or None, allow_redirects=False,
                skip_auto_headers=("Content-Type", "Accept-Encoding", "User-Agent",
                                   "Accept")) as up:
            answer = await up.read()
            out = {k: v for k, v in up.headers.items() if k.lower() not in _HOP}
            status = up.status
        for azurite_says, text, azure_says in _CORRECTIONS.get(status, ()):
            if out.get("x-ms-error-code") == azurite_says and text in answer:
                out["x-ms-error-code"] = azure_says
                answer = answer.replace(f"<Code>{azurite_says}</Code>".encode(),
                                        f"<Code>{azure_says}</Code>".encode())
        if kind == "corrupt-response" and answer:
            answer = _flip(answer)
        return web.Response(status=status, headers=out,
                            body=None if request.method == "HEAD" else answer)


def _flip(data: bytes) -> bytes:
    mid = len(data) // 2
    return data[:mid] + bytes([data[mid] ^ 0x01]) + data[mid + 1:]
