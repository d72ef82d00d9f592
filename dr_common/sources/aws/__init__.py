"""The `aws` site kind: EC2 instances whose EBS volumes are read through the EBS direct
APIs.

Inventory is EC2: one workload per instance, its attached volumes as disks (root
first). A consistent point is a crash-consistent group of EBS snapshots, one
`CreateSnapshots` call per instance, so all volumes of an instance are captured at the
same instant (EBS offers no atomic point across instances: a plan spanning several
instances gets per-instance consistency).

Changed blocks come from the snapshots themselves, not from a tracker of ours:
- first cycle: `ListSnapshotBlocks` lists the blocks ever written; they are data, the
  rest were never written and are zero extents (never read, never sent);
- later cycles: `ListChangedBlocks(previous, new)` lists the blocks that differ; they
  are data and everything else is *clean*: identical to the previous snapshot, hence
  to the previous recovery point made from it, so the engine keeps that point's chunk
  ids without reading. Clean is not zero: an unchanged block may hold data.
A previous snapshot that is gone (deleted by hand, or by a retention gone wrong) or
unrelated to the new one makes a full sync of the written blocks, and says why.

Reads are `GetSnapshotBlock` calls, each needing a *block token* from a listing.
Tokens expire (the listing's `ExpiryTime`) and a full listing of a large volume is
millions of tokens, so tokens are kept in a bounded cache of listing pages and fetched
lazily: a block the first listing did not give (an unchanged neighbour of a changed
block in the same engine chunk, or a page evicted or near expiry) is looked up by
listing the new snapshot from that block on. A block absent from the new snapshot was
never written and reads as zeros.

Threads: the engine calls `extents()` and `readinto()` from worker threads while the
event loop runs. The aiobotocore client lives on the loop; `readinto` submits each
block's fetch to it with `run_coroutine_threadsafe` and waits, and verifies the
block's SHA-256 in the worker thread, so the loop never hashes.

The package: `calls` (API calls through the remote-call layer), `inventory`, `snapshots`
(the consistency group), `tokens` (the block-token cache) and `disk` (`AwsDisk`, the
reads); this module is the adapter the source registry (dr_common.sources) opens.
"""

from __future__ import annotations

import structlog

from dr_common.aws import AwsSettings
from dr_common.proto.dr.v1 import common_pb2, nodes_pb2
from dr_common.sources.aws.disk import BLOCK_SIZE, AwsDisk
from dr_common.sources.aws.inventory import discover
from dr_common.sources.aws.snapshots import delete_snapshots, snapshot_group, stale_snapshots
from dr_common.sources.base import DiskToRead, SourceEnv

__all__ = ["BLOCK_SIZE", "AwsDisk", "delete_snapshots", "discover", "locate", "open_source",
           "snapshot_group", "stale_snapshots", "take_snapshots"]

log = structlog.get_logger()

# Tags of the snapshots a plan takes (the marker finds a plan's stale ones).
TAG_PLAN = "hybrid-dr:plan"
TAG_CYCLE = "hybrid-dr:cycle"
TAG_ROLE = "hybrid-dr:role"


def locate(disk: DiskToRead) -> nodes_pb2.AwsSource:
    return nodes_pb2.AwsSource(volume_id=disk.locator, snapshot_id=disk.snapshot_id,
                               previous_snapshot_id=disk.previous_source_snapshot_id,
                               size_bytes=disk.size)


async def open_source(locator: nodes_pb2.AwsSource, site: common_pb2.SiteSettings,
                      env: SourceEnv) -> AwsDisk:
    return await AwsDisk.open(AwsSettings.from_site(site, field="source.site"),
                              snapshot_id=locator.snapshot_id,
                              previous_snapshot_id=locator.previous_snapshot_id,
                              volume_id=locator.volume_id, size=locator.size_bytes)


async def take_snapshots(spec: nodes_pb2.SnapshotSpec,
                         env: SourceEnv) -> list[nodes_pb2.SourceSnapshot]:
    """The cycle's consistency group: one crash-consistent snapshot per instance. First
    deletes the snapshots of earlier cycles no point needs (failed cycles, superseded
    points). EBS snapshots are crash-consistent."""
    settings = AwsSettings.from_site(spec.source.site, field="source.site")
    marker = {TAG_PLAN: spec.plan, TAG_ROLE: "change-marker"}
    by_instance: dict[str, list[str]] = {}
    for d in spec.disks:
        by_instance.setdefault(d.workload, []).append(d.locator)
    keep = set(spec.keep_snapshot_ids)
    stale = [i for i in await stale_snapshots(settings, marker) if i not in keep]
    if stale:
        await delete_snapshots(settings, stale)
        log.info("stale source snapshots deleted", count=len(stale))
    snaps = await snapshot_group(settings, by_instance, tags={**marker, TAG_CYCLE: spec.cycle},
                                 timeout=env.snapshot_timeout)
    log.info("consistency group snapshotted", volumes=len(snaps))
    return [nodes_pb2.SourceSnapshot(disk=d.disk, snapshot_id=snaps[d.locator],
                                     consistency="crash-consistent") for d in spec.disks]
