"""Errors on the wire: one mapping between `DRError` and gRPC status, used by both
daemons — the control plane's API (dr_control/api/errors.py) and the node-to-node
TransferService (dr_node/transfer).

A status carries a canonical code (AIP-193), the error's message, and google.rpc
details: an ErrorInfo whose `reason` is the error's stable reason and whose metadata
says whether trying again may help, and for an InvalidArgument a BadRequest naming the
wrong field. `from_rpc_error` reads them back, so an error crosses a hop with its own
words, reason and retryability.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from dr_common import errors

DOMAIN = "hybrid-dr"

_BY_CLASS: list[tuple[type[errors.DRError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
]
# Errors raised with a reason rather than a class (e.g. the transfer's credit checks).
_BY_REASON = {
    "invalid-argument": grpc.StatusCode.INVALID_ARGUMENT,
    "not-found": grpc.StatusCode.NOT_FOUND,
    "permission-denied": grpc.StatusCode.PERMISSION_DENIED,
    "credit-violation": grpc.StatusCode.FAILED_PRECONDITION,
}


def status_code(err: errors.DRError) -> grpc.StatusCode:
    for cls, code in _BY_CLASS:
        if isinstance(err, cls):
            return code
    if err.reason in _BY_REASON:
        return _BY_REASON[err.reason]
    return grpc.StatusCode.UNAVAILABLE if err.retryable else grpc.StatusCode.INTERNAL


def to_status(err: errors.DRError) -> status_pb2.Status:
    code = status_code(err)
    details = [error_details_pb2.ErrorInfo(
        reason=err.reason, domain=DOMAIN,
        metadata={"retryable": "true" if err.retryable else "false"})]
    if isinstance(err, errors.InvalidArgument) and err.field:
        details.append(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=err.field,
                                                        description=err.message)]))
    packed = []
    for d in details:
        a = any_pb2.Any()
        a.Pack(d)
        packed.append(a)
    return status_pb2.Status(code=getattr(code_pb2, code.name), message=err.message,
                             details=packed)


async def abort(context: grpc.aio.ServicerContext, err: errors.DRError) -> None:
    """Ends the call with `err` (raises, as grpc's abort does)."""
    await context.abort_with_status(rpc_status.to_status(to_status(err)))


def from_rpc_error(e: grpc.RpcError) -> errors.DRError | None:
    """The DRError a peer of ours ended the call with, or None when the status did not
    come from one (the transport broke, a proxy answered)."""
    status = rpc_status.from_call(e)
    if status is None:
        return None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Is(info.DESCRIPTOR) and detail.Unpack(info) and info.domain == DOMAIN:
            return errors.DRError(status.message, reason=info.reason,
                                  retryable=info.metadata.get("retryable") == "true")
    return None
