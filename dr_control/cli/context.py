"""What every command handler gets: the client, the output, and the run's settings."""

from __future__ import annotations

from dataclasses import dataclass

from .client import Client
from .output import Output


@dataclass(frozen=True)
class Context:
    client: Client
    out: Output
    # HOST:PORT, for messages.
    server: str
    # Whether to draw progress bars on stderr (a TTY, or --output table).
    progress: bool
