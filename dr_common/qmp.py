"""A small synchronous QMP client: the QEMU Machine Protocol over a unix socket.

QMP is one JSON object per line: a greeting, `qmp_capabilities`, then commands each
answered by `{"return": ...}` or `{"error": {"class", "desc"}}`, with asynchronous
events (`{"event": ...}`) interleaved. This client sends one command at a time and keeps
the events it skips in `events`, so a caller can wait for one (a job that ended).

It blocks (socket I/O): callers on an event loop run it in a worker thread.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from dr_common.errors import SourceError

# A QMP command answers in milliseconds; a stuck QEMU must not hang a task forever.
_TIMEOUT_SECONDS = 30.0


class QmpError(SourceError):
    """QEMU refused a command: `error_class` is QMP's (GenericError, DeviceNotFound)."""

    def __init__(self, message: str, *, error_class: str = "", **kwargs):
        super().__init__(message, **kwargs)
        self.error_class = error_class


class Qmp:
    def __init__(self, path: str, *, timeout: float = _TIMEOUT_SECONDS):
        self.path = path
        self.events: list[dict] = []
        self._sock = socket.socket(socket.AF_UNIX)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(path)
        except OSError as e:
            self._sock.close()
            raise SourceError(f"cannot connect to QEMU's QMP socket {path}: {e.strerror or e}. "
                              f"Is the VM running?") from None
        self._file = self._sock.makefile("rb")
        try:
            greeting = self._read()
            if "QMP" not in greeting:
                raise SourceError(f"{path} is not a QMP socket (it said {greeting!r:.200})",
                                  retryable=False)
            self.execute("qmp_capabilities")
        except BaseException:
            self.close()
            raise

    def _read(self) -> dict:
        try:
            line = self._file.readline()
        except OSError as e:
            raise SourceError(f"QEMU's QMP socket {self.path}: {e}") from None
        if not line:
            raise SourceError(f"QEMU closed its QMP socket {self.path} (did the VM exit?)")
        return json.loads(line)

    def execute(self, command: str, **arguments: Any) -> Any:
        """Runs one command and returns its `return` value; QmpError if QEMU refused."""
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as e:
            raise SourceError(f"QEMU's QMP socket {self.path}: {e}") from None
        while True:
            reply = self._read()
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                err = reply["error"]
                raise QmpError(f"QEMU refused {command}: {err.get('desc', err)}",
                               error_class=err.get("class", ""), retryable=False)
            return reply.get("return")

    def wait_event(self, name: str, match: dict | None = None, *,
                   timeout: float = _TIMEOUT_SECONDS) -> dict:
        """The first event `name` whose data has the items of `match` (kept or new)."""
        def hit(ev: dict) -> bool:
            data = ev.get("data", {})
            return ev["event"] == name and all(data.get(k) == v for k, v in (match or {}).items())
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if hit(ev):
                    return self.events.pop(i)
            if time.monotonic() > deadline:
                raise SourceError(f"QEMU sent no {name} event within {timeout:.0f}s")
            self.events.append(self._read())

    def close(self) -> None:
        try:
            self._file.close()
        finally:
            self._sock.close()

    def __enter__(self) -> "Qmp":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
