"""argparse `type=` converters, so malformed values are usage errors (exit 2) with the
usual "argument --rpo: ..." message instead of a failure after connecting."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from google.protobuf.message import Message

from . import names
from .errors import UsageError
from .units import parse_duration, parse_size


def duration(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def rate(text: str) -> int:
    """--bandwidth: a size per second ("50MB/s", "100MiB", "0" for unlimited)."""
    return size(text[:-2] if text.lower().endswith("/s") else text)


def positive_seconds(text: str) -> float:
    """--timeout: a gRPC deadline of zero or less would fail every call, so reject it here."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"invalid timeout {text!r}: use a number of seconds > 0")
    return value


def name(pattern: names.Pattern) -> Callable[[str], str]:
    """A converter that expands short ids to `pattern`'s full name."""

    def convert(text: str) -> str:
        try:
            return names.expand(pattern, text)
        except names.InvalidName as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = pattern.what  # argparse names the type in some messages
    return convert


def resource_id(pattern: names.Pattern) -> Callable[[str], str]:
    """A converter to the bare id that Create calls take (accepts "sites/s1" too)."""

    def convert(text: str) -> str:
        try:
            return names.resource_id(pattern, text)
        except names.InvalidName as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = f"{pattern.what} id"
    return convert


def set_field(message: Message, field: str, value: object, flag: str) -> None:
    """Set a request field, turning "does not fit the field's type" into a usage error.

    Not a judgement of the value (0 and negatives pass where the field is signed: the
    server decides what is valid), only of whether protobuf can carry it at all;
    otherwise protobuf's ValueError would surface as a traceback.
    """
    try:
        setattr(message, field, value)
    except (ValueError, TypeError):
        raise UsageError(f"argument {flag}: {value} is out of range for the API") from None
