"""Responses and errors of the AWS peer in each service's wire shape: EBS's rest-json
errors, S3's and EC2's XML throttling answers, and the /_peer/ endpoints' own errors."""

from __future__ import annotations

import json
import uuid
from typing import Any

# (HTTP status, headers, body): what every handler of the peer returns.
Response = tuple[int, dict[str, str], bytes]


class EbsError(Exception):
    """An EBS direct API error, serialized as AWS's rest-json error."""

    def __init__(self, status: int, code: str, message: str, reason: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.reason = status, code, message, reason

    def response(self) -> Response:
        body: dict[str, str] = {"message": self.message}
        if self.reason:
            body["Reason"] = self.reason
        return json_response(self.status, body, {"x-amzn-ErrorType": self.code})


def invalid(message: str, reason: str = "INVALID_PARAMETER_VALUE") -> EbsError:
    return EbsError(400, "ValidationException", message, reason)


def not_found(snapshot_id: str) -> EbsError:
    return EbsError(404, "ResourceNotFoundException",
                    f"The snapshot '{snapshot_id}' does not exist.", "SNAPSHOT_NOT_FOUND")


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    headers = {"Content-Type": "application/json", **(headers or {})}
    return status, headers, json.dumps(body).encode()


def request_id() -> str:
    return str(uuid.uuid4())


def throttle_response(service: str) -> Response:
    if service == "ebs":
        return EbsError(429, "ThrottlingException", "Rate exceeded").response()
    if service == "s3":
        body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>"
                "<Message>Please reduce your request rate.</Message>"
                f"<RequestId>{request_id()}</RequestId><HostId>peer</HostId></Error>")
        return 503, {"Content-Type": "application/xml"}, body.encode()
    body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>"
            "<Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>"
            f"</Error></Errors><RequestID>{request_id()}</RequestID></Response>")
    return 503, {"Content-Type": "text/xml"}, body.encode()


class PeerError(Exception):
    """A refused /_peer/ control request: answered as {"error": message} with `status`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status

