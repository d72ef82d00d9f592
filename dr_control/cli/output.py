"""Where results go: JSON on stdout for scripts, text tables for people.

JSON is the proto3 JSON mapping (json_format) with the proto field names, so it reads
the same as the .proto files and the REST face; fields at their default value are
printed too, so a script reading `.rpo_met` gets `false`, not a missing key. (As in
every proto3 JSON, 64-bit integers are strings.)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TextIO

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

TABLE = "table"
JSON = "json"
FORMATS = (TABLE, JSON)


def to_dict(message: Message) -> dict:
    return MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )


class Output:
    """Prints results in the chosen format; messages and warnings go to stderr."""

    def __init__(self, fmt: str, stdout: TextIO, stderr: TextIO):
        self.format = fmt
        self.stdout = stdout
        self.stderr = stderr

    @property
    def json(self) -> bool:
        return self.format == JSON

    def resource(self, message: Message, render: Callable[[Message], str]) -> None:
        """One resource: a JSON object, or `render`'s text."""
        if self.json:
            self._dump(to_dict(message))
        else:
            self.text(render(message))

    def resources(self, messages: Iterable[Message], render: Callable[[list], str]) -> None:
        """A list: a JSON array (also when empty), or `render`'s table."""
        items = list(messages)
        if self.json:
            self._dump([to_dict(m) for m in items])
        else:
            self.text(render(items))

    def text(self, text: str) -> None:
        if text:
            print(text, file=self.stdout)

    def note(self, text: str) -> None:
        """Human-only remarks (what happened, what to do next): stderr, so JSON stays clean."""
        print(text, file=self.stderr)

    def _dump(self, value: object) -> None:
        print(json.dumps(value, indent=2), file=self.stdout)
