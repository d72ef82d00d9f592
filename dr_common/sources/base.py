"""The small interface every source adapter offers to the replication engine.

A source opens one disk of a consistent point and says which extents to look at:
- `zero` extents are holes or known zeros: recorded as zero, never read;
- `clean` extents did not change since the previous recovery point (changed-block
  tracking said so): their chunks keep the previous point's ids, never read;
- data extents are read; whether they changed is decided by the adapter's tracking
  (changed-block APIs) or, for sources without tracking, by comparing chunk hashes
  with the previous recovery point's manifest (`tracking == "hash-diff"`).
A source that could not use its tracking (first cycle, lost bitmap) reports no clean
extents and says why in `full_sync_reason`.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Extent:
    start: int
    length: int
    zero: bool
    clean: bool = False

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass(frozen=True)
class DiskInfo:
    """A disk found by inventory."""

    id: str
    display_name: str
    locator: str
    size: int
    sector_size: int = 512
    cbt: str = "none"


@dataclass(frozen=True)
class WorkloadInfo:
    id: str
    display_name: str
    disks: tuple[DiskInfo, ...]


class SourceDisk(Protocol):
    """One disk opened for reading. `readinto` blocks: call it from a worker thread."""

    size: int
    # "hash-diff": every data extent may have changed; the engine compares hashes.
    # "dirty-bitmap": extents not dirty since the previous point are reported clean.
    tracking: str
    # Why the disk is read in full this time, or "" when tracking was used.
    full_sync_reason: str

    def extents(self) -> list[Extent]: ...

    def readinto(self, offset: int, buf: memoryview) -> int: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SourceEnv:
    """What a node lends a source: the paths it may read (file roots), its worker
    threads (opening may block), how many parallel readers a disk may have, and how long
    a consistency-group snapshot may take."""

    roots: tuple[str, ...] = ()
    executor: Executor | None = None
    connections: int = 4
    snapshot_timeout: float = 1800.0


@dataclass(frozen=True)
class DiskToRead:
    """One disk of a cycle, as the control plane builds its source locator."""

    plan: str  # "plans/{plan}"
    cycle: str  # "plans/{plan}/cycles/{cycle}"
    locator: str  # where inventory found the disk (a path, a volume id)
    size: int = 0  # as inventory found it
    # What the previous point of this disk left: a tracking state (kvm: the bitmap
    # added then), the source snapshot it was read from (aws), and its size (0: no
    # previous point), which tracking cannot be trusted across if it changed.
    previous_bitmap: str = ""
    previous_size: int = 0
    previous_source_snapshot_id: str = ""
    # The snapshot this cycle's snapshot task took of the disk (sources that snapshot).
    snapshot_id: str = ""
