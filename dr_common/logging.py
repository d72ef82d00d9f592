"""structlog set up for JSON lines on stderr, shared by both daemons and the tests.

Context (plan, disk, task ids) is bound with structlog's contextvars so that every
line a task writes carries them without passing loggers around.
"""

from __future__ import annotations

import logging
import sys

import structlog

# Keys whose values must never reach a log line (credentials, tokens, keys).
_SECRET_KEYS = frozenset({"password", "secret", "token", "access_key", "secret_key",
                          "account_key", "credential", "chunk_key", "authorization"})


def _redact(_logger, _name, event: dict) -> dict:
    for key in event.keys() & _SECRET_KEYS:
        event[key] = "[redacted]"
    return event


class _Stderr:
    """Whatever sys.stderr is when a line is written, not when logging was set up: code
    that replaces it (pytest's capture, a daemon's redirect) must not leave loggers
    writing to a closed file."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def setup(level: str = "info", *, service: str) -> structlog.stdlib.BoundLogger:
    """Configures JSON logging for this process and returns its logger."""
    lvl = getattr(logging, level.upper(), None)
    if not isinstance(lvl, int):
        raise ValueError(f"unknown log level {level!r}")
    # grpc and aiosqlite log through the stdlib: route them through the same renderer.
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*processors, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(_Stderr())
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processor=structlog.processors.JSONRenderer(), foreign_pre_chain=processors))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(lvl, logging.WARNING))
    structlog.contextvars.bind_contextvars(service=service)
    return structlog.get_logger()
