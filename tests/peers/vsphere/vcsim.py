"""vcsim as a child process of the front (on a loopback port, plain HTTP) and a client of
its /_vcsim/ JSON API (vcsim/main.go). `restart()` gives a fresh inventory: that is how the
peer resets, since the simulator has no reset of its own."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

USER = "administrator@vsphere.local"
PASSWORD = "peer-Passw0rd!"


class VcsimError(RuntimeError):
    pass


class Vcsim:
    def __init__(self, binary: Path, log_path: Path):
        self.binary, self.log_path = binary, log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.local = threading.local()

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(self.binary), "-listen", "127.0.0.1:0", "-user", USER, "-password", PASSWORD],
            stdout=subprocess.PIPE, stderr=log)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()  # printed once it listens
        match = re.search(r"listening on [\d.]+:(\d+)", line)
        if not match:
            raise VcsimError(f"vcsim did not start ({line!r}); see {self.log_path}")
        self.port = int(match.group(1))
        self.local = threading.local()  # connections to the old process are useless

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    # -- HTTP to vcsim, one kept-alive connection per thread

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None,
                ) -> tuple[int, list[tuple[str, str]], bytes]:
        for attempt in (0, 1):
            conn = getattr(self.local, "conn", None)
            if conn is None or getattr(self.local, "port", 0) != self.port:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                self.local.conn, self.local.port = conn, self.port
            try:
                conn.request(method, path, body=body, headers=headers or {})
                resp = conn.getresponse()
                return resp.status, resp.getheaders(), resp.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                self.local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def api(self, path: str, payload: dict[str, Any] | None = None) -> Any:
        body = json.dumps(payload).encode() if payload is not None else None
        status, _, data = self.request("POST" if body else "GET", path, body,
                                       {"Content-Type": "application/json"})
        if status != 200:
            raise VcsimError(f"{path}: {status} {data.decode(errors='replace').strip()}")
        return json.loads(data)

    def vms(self) -> list[dict[str, Any]]:
        return self.api("/_vcsim/vms")

    def set_disk(self, kind: str, ref: str, key: int, change_id: str, file: str = "",
                 parents: list[str] | None = None, capacity: int = 0, label: str = "") -> None:
        self.api("/_vcsim/disk", {"Type": kind, "Ref": ref, "Key": key, "ChangeID": change_id,
                                  "File": file, "Parents": parents or [], "Capacity": capacity,
                                  "Label": label})

    def task_info(self, ref: str) -> dict[str, str]:
        return self.api(f"/_vcsim/taskinfo?ref={ref}")

    def task(self, kind: str, ref: str, name: str, fault: str = "", delay: float = 0,
             result: tuple[str, str] | None = None) -> str:
        return self.api("/_vcsim/task", {
            "Type": kind, "Ref": ref, "Name": name, "Fault": fault,
            "DelayMs": int(delay * 1000), "ResultType": result[0] if result else "",
            "Result": result[1] if result else ""})["ref"]
