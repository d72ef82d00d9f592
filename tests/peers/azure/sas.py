"""The SAS tokens of managed-disk access, as Azure hands them out from beginGetAccess:
`sv=2018-03-28&sr=b&si=<grant id>&sig=<signature>` - a signed identifier instead of
start/expiry/permissions in the URL, so ending access (or expiry) invalidates a URL the
client still holds. The signature binds the identifier to the blob's path."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import quote

from tests.peers.azure.azurite import ACCOUNT
from tests.peers.azure.blobs import BLOB
from tests.peers.azure.state import Grant, PeerState

SAS_VERSION = "2018-03-28"  # what Azure's disk SAS URLs carry
SAS_PARAMS = ("sv", "sr", "si", "sig", "se", "st", "sp", "spr", "ss", "srt", "skoid")

# Storage operations (faults.py's names) each access level allows: a write SAS of an
# upload also reads, as Azure's does.
ALLOWED = {"Read": {"get", "getproperties", "pagelist"},
           "Write": {"get", "getproperties", "pagelist", "putpage", "clearpage"}}


def blob_path(container: str) -> str:
    return f"/{ACCOUNT}/{container}/{BLOB}"


def signature(key: bytes, si: str, container: str) -> str:
    mac = hmac.new(key, f"{si}\n{blob_path(container)}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def sas_query(key: bytes, grant: Grant) -> str:
    sig = signature(key, grant.si, grant.container)
    return f"sv={SAS_VERSION}&sr=b&si={grant.si}&sig={quote(sig, safe='')}"


class Denied(Exception):
    """A SAS request Azure would refuse: (status, x-ms-error-code, message, detail)."""

    def __init__(self, status: int, code: str, message: str, detail: str = ""):
        super().__init__(message)
        self.status, self.code, self.message, self.detail = status, code, message, detail


AUTH_MESSAGE = ("Server failed to authenticate the request. Make sure the value of "
                "Authorization header is formed correctly including the signature.")


def check(state: PeerState, container: str, query: dict[str, str], operation: str) -> Grant:
    """The grant a request's SAS is, or Denied with Azure's error for it."""
    si, sig = query.get("si", ""), query.get("sig", "")
    if not si or not sig:
        raise Denied(403, "AuthenticationFailed", AUTH_MESSAGE,
                     "Managed disk storage accepts only the SAS of a disk's access grant.")
    with state.lock:
        grant = state.grants.get(si)
    good = signature(state.sas_key, si, container)
    if grant is None or grant.container != container or not hmac.compare_digest(good, sig):
        raise Denied(403, "AuthenticationFailed", AUTH_MESSAGE,
                     "Signature did not match. String to sign used was r")
    now = time.time()
    status = grant.state(now)
    if status == "revoked":
        # endGetAccess deletes the signed identifier the SAS names.
        raise Denied(403, "AuthenticationFailed", AUTH_MESSAGE,
                     f"Signed identifier '{si}' not found (access was ended).")
    if status == "expired":
        raise Denied(403, "AuthenticationFailed", AUTH_MESSAGE,
                     f"Signature not valid in the specified time frame: Expiry "
                     f"[{time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime(grant.expires))}]"
                     f" - Current [{time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime(now))}]")
    if operation not in ALLOWED[grant.access]:
        # Azure's code for a SAS lacking the permission (AuthorizationFailure is for
        # network rules and the like).
        raise Denied(403, "AuthorizationPermissionMismatch",
                     "This request is not authorized to perform this operation using this "
                     "permission.")
    return grant
