"""The `file` site kind: raw disk images and block devices visible to the node.

There is no changed-block tracking here, so every allocated extent is read and the
engine compares chunk hashes with the previous recovery point. Allocation comes from
SEEK_DATA/SEEK_HOLE: extents the filesystem reports as holes are never read. Block
devices and filesystems without SEEK_DATA report one data extent (zero detection on the
read data still keeps zeros out of the repository).

There is no snapshot either: a consistent point needs a quiescent image (or an image
the user snapshotted, e.g. with LVM). The adapter reads the file as it is.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from dr_common.errors import InvalidArgument, SourceError
from dr_common.names import resource_id
from dr_common.paths import check_within_roots
from dr_common.proto.dr.v1 import common_pb2, nodes_pb2
from dr_common.sources.base import DiskInfo, DiskToRead, Extent, SourceEnv, WorkloadInfo

def _disk_size(path: Path) -> tuple[int, bool] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    if stat.S_ISREG(st.st_mode):
        return st.st_size, False
    if stat.S_ISBLK(st.st_mode):
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.lseek(fd, 0, os.SEEK_END), True
        finally:
            os.close(fd)
    return None


def _disks_in(paths: list[Path]) -> tuple[DiskInfo, ...]:
    disks = []
    seen: set[str] = set()
    for p in sorted(paths):
        found = _disk_size(p)
        if found is None or p.name.startswith("."):
            continue
        ident = resource_id(p.stem)
        if ident in seen:
            ident = resource_id(p.name)
        seen.add(ident)
        disks.append(DiskInfo(id=ident, display_name=p.name, locator=str(p.resolve()),
                              size=found[0]))
    return tuple(disks)


def discover(root: str | os.PathLike) -> list[WorkloadInfo]:
    """Inventory of a `file` site.

    Each file (or block device) directly under `root` is a one-disk workload named
    after it; each subdirectory is a workload whose files are its disks.
    """
    base = Path(root)
    if not base.is_dir():
        raise InvalidArgument(f"site path {root} is not a directory", field="site.path")
    workloads = []
    for entry in sorted(base.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            disks = _disks_in([p for p in entry.iterdir()])
            if disks:
                workloads.append(WorkloadInfo(resource_id(entry.name), entry.name, disks))
        else:
            disks = _disks_in([entry])
            if disks:
                workloads.append(WorkloadInfo(disks[0].id, entry.name, disks))
    return workloads


class FileDisk:
    """A raw image or block device opened read-only."""

    tracking = "hash-diff"
    full_sync_reason = ""  # no tracking to lose: the hash diff works from any point

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise SourceError(f"cannot open source disk {self.path}: {e.strerror}") from None
        self.size = os.lseek(self._fd, 0, os.SEEK_END)
        # Chunks are read in order (several at once): let the kernel read ahead further.
        try:
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except OSError:
            pass

    def extents(self) -> list[Extent]:
        """Data and hole extents covering the whole disk, in order."""
        out: list[Extent] = []
        pos = 0
        while pos < self.size:
            try:
                data = os.lseek(self._fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:  # only a hole remains
                    out.append(Extent(pos, self.size - pos, True))
                    break
                if e.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # no SEEK_DATA here
                    return [Extent(0, self.size, False)]
                raise SourceError(f"cannot map {self.path}: {e.strerror}") from None
            if data > pos:
                out.append(Extent(pos, data - pos, True))
            hole = min(os.lseek(self._fd, data, os.SEEK_HOLE), self.size)
            out.append(Extent(data, hole - data, False))
            pos = hole
        return out

    def readinto(self, offset: int, buf: memoryview) -> int:
        """Fills `buf` from `offset`; short only at the end of the disk."""
        done = 0
        while done < len(buf):
            try:
                n = os.preadv(self._fd, [buf[done:]], offset + done)
            except OSError as e:
                raise SourceError(
                    f"cannot read {self.path} at offset {offset + done}: {e.strerror}") from None
            if n == 0:
                break
            done += n
        return done

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "FileDisk":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def home_image(locator: str) -> tuple[str, str]:
    """Failback writes a raw image (or block device) back as raw bytes."""
    return locator, "raw"


def locate(disk: DiskToRead) -> nodes_pb2.FileSource:
    return nodes_pb2.FileSource(path=disk.locator)


async def open_source(locator: nodes_pb2.FileSource, site: common_pb2.SiteSettings,
                      env: SourceEnv) -> FileDisk:
    return FileDisk(check_within_roots(locator.path, env.roots, field="source.file.path"))


async def stop_workloads(spec: nodes_pb2.SnapshotSpec, env: SourceEnv) -> list[str]:
    """Images at rest: nothing runs, so nothing is stopped. (A file cycle has no
    snapshot task that would call this; it is here so the registry's facet holds.)"""
    return []
