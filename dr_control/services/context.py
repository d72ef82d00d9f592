"""What every service needs: the database, the configuration, and a wake-up signal."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import async_sessionmaker

from dr_common.secretbox import SecretBox
from dr_control.config import ControlConfig


class Signal:
    """Wakes every waiter once per `notify()`; cheaper than polling the database.

    Nodes long-poll AcquireTask; when a task is queued we wake them instead of making
    them wait for their next poll.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            pass


@dataclass
class ServiceContext:
    db: async_sessionmaker
    config: ControlConfig
    tasks_queued: Signal = field(default_factory=Signal)
    _secrets: SecretBox | None = None

    @property
    def secrets(self) -> SecretBox:
        """Seals site credentials; the key file is made on first use."""
        if self._secrets is None:
            self._secrets = SecretBox.from_file(self.config.secret_key_path)
        return self._secrets
