"""The `vsphere` source: extents from CBT areas (unit), and against the vSphere peer
(vcsim corrected to CBT and snapshot semantics, tests/peers/vsphere/): inventory,
snapshots, changed areas, reads of the frozen base disk, lost tracking, other snapshots."""

from __future__ import annotations

from dr_common.sources.base import Extent
from dr_common.sources.vsphere.disk import to_extents
from dr_common.sources.vsphere.snapshots import SnapshotRef

MiB = 1 << 20


def test_first_cycle_areas_are_data_and_the_rest_zero():
    ext = to_extents([(4 * MiB, MiB), (0, MiB), (MiB, MiB)], 8 * MiB, gaps_clean=False)
    assert ext == [Extent(0, 2 * MiB, zero=False), Extent(2 * MiB, 2 * MiB, zero=True),
                   Extent(4 * MiB, MiB, zero=False), Extent(5 * MiB, 3 * MiB, zero=True)]


def test_incremental_gaps_are_clean_and_areas_are_clipped_to_the_disk():
    ext = to_extents([(7 * MiB, 4 * MiB), (MiB, MiB), (MiB + 10, 10)], 8 * MiB,
                     gaps_clean=True)
    assert ext == [Extent(0, MiB, zero=False, clean=True), Extent(MiB, MiB, zero=False),
                   Extent(2 * MiB, 5 * MiB, zero=False, clean=True),
                   Extent(7 * MiB, MiB, zero=False)]
    assert sum(e.length for e in ext) == 8 * MiB


def test_no_change_is_one_clean_extent():
    assert to_extents([], 3 * MiB, gaps_clean=True) == [Extent(0, 3 * MiB, zero=False,
                                                               clean=True)]


def test_snapshot_ref_round_trips_and_other_kinds_ids_read_as_none():
    ref = SnapshotRef(snapshot="snapshot-7", change_id="52 aa/3", size=MiB,
                      consistency="crash-consistent")
    assert SnapshotRef.loads(ref.dumps()) == ref
    assert SnapshotRef.loads("snap-0123456789abcdef0") is None
    assert SnapshotRef.loads("") is None
