"""The connection to dr-control: one channel, a stub per service, and paging.

Plaintext gRPC unless a CA file is given: then TLS, presenting drctl's client
certificate (dr-control asks every peer for one when it has a client CA). An API token,
when given, goes with every call as `authorization: Bearer` metadata (DESIGN.md 5). No call waits for the server
to come up (no wait_for_ready): an operator wants "not running" at once, not a hang.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
from google.protobuf.message import Message

from dr_common import tls
from dr_common.errors import DRError
from dr_common.proto.dr.v1 import (
    admin_pb2_grpc,
    inventory_pb2_grpc,
    nodes_pb2_grpc,
    operations_pb2_grpc,
    protection_pb2_grpc,
    recovery_pb2_grpc,
    recovery_points_pb2_grpc,
    restore_pb2_grpc,
)

from .errors import CliError


class Client:
    """Stubs sharing one channel; closes the channel when the `with` block ends."""

    def __init__(self, target: str, timeout: float, *, tls_files: TlsFiles | None = None,
                 token: str = ""):
        self.target = target
        self.timeout = timeout
        self._channel = open_channel(target, tls_files=tls_files, token=token)
        self.admin = admin_pb2_grpc.AdminServiceStub(self._channel)
        self.inventory = inventory_pb2_grpc.InventoryServiceStub(self._channel)
        self.protection = protection_pb2_grpc.ProtectionServiceStub(self._channel)
        self.recovery_points = recovery_points_pb2_grpc.RecoveryPointServiceStub(self._channel)
        self.restore = restore_pb2_grpc.RestoreServiceStub(self._channel)
        self.operations = operations_pb2_grpc.OperationsServiceStub(self._channel)
        self.nodes = nodes_pb2_grpc.NodeServiceStub(self._channel)
        self.recovery = recovery_pb2_grpc.RecoveryServiceStub(self._channel)

    def call(self, method: Callable, request: Message):
        """One unary call with the --timeout deadline."""
        return method(request, timeout=self.timeout)

    def list_all(self, method: Callable, request: Message, field: str) -> Iterator[Message]:
        """Every item of a List call, following next_page_token (AIP-158)."""
        request = _copy(request)  # page_token is set on our copy, not the caller's
        seen: set[str] = set()
        while True:
            response = self.call(method, request)
            yield from getattr(response, field)
            token = response.next_page_token
            if not token:
                return
            if token in seen:
                # A server bug must not turn `drctl ... list` into an endless loop.
                raise CliError(f"dr-control returned page token {token!r} twice; stopping")
            seen.add(token)
            request.page_token = token

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a TLS client: the CA that signed dr-control's certificate, and ours."""

    ca_file: str
    cert_file: str = ""
    key_file: str = ""


class _BearerToken(grpc.UnaryUnaryClientInterceptor):
    """Adds the API token to every call (the secret lives only in this object)."""

    def __init__(self, token: str):
        self._metadata = (("authorization", f"Bearer {token}"),)

    def intercept_unary_unary(self, continuation, details, request):
        metadata = (*(details.metadata or ()), *self._metadata)
        return continuation(details._replace(metadata=metadata), request)


def open_channel(target: str, *, tls_files: TlsFiles | None = None,
                 token: str = "") -> grpc.Channel:
    """A channel to dr-control: TLS when `tls_files`, the token on every call when given."""
    if tls_files is None:
        channel = grpc.insecure_channel(target)
    else:
        try:
            creds = tls.channel_credentials(tls_files.ca_file, tls_files.cert_file,
                                            tls_files.key_file)
        except DRError as e:
            raise CliError(e.message.replace("tls_ca_file", "--ca-file")
                           .replace("tls_cert_file", "--cert-file")
                           .replace("tls_key_file", "--key-file")) from None
        channel = grpc.secure_channel(target, creds)
    return grpc.intercept_channel(channel, _BearerToken(token)) if token else channel


def _copy(message: Message) -> Message:
    clone = type(message)()
    clone.CopyFrom(message)
    return clone
