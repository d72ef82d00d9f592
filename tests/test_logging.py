"""JSON logs: one object per line, context carried, secrets never written."""

from __future__ import annotations

import json

import structlog

from dr_common import logging as dr_logging


def test_json_lines_with_context_and_redacted_secrets(capsys):
    log = dr_logging.setup("info", service="dr-test")
    structlog.contextvars.bind_contextvars(task="tasks/7")
    try:
        log.info("connected", token="s3cr3t-token", password="hunter2", disk="d1")
        log.debug("not shown at info")
    finally:
        structlog.contextvars.clear_contextvars()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["event"] == "connected" and event["level"] == "info"
    assert event["service"] == "dr-test" and event["task"] == "tasks/7" and event["disk"] == "d1"
    assert event["token"] == event["password"] == "[redacted]"
    assert "s3cr3t" not in lines[0] and "hunter2" not in lines[0]
