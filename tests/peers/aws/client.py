"""The test side of the AWS peer: start it as a process (`python -m tests.peers.aws`) and
talk to its /_peer/ endpoints. Standard library only: the tests' process never imports
moto or the peer's server modules."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

from tests.peers.tools import free_port, stop_process


class PeerStartError(RuntimeError):
    pass


class AwsPeerClient:
    """What tests get from the `aws_peer` fixture. Standard library only (urllib)."""

    region = "us-east-1"

    def __init__(self, endpoint: str):
        self.endpoint = endpoint

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing-secret", "AWS_DEFAULT_REGION": self.region}

    def _call(self, method: str, path: str, body: bytes | None = None,
              headers: dict[str, str] | None = None, **query: int) -> bytes:
        import urllib.parse
        import urllib.request
        url = self.endpoint + path + ("?" + urllib.parse.urlencode(query) if query else "")
        request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read()

    def reset(self) -> None:
        """All of moto's state and the peer's (faults, counters, volume contents)."""
        self._call("POST", "/moto-api/reset")
        self._call("POST", "/_peer/reset")

    def faults(self, **settings: Any) -> None:
        """throttle_rate, reset_rate, latency_ms, services, operations,
        token_lifetime_seconds, seed: see `tests.peers.aws.state.Faults`."""
        self._call("POST", "/_peer/faults", json.dumps(settings).encode())

    def clear_faults(self) -> None:
        self._call("DELETE", "/_peer/faults")

    def stats(self) -> dict[str, dict[str, int]]:
        return json.loads(self._call("GET", "/_peer/stats"))

    def reset_stats(self) -> None:
        self._call("POST", "/_peer/stats/reset")

    def write_volume(self, volume_id: str, offset: int, data: bytes) -> None:
        self._call("POST", f"/_peer/volumes/{volume_id}/write", data, offset=offset)

    def discard_volume(self, volume_id: str, offset: int, length: int) -> None:
        self._call("POST", f"/_peer/volumes/{volume_id}/discard", b"", offset=offset, length=length)

    def read_volume(self, volume_id: str, offset: int, length: int) -> bytes:
        return self._call("GET", f"/_peer/volumes/{volume_id}/read", offset=offset, length=length)

    def volume_sha256(self, volume_id: str) -> str:
        return json.loads(self._call("GET", f"/_peer/volumes/{volume_id}/sha256"))["sha256"]

    @contextlib.contextmanager
    def iam_enforced(self) -> Iterator[None]:
        """moto checks IAM identity policies (not bucket policies) inside the block, from
        its next request on, and stops at the end of it."""
        def reset_auth(count: str) -> None:  # moto wants text/plain here
            self._call("POST", "/moto-api/reset-auth", count.encode(),
                       headers={"Content-Type": "text/plain"})
        reset_auth("0")
        try:
            yield
        finally:
            reset_auth("inf")


class PeerProcess:
    """`python -m tests.peers.aws` on a free loopback port, ready when data.json answers."""

    def __init__(self, log_path: Any, startup_timeout: float = 30.0):
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self.process: Any = None
        self.client: AwsPeerClient | None = None

    def start(self) -> AwsPeerClient:
        import subprocess
        import sys
        from pathlib import Path
        port = free_port()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.peers.aws",
                 "--host", "127.0.0.1", "--port", str(port)],
                cwd=Path(__file__).resolve().parents[3], stdout=log, stderr=subprocess.STDOUT)
        self.client = AwsPeerClient(f"http://127.0.0.1:{port}")
        self.wait_ready()
        return self.client

    def wait_ready(self) -> None:
        import urllib.error
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                self.client._call("GET", "/moto-api/data.json")  # type: ignore[union-attr]
                return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)  # between polls; readiness is the answer, not the delay
        self.stop()
        raise PeerStartError(f"the AWS peer did not start; see {self.log_path}")

    def stop(self) -> None:
        stop_process(self.process)

