"""The control API's servicer decorator: DRError -> gRPC status with google.rpc details
(the mapping itself is dr_common.grpc_errors, shared with the nodes' TransferService).

An InvalidArgument carries a google.rpc.BadRequest naming the wrong field, as AIP-193
asks, so clients (drctl, grpcurl users) can show which field was wrong. Anything that
is not a DRError is logged with its traceback here and reaches the client as INTERNAL
with no internals in the message.
"""

from __future__ import annotations

import functools

import grpc
import structlog

from dr_common import errors, grpc_errors

log = structlog.get_logger()


def rpc(method):
    """Decorates a grpc.aio servicer method: DRError -> status with details."""

    @functools.wraps(method)
    async def wrapper(self, request, context: grpc.aio.ServicerContext):
        try:
            return await method(self, request, context)
        except errors.DRError as exc:
            await grpc_errors.abort(context, exc)
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("unexpected error", method=method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL,
                                f"internal error in {method.__name__}; see dr-control's log")

    return wrapper
