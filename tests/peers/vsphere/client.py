"""The test side of the vSphere peer: build vcsim, start the peer as a process
(`python -m tests.peers.vsphere`) and talk to its /_peer/ endpoints. Standard library only:
the tests' process never imports the front's modules.

A disk is named by its VM (name, e.g. "DC0_H0_VM0", or moref "vm-57") and its device key
(int) or label ("Hard disk 1")."""

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

from tests.peers.tools import free_port, stop_process
from tests.peers.vsphere.build import BuildError, vcsim_binary
from tests.peers.vsphere.tls import thumbprints
from tests.peers.vsphere.vcsim import PASSWORD, USER

ROOT = Path(__file__).resolve().parents[3]


class PeerStartError(RuntimeError):
    pass


class PeerError(RuntimeError):
    """A /_peer/ request was refused (unknown VM or disk, bad arguments)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status


class VspherePeerClient:
    """What tests get from the `vsphere_peer` fixture."""

    user, password = USER, PASSWORD
    datacenter, datastore = "DC0", "LocalDS_0"

    def __init__(self, host: str, port: int, ca_file: Path):
        self.host, self.port, self.ca_file = host, port, ca_file
        self.url = f"https://{host}:{port}/sdk"
        self.thumbprint_sha256, self.thumbprint_sha1 = thumbprints(ca_file)
        self.ssl_context = ssl.create_default_context(cafile=str(ca_file))

    def _call(self, method: str, path: str, body: bytes | None = None,
              **query: Any) -> bytes:
        url = f"https://{self.host}:{self.port}{path}"
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
        """A fresh inventory (vcsim restarted), no disk content, faults, stats, sessions or
        datastore settings; the outage off."""
        self._call("POST", "/_peer/reset")

    def vms(self) -> list[dict[str, Any]]:
        """vcsim's VMs as the peer sees them: ref, name, power, cbt, tools, disks (key,
        label, file, capacity, change_id), snapshots (ref, parent, name)."""
        return self._json("GET", "/_peer/vms")

    # -- guest I/O and disk state

    def write(self, vm: str, disk: int | str, offset: int, data: bytes) -> None:
        """A guest write: goes to the running layer (the delta while snapshots exist)."""
        self._call("POST", "/_peer/disk/write", data, vm=vm, disk=disk, offset=offset)

    def discard(self, vm: str, disk: int | str, offset: int, length: int) -> None:
        self._call("POST", "/_peer/disk/discard", b"", vm=vm, disk=disk, offset=offset,
                   length=length)

    def read(self, vm: str, disk: int | str, offset: int, length: int,
             base: bool = False) -> bytes:
        """The guest's current view (or, with base=True, the base file's content)."""
        return self._call("GET", "/_peer/disk/read", vm=vm, disk=disk, offset=offset,
                          length=length, base=1 if base else None)

    def sha256(self, vm: str, disk: int | str, base: bool = False) -> str:
        """Hex SHA-256 of the whole disk as the guest sees it (or of the base file)."""
        return self._json("GET", "/_peer/disk/sha256", vm=vm, disk=disk,
                          base=1 if base else None)["sha256"]

    def disk_info(self, vm: str, disk: int | str) -> dict[str, Any]:
        """capacity, base, file (the running layer), change_id, cbt_pending,
        allocated_blocks, layers."""
        return self._json("GET", "/_peer/disk/info", vm=vm, disk=disk)

    def cbt_reset(self, vm: str, disk: int | str) -> None:
        """As vSphere resets CBT (e.g. after a crash): a new tracking id, old ids unknown."""
        self._call("POST", "/_peer/disk/cbt_reset", b"", vm=vm, disk=disk)

    def set_tools(self, vm: str, running: bool) -> None:
        self._json("POST", "/_peer/tools", {"vm": vm, "running": running})

    def set_datastore(self, name: str = "LocalDS_0", *, capacity: int, free: int) -> None:
        """summary.capacity/freeSpace; later PUTs use up `free` and fail when it is gone."""
        self._json("POST", "/_peer/datastore", {"name": name, "capacity": capacity,
                                                "free": free})

    def set_query_limits(self, *, span: int | None = None, extents: int | None = None) -> None:
        """QueryChangedDiskAreas answers cover at most `span` bytes (default 1 GiB) and
        `extents` extents (default 2048); callers loop on startOffset."""
        self._json("POST", "/_peer/query_limits",
                   {k: v for k, v in (("span", span), ("extents", extents)) if v is not None})

    # -- faults

    def faults(self, method: str, *, fault: str = "", in_task: bool = False,
               task_seconds: float = 0.0, reset: bool = False, count: int | None = None,
               rate: float = 1.0, message: str = "") -> None:
        """Adds a rule (they accumulate until clear_faults). `method` is a SOAP method
        ("CreateSnapshot_Task") or "GET /folder" / "PUT /folder" (datastore access):
          fault="TaskInProgress"            the call answers that vim25 fault
          fault=..., in_task=True           the call answers a task that fails with it
          task_seconds=S                    the call's task stays running S seconds
          reset=True                        the connection is reset without an answer
        for the next `count` matching calls (None: every one), each with probability `rate`."""
        self._json("POST", "/_peer/faults", {
            "method": method, "fault": fault, "in_task": in_task, "task_seconds": task_seconds,
            "reset": reset, "count": count, "rate": rate, "message": message})

    def clear_faults(self, seed: int = 0) -> None:
        self._call("DELETE", "/_peer/faults", seed=seed)

    def outage(self, on: bool) -> None:
        """While on, every vSphere request (SOAP, /folder) gets its connection reset;
        vcsim's state (VMs, snapshots, sessions) is kept, as a vCenter restart keeps it."""
        self._json("POST", "/_peer/outage", {"on": on})

    def stats(self) -> dict[str, Any]:
        """calls (SOAP method -> count), served (datastore path -> bytes sent by GET),
        received (datastore path -> bytes taken by PUT), faults (injected, by
        "method kind"), snapshots (VM name -> current snapshot count)."""
        return self._json("GET", "/_peer/stats")

    def reset_stats(self) -> None:
        self._call("POST", "/_peer/stats/reset")


class PeerProcess:
    """The peer on a free loopback port; ready when /_peer/stats answers over TLS."""

    def __init__(self, workdir: Path, startup_timeout: float = 60.0):
        self.workdir = Path(workdir)
        self.log_path = self.workdir / "peer.log"
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.client: VspherePeerClient | None = None

    def start(self) -> VspherePeerClient:
        try:
            binary = vcsim_binary()
        except BuildError as e:
            raise PeerStartError(str(e)) from None
        port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "tls" / "vcenter.pem").unlink(missing_ok=True)  # a stale one
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.peers.vsphere", "--port", str(port),
                 "--workdir", str(self.workdir), "--vcsim", str(binary)],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.wait_ready(port)
        assert self.client is not None
        return self.client

    def wait_ready(self, port: int) -> None:
        cert = self.workdir / "tls" / "vcenter.pem"
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                break
            try:
                if self.client is None and cert.exists():
                    self.client = VspherePeerClient("127.0.0.1", port, cert)
                if self.client is not None:
                    self.client.stats()
                    return
            except (urllib.error.URLError, OSError, ValueError, ssl.SSLError):
                self.client = None  # the certificate may have been half written
            time.sleep(0.05)  # between polls; readiness is the answer, not the delay
        self.stop()
        raise PeerStartError(f"the vSphere peer did not start; see {self.log_path}")

    def stop(self) -> None:
        stop_process(self.process)
