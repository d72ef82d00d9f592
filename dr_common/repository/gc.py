"""Garbage collection of a repository: mark-and-sweep with a grace period.

Deleting a recovery point removes only its `points/<id>.json`; the manifests, segments
and chunks it named may be shared with other points (dedup), so they stay until this
collector finds that no point references them.

**Mark**: list `points/`, and for each point read (and check) every disk's manifest and
every segment; the marked set is those manifests, segments and the chunk ids they list.
A point, manifest or segment that cannot be read stops the collection before anything
is deleted: its references are unknown, and guessing would delete live data.

**Sweep**: list `manifests/`, `segments/` and `chunks/` with modification times and
delete each object that is unmarked *and* older than `cutoff = start - grace`, where
`start` is taken before the mark.

**Why this is safe while cycles run.** A cycle writes chunks, then segments, then
manifests, and its point last (docs/FORMAT.md section 8). Assume a cycle finishes
within the grace period (from its first write or dedup to its point), and let an
object X be referenced by a point P that the mark did not see (P appeared after the
listing of `points/`, which is after `start`). Every object P references was, during
P's cycle, either

- written by it: then X's time is after `start - grace` (the cycle ended after
  `start` and lasted less than `grace`), so X is young and kept; or
- found present by a conditional put (dedup, possibly against an old object that no
  point references, which GC is about to delete). The writer then *touches* X
  (`ObjectStore.touch`, see `Repository._put_content`), so X's time is that of the
  dedup, again after `start - grace`. The sweep's delete is `delete_if_older`, which
  re-checks the time at delete time, atomically on `FsStore` (rename away, check,
  unlink or rename back): either the touch came first and X is kept, or the touch
  finds no object and the writer puts X again. On S3 the check and the delete are
  two requests; a touch landing between them (milliseconds) is the one remaining
  window, documented in docs/FORMAT.md; or
- copied from the previous point's manifest without a put (an incremental cycle's
  unchanged chunks and segments): that point is the plan's newest, which retention
  never deletes while it is newest (dr_control/services/retention.py), so X is marked.

Objects referenced by a point the mark saw are marked, whatever their age. A deleted
point's objects that no other point references are older than the grace period once
it has passed, and go at the next collection.

Memory is a set of ids of every referenced object (32 bytes plus set overhead each):
about 100 MB for a million chunks, i.e. 1 TiB of distinct data at 1 MiB chunks.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import structlog

from dr_common.repository.format import ZERO_ID, chunk_key, manifest_key, segment_key
from dr_common.repository.repository import Repository

log = structlog.get_logger()

# Deletes in flight at once: enough to hide an object store's round trip, few enough
# not to be throttled.
DELETE_CONCURRENCY = 16
# Content-addressed prefixes, in the order the sweep visits them.
SWEPT_PREFIXES = ("manifests/", "segments/", "chunks/")


@dataclass
class GcReport:
    """Counts of one collection: what was deleted, what is referenced, and what is
    unreferenced but younger than the grace period (kept)."""

    points: int = 0
    objects_removed: int = 0
    bytes_removed: int = 0
    objects_kept: int = 0
    bytes_kept: int = 0
    objects_young: int = 0
    bytes_young: int = 0
    removed_keys: list[str] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if isinstance(v, int)}


async def mark(repo: Repository) -> tuple[set[str], int]:
    """Keys of every manifest, segment and chunk that a point in `repo` references,
    and the number of points."""
    marked: set[str] = set()
    points = await repo.list_recovery_points()
    for point_id in points:
        record = await repo.get_recovery_point(point_id)
        for disk in record.disks:
            key = manifest_key(disk.root_hash)
            if key in marked:
                continue  # an unchanged disk: its segments are marked already
            marked.add(key)
            manifest = await repo.get_manifest(disk.root_hash)
            for index, seg_id in enumerate(manifest.segments):
                if segment_key(seg_id) in marked:
                    continue
                marked.add(segment_key(seg_id))
                marked.update(chunk_key(cid) for cid in
                              await repo.segment_ids(manifest, index) if cid != ZERO_ID)
    return marked, len(points)


async def collect_garbage(repo: Repository, *, grace_seconds: float,
                          clock=time.time) -> GcReport:
    """Delete the objects no point references that are older than `grace_seconds`.

    `grace_seconds` must exceed the longest replication cycle (see the module
    docstring); 0 is safe only when no cycle writes to the repository meanwhile.
    """
    if grace_seconds < 0:
        raise ValueError("grace_seconds must not be negative")
    cutoff = clock() - grace_seconds  # before the mark: see the safety argument
    marked, points = await mark(repo)
    report = GcReport(points=points)
    limit = asyncio.Semaphore(DELETE_CONCURRENCY)

    async def remove(key: str) -> None:
        async with limit:
            size = await repo.store.delete_if_older(key, cutoff)
        if size is None:  # touched meanwhile (a running cycle deduplicated it): kept
            report.objects_young += 1
            return
        report.objects_removed += 1
        report.bytes_removed += size
        report.removed_keys.append(key)

    for prefix in SWEPT_PREFIXES:
        pending: set[asyncio.Task] = set()
        try:
            async for info in repo.store.list_info(prefix):
                if info.key in marked:
                    report.objects_kept += 1
                    report.bytes_kept += info.size
                elif info.mtime >= cutoff:
                    report.objects_young += 1
                    report.bytes_young += info.size
                else:
                    pending.add(asyncio.create_task(remove(info.key)))
                    if len(pending) >= 4 * DELETE_CONCURRENCY:  # bound the backlog
                        done, pending = await asyncio.wait(
                            pending, return_when=asyncio.FIRST_COMPLETED)
                        for t in done:
                            t.result()
            if pending:
                await asyncio.gather(*pending)
        except BaseException:
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise
    log.info("garbage collected", repository=repo.id, **report.as_dict())
    return report
