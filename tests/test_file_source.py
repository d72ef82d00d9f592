"""The `file` source: holes from SEEK_DATA/SEEK_HOLE, inventory, and path confinement."""

from __future__ import annotations

import os

import pytest

from dr_common.errors import InvalidArgument, SourceError
from dr_common.names import resource_id
from dr_common.paths import check_within_roots
from dr_common.sources.file import FileDisk, discover
from tests.helpers.disks import MiB, make_disk


def test_extents_report_holes_and_data(tmp_path):
    path = tmp_path / "d.img"
    make_disk(path, 8 * MiB, [(MiB, MiB), (5 * MiB, 2 * MiB)])
    with FileDisk(path) as d:
        ext = d.extents()
    assert ext[0].start == 0 and ext[-1].end == 8 * MiB
    assert all(a.end == b.start for a, b in zip(ext, ext[1:])), "extents must tile the disk"
    data = [(e.start, e.length) for e in ext if not e.zero]
    assert data == [(MiB, MiB), (5 * MiB, 2 * MiB)]


def test_readinto_and_missing_disk(tmp_path):
    path = tmp_path / "d.img"
    path.write_bytes(b"abcdef")
    with FileDisk(path) as d:
        buf = bytearray(4)
        assert d.readinto(2, memoryview(buf)) == 4 and bytes(buf) == b"cdef"
        assert d.readinto(4, memoryview(buf)) == 2  # short only at the end
    with pytest.raises(SourceError, match="cannot open source disk"):
        FileDisk(tmp_path / "nope.img")


def test_discover_workloads_and_disks(tmp_path):
    (tmp_path / "vm1.img").write_bytes(b"x" * 512)
    (tmp_path / "DB Server").mkdir()
    (tmp_path / "DB Server" / "os.raw").write_bytes(b"x")
    (tmp_path / "DB Server" / "data.raw").write_bytes(b"x")
    (tmp_path / ".hidden").write_bytes(b"x")
    found = {w.id: [d.id for d in w.disks] for w in discover(tmp_path)}
    assert found == {"vm1": ["vm1"], "db-server": ["data", "os"]}
    assert resource_id("9lives") == "d-9lives"


def test_paths_are_confined_to_roots(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    os.symlink("/etc", root / "escape")
    assert check_within_roots(root / "a", [str(root)], field="f") == (root / "a").resolve()
    for bad in (root / "escape", root / ".." / "x", "/etc/passwd"):
        with pytest.raises(InvalidArgument, match="outside the configured roots"):
            check_within_roots(bad, [str(root)], field="f")


def test_kvm_extent_merge_says_whether_zeros_changed():
    from dr_common.sources.base import Extent
    from dr_common.sources.nbdmap import _merge
    allocation = [(0, 100, False), (100, 100, True), (200, 50, False)]
    dirty = [(0, 50, True), (50, 120, False), (170, 80, True)]
    assert _merge(allocation, dirty) == [
        Extent(0, 50, zero=False, clean=False),     # data, dirty: read
        Extent(50, 50, zero=False, clean=True),     # data, not dirty: keep previous
        Extent(100, 70, zero=True, clean=True),     # zero, unchanged: keep previous
        Extent(170, 30, zero=True, clean=False),    # zero, changed (a discard): zero
        Extent(200, 50, zero=False, clean=False),
    ]
