"""The JSON metadata objects of a repository: a disk's manifest and a recovery point.

Both are immutable values, checked on construction, with a canonical JSON form
(sorted keys, no spaces, UTF-8) so the same value always serializes to the same bytes.
Decoding stored bytes that are not a valid object raises CorruptData.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from dr_common.errors import CorruptData, RepositoryError
from dr_common.repository.format import check_hex_id, check_point_id

MANIFEST_VERSION = 1
POINT_VERSION = 1

T = TypeVar("T")


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _loads(data: bytes, what: str, expect_version: int) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptData(f"{what} is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise CorruptData(f"{what} is not a JSON object")
    version = obj.get("version")
    if version != expect_version:
        # A newer writer, not damage: say what to do about it.
        raise RepositoryError(
            f"{what} has version {version!r}; this software reads version {expect_version}. "
            "Upgrade to read it."
        )
    return obj


def _build(what: str, make: Callable[[], T]) -> T:
    try:
        return make()
    except (KeyError, TypeError, ValueError, RepositoryError) as e:
        if isinstance(e, CorruptData):
            raise
        raise CorruptData(f"{what} is malformed: {e}") from None


def _check_int(name: str, value: object, minimum: int) -> None:
    # bool is an int subclass; a size of True is a bug, not a size.
    if type(value) is not int or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class DiskManifest:
    """One disk's contents at one recovery point: its geometry and its segment ids.

    `root_hash` (see `format.compute_root`) names the manifest and fingerprints the
    disk. `disk` is informative only: it is not part of the root, so two disks with
    identical contents share one manifest object, which keeps the first writer's name.
    The recovery point is the authority for which disk a root belongs to.
    """

    disk: str
    size: int
    chunk_size: int
    segment_chunks: int
    segments: tuple[str, ...]
    root_hash: str

    def __post_init__(self) -> None:
        if not isinstance(self.disk, str):
            raise ValueError(f"disk must be a string, got {self.disk!r}")
        _check_int("size", self.size, 0)
        _check_int("chunk_size", self.chunk_size, 1)
        _check_int("segment_chunks", self.segment_chunks, 1)
        if not isinstance(self.segments, tuple):
            object.__setattr__(self, "segments", tuple(self.segments))
        for seg in self.segments:
            check_hex_id(seg, "segment id")
        check_hex_id(self.root_hash, "root hash")
        expected = -(-self.chunk_count // self.segment_chunks)
        if len(self.segments) != expected:
            raise ValueError(
                f"a disk of {self.chunk_count} chunks needs {expected} segments, "
                f"the manifest lists {len(self.segments)}"
            )

    @property
    def chunk_count(self) -> int:
        return -(-self.size // self.chunk_size)

    def chunk_length(self, index: int) -> int:
        """Bytes in chunk `index`: chunk_size, except a short last chunk."""
        if not 0 <= index < self.chunk_count:
            raise IndexError(f"chunk {index} is outside a disk of {self.chunk_count} chunks")
        return min(self.chunk_size, self.size - index * self.chunk_size)

    def to_json(self) -> bytes:
        return _dumps(
            {
                "version": MANIFEST_VERSION,
                "disk": self.disk,
                "size": self.size,
                "chunk_size": self.chunk_size,
                "segment_chunks": self.segment_chunks,
                "segments": list(self.segments),
                "root_hash": self.root_hash,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> DiskManifest:
        obj = _loads(data, "disk manifest", MANIFEST_VERSION)
        return _build(
            "disk manifest",
            lambda: cls(
                disk=obj["disk"],
                size=obj["size"],
                chunk_size=obj["chunk_size"],
                segment_chunks=obj["segment_chunks"],
                segments=tuple(_as_list(obj["segments"])),
                root_hash=obj["root_hash"],
            ),
        )


def _as_list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class PointDisk:
    """One disk of a recovery point: which manifest holds it, and how it was made."""

    disk: str
    size: int
    root_hash: str
    full_sync: bool

    def __post_init__(self) -> None:
        if not isinstance(self.disk, str) or not self.disk:
            raise ValueError(f"disk must be a non-empty string, got {self.disk!r}")
        _check_int("size", self.size, 0)
        check_hex_id(self.root_hash, "root hash")
        if not isinstance(self.full_sync, bool):
            raise ValueError(f"full_sync must be a boolean, got {self.full_sync!r}")


@dataclass(frozen=True)
class RecoveryPointRecord:
    """A consistency group's recovery point: every disk's root, made by one cycle.

    Written last in a cycle; its presence is what makes the point exist.
    """

    id: str
    plan: str
    cycle: str
    create_time: str  # ISO 8601, UTC (e.g. "2025-01-31T12:00:00Z")
    disks: tuple[PointDisk, ...]

    def __post_init__(self) -> None:
        check_point_id(self.id)
        for name in ("plan", "cycle"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string")
        try:
            when = datetime.fromisoformat(self.create_time)
        except (TypeError, ValueError):
            raise ValueError(f"create_time must be ISO 8601, got {self.create_time!r}") from None
        if when.utcoffset() != timedelta(0):
            raise ValueError(f"create_time must be in UTC, got {self.create_time!r}")
        if not isinstance(self.disks, tuple):
            object.__setattr__(self, "disks", tuple(self.disks))
        names = [d.disk for d in self.disks]
        if len(set(names)) != len(names):
            raise ValueError(f"a disk is listed twice in recovery point {self.id}")

    def to_json(self) -> bytes:
        return _dumps(
            {
                "version": POINT_VERSION,
                "id": self.id,
                "plan": self.plan,
                "cycle": self.cycle,
                "create_time": self.create_time,
                "disks": [
                    {
                        "disk": d.disk,
                        "size": d.size,
                        "root_hash": d.root_hash,
                        "full_sync": d.full_sync,
                    }
                    for d in self.disks
                ],
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> RecoveryPointRecord:
        obj = _loads(data, "recovery point", POINT_VERSION)
        return _build(
            "recovery point",
            lambda: cls(
                id=obj["id"],
                plan=obj["plan"],
                cycle=obj["cycle"],
                create_time=obj["create_time"],
                disks=tuple(
                    PointDisk(
                        disk=d["disk"],
                        size=d["size"],
                        root_hash=d["root_hash"],
                        full_sync=d["full_sync"],
                    )
                    for d in _as_list(obj["disks"])
                ),
            ),
        )
