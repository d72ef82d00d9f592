"""Exit codes and the text of every failure drctl shows.

Scripts branch on the exit code, people read the message, so both are fixed here:
0 success, 1 the server (or the operation it ran) said no, 2 the command line is
wrong, 3 dr-control cannot be reached, 130 interrupted by the operator.
"""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A failure drctl reports as one "error: ..." line and an exit code."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(CliError):
    """The command line is wrong in a way argparse cannot see (e.g. a malformed name)."""

    exit_code = EXIT_USAGE


def describe_rpc_error(err: grpc.RpcError, *, server: str, timeout: float) -> tuple[int, list[str]]:
    """The exit code and stderr lines for a failed call."""
    code = _call_attr(err, "code")
    details = _call_attr(err, "details") or ""
    name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    if code == grpc.StatusCode.UNAVAILABLE:
        return EXIT_UNREACHABLE, [
            f"error: cannot reach dr-control at {server}: is it running?",
            f"  ({name}: {details})",
        ]
    lines = [f"error: {name}: {details}"]
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        lines.append(f"  no answer within {timeout:g}s; if dr-control is busy, raise --timeout")
    lines.extend(_status_details(err))
    return EXIT_FAILURE, lines


def _call_attr(err: grpc.RpcError, attr: str):
    # A grpc.RpcError raised by a stub is also a grpc.Call; the base class promises nothing.
    method = getattr(err, attr, None)
    return method() if callable(method) else None


def _status_details(err: grpc.RpcError) -> list[str]:
    """Lines for the google.rpc details the server attached (which field was wrong)."""
    try:
        status = rpc_status.from_call(err)
    except (AttributeError, ValueError):
        # Not a call, or trailers that disagree with the call's status: show what we have.
        return []
    if status is None:
        return []
    lines = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            lines.extend(
                f"  field {v.field}: {v.description}" for v in bad_request.field_violations
            )
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            lines.append(f"  reason: {info.reason}")
    return lines


def task_error_text(error) -> str:
    """"reason: message" of a TaskError; "" when unset."""
    if error.reason and error.message:
        return f"{error.reason}: {error.message}"
    return error.reason or error.message
