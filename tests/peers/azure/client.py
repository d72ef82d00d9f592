"""The test side of the Azure peer: start it as a process (`python -m tests.peers.azure`)
and talk to its /_peer/ endpoints. Standard library only: the tests' process never imports
the peer's server modules.

What a product Azure site needs is on `AzurePeerClient`: `arm_endpoint`, `authority_host`,
`ca_file`, `tenant_id`, `client_id`, `client_secret` (and the `reader_*` principal that
authenticates but may not write), `subscription_id`, `resource_groups`, `location`, and for
an azblob repository `blob_endpoint` / `connection_string` (the dev account through the
front, so faults apply). Disks and snapshots are named by their resource name (and
`group=` if two groups use one name)."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.peers.azure.accounts import (
    LOCATION,
    OPERATOR,
    READER,
    RESOURCE_GROUPS,
    SUBSCRIPTION_ID,
    TENANT_ID,
)
from tests.peers.azure.azurite import BINARY, connection_string
from tests.peers.tools import free_port, stop_process

ROOT = Path(__file__).resolve().parents[3]


class PeerStartError(RuntimeError):
    pass


class PeerError(RuntimeError):
    """A /_peer/ request was refused (unknown disk, bad arguments)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status


class AzurePeerClient:
    """What tests get from the `azure_peer` fixture."""

    tenant_id = TENANT_ID
    client_id, client_secret = OPERATOR.client_id, OPERATOR.client_secret
    reader_client_id, reader_client_secret = READER.client_id, READER.client_secret
    subscription_id = SUBSCRIPTION_ID
    resource_groups = RESOURCE_GROUPS
    source_group, recovery_group = RESOURCE_GROUPS
    location = LOCATION

    def __init__(self, port: int, ca_file: Path):
        self.port, self.ca_file = port, ca_file
        self.arm_endpoint = f"https://127.0.0.1:{port}"
        # azure-identity's `authority=`; with disable_instance_discovery=True and
        # connection_verify=ca_file.
        self.authority_host = f"127.0.0.1:{port}"
        self.ssl_context = ssl.create_default_context(cafile=str(ca_file))
        info = self._json("GET", "/_peer/info")
        self.blob_endpoint: str = info["blob_endpoint"]
        self.connection_string = connection_string(self.blob_endpoint)

    @property
    def credential_scopes(self) -> list[str]:
        """What azure-mgmt-* clients take as `credential_scopes=` for this ARM."""
        return [self.arm_endpoint + "/.default"]

    def _call(self, method: str, path: str, body: bytes | None = None, **query: Any) -> bytes:
        url = self.arm_endpoint + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        request = urllib.request.Request(url, data=body, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60, context=self.ssl_context) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            raise PeerError(e.code, e.read().decode(errors="replace")) from None

    def _json(self, method: str, path: str, payload: Any = None, **query: Any) -> Any:
        body = json.dumps(payload).encode() if payload is not None else None
        return json.loads(self._call(method, path, body, **query))

    # -- the whole peer

    def reset(self) -> None:
        """Everything fresh: no resources, blobs, grants or tokens; faults off; counters
        zero; VM provisioning delay 0."""
        self._call("POST", "/_peer/reset")

    def resources(self) -> list[dict[str, Any]]:
        """Every ARM resource: type, id, name, tags, state (diskState for disks and
        snapshots, "provisioningState/powerState" for VMs, provisioningState otherwise)."""
        return self._json("GET", "/_peer/resources")

    def stats(self) -> dict[str, Any]:
        """blobs: {disk or snapshot name (or container/blob): {requests, gets, bytes_read,
        put_pages, bytes_written, clear_pages, pagelists, diffs}}; arm: {"disks.put": n,
        "disks.beginGetAccess": n, "operations.get": n, ...}; throttled: 429s sent;
        faults: {"storage.server_busy": n, "storage.timeout": n, "storage.reset": n,
        "arm.throttle": n}."""
        return self._json("GET", "/_peer/stats")

    def reset_stats(self) -> None:
        self._call("POST", "/_peer/stats/reset")

    def faults(self, *, storage: dict[str, Any] | None = None,
               arm: dict[str, Any] | None = None, seed: int = 0) -> None:
        """Replaces the fault settings (omitted = off) and reseeds the RNG.
        storage: reset, server_busy, timeout (rates 0..1), latency (s), method, operation
        (putpage, clearpage, pagelist, get, getproperties, putblob, putblock, putblocklist,
        delete, ...). arm: throttle (rate of 429), retry_after (s), method, operation
        ("disks.beginGetAccess", "virtualMachines.put", ...)."""
        self._json("POST", "/_peer/faults", {"storage": storage or {}, "arm": arm or {},
                                             "seed": seed})

    def clear_faults(self) -> None:
        self.faults()

    def expire_sas(self) -> None:
        """Every SAS handed out so far expires now (diskState is left as it is)."""
        self._call("POST", "/_peer/sas/expire")

    def set_vm_provisioning_delay(self, seconds: float) -> None:
        """VM create answers Creating and succeeds only `seconds` later."""
        self._json("POST", "/_peer/settings", {"vm_provisioning_delay": seconds})

    # -- disk content, as a guest sees it

    def write(self, disk: str, offset: int, data: bytes, group: str | None = None) -> None:
        """A guest write (512-byte aligned), journalled like a Put Page."""
        self._call("POST", "/_peer/disk/write", data, name=disk, offset=offset, group=group)

    def clear(self, disk: str, offset: int, length: int, group: str | None = None) -> None:
        """A guest discard: the pages are cleared (a ClearRange in later diffs)."""
        self._call("POST", "/_peer/disk/clear", b"", name=disk, offset=offset, length=length,
                   group=group)

    def read(self, name: str, offset: int, length: int, group: str | None = None) -> bytes:
        """Bytes of a disk or snapshot."""
        return self._call("GET", "/_peer/disk/read", name=name, offset=offset, length=length,
                          group=group)

    def sha256(self, name: str, group: str | None = None) -> str:
        """Hex SHA-256 of a disk's or snapshot's whole virtual content."""
        return self._json("GET", "/_peer/disk/sha256", name=name, group=group)["sha256"]

    def valid_ranges(self, name: str, group: str | None = None) -> list[tuple[int, int]]:
        """[start, end) of the pages holding data, from the peer's journal."""
        return [tuple(r) for r in self._json("GET", "/_peer/disk/pages", name=name,
                                             group=group)["valid"]]


class PeerProcess:
    """The peer on free loopback ports; ready when /_peer/info answers over TLS."""

    def __init__(self, workdir: Path, startup_timeout: float = 60.0):
        self.workdir = Path(workdir)
        self.log_path = self.workdir / "peer.log"
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.client: AzurePeerClient | None = None

    def start(self) -> AzurePeerClient:
        if not BINARY.exists():
            raise PeerStartError(f"{BINARY} is missing: run `make test`, which installs "
                                 "azurite with npm")
        port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        cert = self.workdir / "tls" / "arm.pem"
        cert.unlink(missing_ok=True)  # a stale one from an earlier run
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.peers.azure", "--port", str(port),
                 "--storage-port", str(free_port()), "--workdir", str(self.workdir)],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if cert.exists():
                    self.client = AzurePeerClient(port, cert)
                    return self.client
            except (urllib.error.URLError, OSError, ValueError, ssl.SSLError):
                pass
            time.sleep(0.05)  # between polls; readiness is the answer, not the delay
        self.stop()
        raise PeerStartError(f"the Azure peer did not start; see {self.log_path}")

    def stop(self) -> None:
        stop_process(self.process)
