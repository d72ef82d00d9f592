"""A minimal QMP client: the QEMU Machine Protocol over a VM's unix socket.

QMP is JSON objects, one per line: QEMU greets, the client leaves capabilities
negotiation with `qmp_capabilities`, then each `{"execute": ...}` gets a `return` or an
`error`; asynchronous `event`s may come in between and are skipped. Recovery needs
three commands (`query-status` to see a VM running, `quit` to stop it), so this is a
few lines rather than a dependency (qemu.qmp is not packaged for the venv).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Self

from dr_common.errors import DRError

# A QMP answer comes at once from a live QEMU; a longer silence means it is hung.
REPLY_TIMEOUT = 5.0


class QmpError(DRError):
    """QMP could not be reached, or QEMU refused a command."""

    reason = "qmp-error"


class Qmp:
    """One QMP session (`async with Qmp(path) as q: await q.execute("query-status")`)."""

    def __init__(self, path: str):
        self.path = path
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Self:
        try:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.path), REPLY_TIMEOUT)
            greeting = await self._read()
            if "QMP" not in greeting:
                raise QmpError(f"{self.path} is not a QMP socket (it said {greeting!r})")
            await self.execute("qmp_capabilities")
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (OSError, ConnectionError):
                pass  # QEMU went away first (after quit): nothing left to close
            self.writer = None

    async def _read(self) -> dict[str, Any]:
        assert self.reader is not None
        try:
            line = await asyncio.wait_for(self.reader.readline(), REPLY_TIMEOUT)
        except (TimeoutError, OSError, ConnectionError) as exc:
            raise QmpError(f"QMP at {self.path}: no answer ({exc!r})") from None
        if not line:
            raise QmpError(f"QMP at {self.path}: QEMU closed the connection")
        return json.loads(line)

    async def execute(self, command: str, **arguments: Any) -> Any:
        """The command's `return` value; QmpError with QEMU's `desc` if it refused."""
        assert self.writer is not None
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        try:
            self.writer.write(json.dumps(message).encode() + b"\n")
            await self.writer.drain()
        except (OSError, ConnectionError) as exc:
            raise QmpError(f"QMP at {self.path}: {command} not sent ({exc!r})") from None
        while True:
            answer = await self._read()
            if "event" in answer:
                continue
            if "error" in answer:
                raise QmpError(f"QMP {command}: {answer['error'].get('desc', answer)}")
            return answer.get("return")
