"""Reply shapes shared by the front's modules: (status, headers, body)."""

from __future__ import annotations

import json
from typing import Any

Reply = tuple[int, list[tuple[str, str]], bytes]


def text_reply(status: int, text: str | bytes) -> Reply:
    data = text.encode() if isinstance(text, str) else text
    return status, [("Content-Type", "text/plain; charset=utf-8")], data


def json_reply(status: int, value: Any) -> Reply:
    return status, [("Content-Type", "application/json")], json.dumps(value).encode()


def xml_reply(status: int, data: bytes, headers: list[tuple[str, str]] | None = None) -> Reply:
    return status, [("Content-Type", "text/xml; charset=utf-8"), *(headers or [])], data
