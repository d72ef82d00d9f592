"""Maps dr_common.errors to canonical gRPC status codes with google.rpc details.

An InvalidArgument carries a google.rpc.BadRequest naming the wrong field, as AIP-193
asks, so clients (drctl, grpcurl users) can show which field was wrong. Anything that
is not a DRError is logged with its traceback here and reaches the client as INTERNAL
with no internals in the message.
"""

from __future__ import annotations

import functools

import grpc
import structlog
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from dr_common import errors

log = structlog.get_logger()

_CODES: list[tuple[type[errors.DRError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.DRError, grpc.StatusCode.INTERNAL),
]


def to_status(exc: errors.DRError) -> status_pb2.Status:
    code = next(c for cls, c in _CODES if isinstance(exc, cls))
    details = []
    info = error_details_pb2.ErrorInfo(reason=exc.reason, domain="hybrid-dr")
    details.append(info)
    if isinstance(exc, errors.InvalidArgument) and exc.field:
        details.append(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=exc.field,
                                                        description=exc.message)]))
    packed = []
    for d in details:
        a = any_pb2.Any()
        a.Pack(d)
        packed.append(a)
    return status_pb2.Status(code=getattr(code_pb2, code.name), message=exc.message,
                             details=packed)


def rpc(method):
    """Decorates a grpc.aio servicer method: DRError -> status with details."""

    @functools.wraps(method)
    async def wrapper(self, request, context: grpc.aio.ServicerContext):
        try:
            return await method(self, request, context)
        except errors.DRError as exc:
            await context.abort_with_status(rpc_status.to_status(to_status(exc)))
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("unexpected error", method=method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL,
                                f"internal error in {method.__name__}; see dr-control's log")

    return wrapper
