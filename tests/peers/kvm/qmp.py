"""A minimal synchronous QMP client over a unix socket: the greeting, qmp_capabilities,
one command's answer; events that arrive meanwhile are skipped. Standard library only."""

from __future__ import annotations

import json
import socket
from typing import Any


class QmpError(RuntimeError):
    """QEMU answered a command with an error (its class and description)."""


def execute(path: str, command: str, timeout: float = 30.0, **arguments: Any) -> Any:
    """Runs one command on the QMP socket at `path` and returns its `return` value.

    A connection per command: QEMU's QMP server talks to one client at a time, so a
    connection kept open here would lock out the code under test that uses the same
    socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        lines = sock.makefile("rb")
        if "QMP" not in _message(lines):
            raise QmpError(f"{path}: no QMP greeting")
        for name, args in (("qmp_capabilities", {}), (command, arguments)):
            request = {"execute": name, **({"arguments": args} if args else {})}
            sock.sendall(json.dumps(request).encode() + b"\n")
            answer = _answer(lines)
        return answer


def _answer(lines) -> Any:
    while True:
        message = _message(lines)
        if "return" in message:
            return message["return"]
        if "error" in message:
            error = message["error"]
            raise QmpError(f"{error.get('class')}: {error.get('desc')}")
        # anything else is an event: not an answer


def _message(lines) -> dict:
    line = lines.readline()
    if not line:
        raise QmpError("QEMU closed the QMP connection")
    return json.loads(line)
