"""The connection to dr-control: one channel, a stub per service, and paging.

Plaintext gRPC for now (grpc.insecure_channel); mutual TLS and API tokens will plug in
here when the server offers them (DESIGN.md section 5). No call waits for the server
to come up (no wait_for_ready): an operator wants "not running" at once, not a hang.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
from google.protobuf.message import Message

from dr_common.proto.dr.v1 import (
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

    def __init__(self, target: str, timeout: float):
        self.target = target
        self.timeout = timeout
        self._channel = grpc.insecure_channel(target)
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


def _copy(message: Message) -> Message:
    clone = type(message)()
    clone.CopyFrom(message)
    return clone
