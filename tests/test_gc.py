"""Garbage collection of a repository on FsStore: what it removes, what it must keep."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from dr_common.repository import FsStore, Repository, chunk_key, encode_chunk, gc
from tests.helpers.repository import numbered_chunk, write_point

HOUR = 3600.0


def objects(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
            and p.relative_to(root).parts[0] in ("chunks", "segments", "manifests")}


def age(root: Path, seconds: float) -> None:
    """Makes every object look written `seconds` ago."""
    then = time.time() - seconds
    for p in root.rglob("*"):
        if p.is_file():
            os.utime(p, (then, then))


@pytest.fixture
async def three_points(tmp_path: Path):
    """Points A, B, C sharing chunks, manifests and segments; A is deleted."""
    store = FsStore(tmp_path)
    repo = await Repository.open_or_create(store)
    a = await write_point(repo, "A", {"d": [1, 2, 3, 4], "e": [9, 10, 0, 0]})
    b = await write_point(repo, "B", {"d": [1, 2, 5, 6]})
    # C's disk d equals B's (one shared manifest); its disk e reuses A's chunks 3 and 9.
    c = await write_point(repo, "C", {"d": [1, 2, 5, 6], "e": [9, 3, 0, 7]})
    assert await repo.delete_recovery_point("A")
    assert not await repo.delete_recovery_point("A")
    age(tmp_path, HOUR)
    return repo, tmp_path, a, b | c


async def verify_all(repo: Repository) -> None:
    for point_id in await repo.list_recovery_points():
        for d in (await repo.get_recovery_point(point_id)).disks:
            report = await repo.verify_disk(await repo.get_manifest(d.root_hash))
            assert report.ok, (point_id, report.bad_chunks)


async def test_gc_removes_exactly_what_only_the_deleted_point_referenced(three_points):
    repo, root, a, live = three_points
    expected = a - live
    # The design of the case: A alone had chunks 4 and 10, its two manifests and segments.
    only_a_chunks = {chunk_key(repo.chunk_id(numbered_chunk(n))) for n in (4, 10)}
    assert {k for k in expected if k.startswith("chunks/")} == only_a_chunks
    assert len(expected) == 6
    before = objects(root)
    sizes = {k: (root / k).stat().st_size for k in expected}

    report = await gc.collect_garbage(repo, grace_seconds=0)

    assert set(report.removed_keys) == expected
    assert objects(root) == before - expected
    assert objects(root) == live
    assert (report.points, report.objects_removed, report.objects_kept) == (2, 6, len(live))
    assert report.bytes_removed == sum(sizes.values())
    await verify_all(repo)
    # A second pass has nothing left to do.
    again = await gc.collect_garbage(repo, grace_seconds=0)
    assert again.objects_removed == 0 and again.objects_kept == len(live)


async def test_object_written_after_the_mark_survives_the_grace_period(three_points, monkeypatch):
    repo, root, a, live = three_points
    fresh = repo.chunk_id(numbered_chunk(77))
    real_mark = gc.mark

    async def mark_then_a_cycle_writes(r):
        result = await real_mark(r)
        # a running cycle's chunk
        await r.put_chunk(fresh, encode_chunk(numbered_chunk(77), "none"))
        return result

    monkeypatch.setattr(gc, "mark", mark_then_a_cycle_writes)
    report = await gc.collect_garbage(repo, grace_seconds=60)
    assert chunk_key(fresh) in objects(root)
    assert report.objects_young == 1
    assert set(report.removed_keys) == a - live  # the old garbage still goes


async def test_dedup_against_old_garbage_during_gc_keeps_the_object(three_points, monkeypatch):
    """A running cycle deduplicates against chunk 10, which only deleted point A had:
    its conditional put finds it and writes nothing. The touch keeps it alive."""
    repo, root, a, live = three_points
    reused = repo.chunk_id(numbered_chunk(10))
    real_mark = gc.mark

    async def mark_then_dedup(r):
        result = await real_mark(r)
        assert not await r.put_chunk(reused, encode_chunk(numbered_chunk(10), "none"))  # dedup
        return result

    monkeypatch.setattr(gc, "mark", mark_then_dedup)
    report = await gc.collect_garbage(repo, grace_seconds=60)
    assert chunk_key(reused) not in report.removed_keys
    assert await repo.get_chunk(reused) == numbered_chunk(10)
    assert set(report.removed_keys) == a - live - {chunk_key(reused)}


async def test_dedup_that_loses_the_race_to_gc_writes_the_chunk_again(tmp_path: Path):
    """The conditional put sees the chunk, then GC deletes it before the touch: the
    writer must notice (touch finds nothing) and put it again."""

    class GcInBetween(FsStore):
        async def put(self, key, blob, *, if_absent=False):
            stored = await super().put(key, blob, if_absent=if_absent)
            if if_absent and not stored and key.startswith("chunks/"):
                assert await self.delete_if_older(key, time.time() + 1) is not None
            return stored

    repo = await Repository.open_or_create(GcInBetween(tmp_path))
    cid = repo.chunk_id(numbered_chunk(5))
    blob = encode_chunk(numbered_chunk(5), "none")
    assert await repo.put_chunk(cid, blob)
    assert await repo.put_chunk(cid, blob)  # stored again, not deduplicated
    assert await repo.get_chunk(cid) == numbered_chunk(5)


async def test_delete_if_older_keeps_an_object_touched_after_listing(tmp_path: Path):
    store = FsStore(tmp_path)
    await store.put("chunks/ab/x", b"data")
    age(tmp_path, HOUR)
    cutoff = time.time() - 60
    listed = [i async for i in store.list_info("chunks/")]
    assert listed[0].mtime < cutoff and listed[0].size == 4
    assert await store.touch("chunks/ab/x")  # a writer deduplicates after the listing
    assert await store.delete_if_older("chunks/ab/x", cutoff) is None
    assert await store.get("chunks/ab/x") == b"data"
    assert [k async for k in store.list("chunks/")] == ["chunks/ab/x"]  # no leftovers
    age(tmp_path, HOUR)
    assert await store.delete_if_older("chunks/ab/x", cutoff) == 4
    assert not await store.exists("chunks/ab/x")
    assert not await store.touch("chunks/ab/x")


async def test_gc_refuses_to_sweep_when_a_point_is_unreadable(three_points):
    repo, root, a, live = three_points
    manifest = next(k for k in live if k.startswith("manifests/"))
    (root / manifest).unlink()
    before = objects(root)
    with pytest.raises(Exception, match="manifest"):
        await gc.collect_garbage(repo, grace_seconds=0)
    assert objects(root) == before
