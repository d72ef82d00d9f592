"""`python -m bench.azure` / `make bench-azure`: the azure source and the azure-disk target
against the Azure peer (tests/peers/azure: our ARM and Storage front over Azurite),
through the real engine, in-process.

Source: an Empty managed disk of the peer's source group with D MiB written in 1 MiB
pieces; cycle 1 takes an incremental snapshot and reads its valid pages (Get Page
Ranges) into an fs repository; cycle 2, after 10 % of those MiBs changed and one was
cleared, snapshots again and reads only the page-range diff against cycle 1's snapshot.
Per cycle it prints the bytes the front served from the snapshot against the bytes
written or changed (the ratio must be 1.00), the cycle's time (snapshot, grant, diff,
reads), its read throughput, and as the baseline measured in the same run plain
sequential ranged GETs of the same MiBs through azure-storage-blob on a read SAS.

Target: the same D MiB (from memory, so only the writes are timed) replicated into an
azure-disk replica (a page blob; Put Page, then a blob snapshot), against plain
sequential 4 MiB upload_page calls to a page blob through the same front.

Medians of --runs; peak RSS of this process at the end (the peer runs apart).
Azurite (single-threaded, in memory) and the front are the ceiling here, not Azure.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path

from azure.mgmt.compute import ComputeManagementClient
from azure.storage.blob import BlobClient, BlobServiceClient

from dr_common import sources, targets
from dr_common.azure import AzureSettings, resource_name
from dr_common.proto.dr.v1 import common_pb2, nodes_pb2
from dr_common.sources.base import DiskToRead, Extent, SourceEnv
from dr_common.targets.base import SinkRequest
from dr_node.config import EngineConfig
from dr_node.engine import Engine
from tests.helpers.azure import mgmt
from tests.peers.azure.azurite import ACCOUNT_KEY
from tests.peers.azure.client import PeerProcess

MiB = 1 << 20
DISK = "bench"
PLAN = "plans/bench"
PUT = 4 * MiB  # the baseline's upload_page size (Put Page's maximum)


def settings_of(peer, group: str, *, storage: bool = False) -> AzureSettings:
    extra = {"storage_account_url": peer.blob_endpoint,
             "storage_account_key": ACCOUNT_KEY} if storage else {}
    return AzureSettings(
        subscription_id=peer.subscription_id, resource_groups=(group,),
        location=peer.location, tenant_id=peer.tenant_id, client_id=peer.client_id,
        client_secret=peer.client_secret, arm_endpoint=peer.arm_endpoint,
        authority_host=peer.authority_host, ca_file=str(peer.ca_file), **extra)


def site_of(settings: AzureSettings) -> common_pb2.SiteSettings:
    return common_pb2.SiteSettings(azure=common_pb2.AzureSettings(**settings.as_dict()))


async def into_target(engine: Engine, loc: nodes_pb2.TargetLocator, src, n: int,
                      root: Path, previous_root: str = "") -> tuple[str, float]:
    """Replicates `src` as cycle `n` of disk "d"; (root hash, seconds of replicate)."""
    async with targets.opened(loc, engine.target_env([str(root)])) as target:
        sink = await target.sink(SinkRequest(
            plan=PLAN, cycle=f"{PLAN}/cycles/{n}", disk="d", size=src.size,
            chunk_size=MiB, previous_root_hash=previous_root))
        start = time.perf_counter()
        result = await engine.replicate(disk="d", source=src, sink=sink, chunk_size=MiB)
        return result.root_hash, time.perf_counter() - start


async def source_cycle(peer, site, disk_id: str, previous: dict, repo: Path, n: int) -> dict:
    """One cycle of the azure source into the fs repository at `repo`."""
    spec = nodes_pb2.SnapshotSpec(
        plan=PLAN, cycle=f"{PLAN}/cycles/{n}", keep_snapshot_ids=[previous["ref"]] if previous else [],
        disks=[nodes_pb2.SnapshotDisk(disk="d", workload="vm", locator=disk_id)])
    spec.source.azure.SetInParent()
    spec.source.site.CopyFrom(site)
    peer.reset_stats()
    start = time.perf_counter()
    ref = (await sources.take_snapshots(spec, SourceEnv()))[0].snapshot_id
    loc = nodes_pb2.SourceLocator(site=site)
    loc.azure.CopyFrom(sources.azure.locate(DiskToRead(
        plan=spec.plan, cycle=spec.cycle, locator=disk_id, snapshot_id=ref,
        previous_source_snapshot_id=previous.get("ref", ""))))
    engine = Engine(EngineConfig())
    try:
        src = await sources.open_source(loc, SourceEnv())
        try:
            root, read_s = await into_target(engine, targets.locator("fs", str(repo)), src,
                                             n, repo.parent, previous.get("root_hash", ""))
        finally:
            await asyncio.to_thread(src.close)
    finally:
        engine.close()
    seconds = time.perf_counter() - start
    served = peer.stats()["blobs"].get(resource_name(ref), {}).get("bytes_read", 0)
    return {"ref": ref, "root_hash": root, "served": served, "seconds": seconds,
            "read_seconds": read_s}


class Into:
    """A file-like writer into one buffer (what a downloader's readinto wants)."""

    def __init__(self, buf: bytearray):
        self.view, self.pos = memoryview(buf), 0

    def write(self, data: bytes) -> int:
        self.view[self.pos:self.pos + len(data)] = data
        self.pos += len(data)
        return len(data)


def read_baseline(compute, group: str, snapshot_id: str, pieces: list[int]) -> float:
    """Seconds to GET `pieces` (MiB indices) of a snapshot, one by one, on a read SAS."""
    name = resource_name(snapshot_id)
    sas = compute.snapshots.begin_grant_access(
        group, name, {"access": "Read", "durationInSeconds": 3600}).result().access_sas
    try:
        with BlobClient.from_blob_url(sas) as blob:
            buf = bytearray(MiB)
            start = time.perf_counter()
            for i in pieces:
                blob.download_blob(offset=i * MiB, length=MiB).readinto(Into(buf))
            return time.perf_counter() - start
    finally:
        compute.snapshots.begin_revoke_access(group, name).result()


class MemoryDisk:
    """The written MiBs of a disk of `size` bytes, as a source: one random MiB, each
    piece stamped with its index (so no two chunks are alike); the rest is zero."""

    tracking = "hash-diff"
    full_sync_reason = "first-cycle"

    def __init__(self, size: int, pieces: list[int], data: bytes):
        self.size, self.pieces, self.data = size, pieces, data

    def extents(self) -> list[Extent]:
        out, pos = [], 0
        for i in self.pieces:
            if i * MiB > pos:
                out.append(Extent(pos, i * MiB - pos, zero=True))
            out.append(Extent(i * MiB, MiB, zero=False))
            pos = (i + 1) * MiB
        if pos < self.size:
            out.append(Extent(pos, self.size - pos, zero=True))
        return out

    def readinto(self, offset: int, buf: memoryview) -> int:
        n = len(buf)
        for at in range(0, n, MiB):
            piece = buf[at:at + MiB]
            piece[:] = self.data[:len(piece)]
            piece[:8] = ((offset + at) // MiB).to_bytes(8, "little")
        return n

    def close(self) -> None:
        pass


async def target_run(peer, work: Path, size: int, pieces: list[int], data: bytes) -> dict:
    """The azure-disk target's write of `pieces`, then the baseline's upload_page."""
    loc = targets.locator("azure-disk", "azblob://bench/p")
    loc.site.CopyFrom(site_of(settings_of(peer, peer.recovery_group, storage=True)))
    peer.reset_stats()
    engine = Engine(EngineConfig())
    try:
        _, seconds = await into_target(engine, loc, MemoryDisk(size, pieces, data), 1, work)
    finally:
        engine.close()
    written = sum(b.get("bytes_written", 0) for b in peer.stats()["blobs"].values())

    def baseline() -> float:
        service = BlobServiceClient.from_connection_string(peer.connection_string)
        with service.get_container_client("baseline") as container:
            container.create_container()
            blob = container.get_blob_client("plain.vhd")
            blob.create_page_blob(size)
            start = time.perf_counter()
            for offset in range(0, len(pieces) * MiB, PUT):
                blob.upload_page(data * (PUT // MiB), offset=offset, length=PUT)
            return time.perf_counter() - start
    return {"seconds": seconds, "written": written, "baseline": await asyncio.to_thread(baseline)}


def med(rows: list[dict], f) -> float:
    return statistics.median(f(r) for r in rows)


async def run(args: argparse.Namespace) -> None:
    size_gib, data_mib = (1, 32) if args.smoke else (4, 256)
    runs = args.runs or (1 if args.smoke else 3)
    work = Path(tempfile.mkdtemp(prefix="bench-azure-"))
    process = PeerProcess(work / "peer")
    peer = process.start()
    try:
        group = peer.source_group
        site = site_of(settings_of(peer, group))
        rows: dict[str, list[dict]] = {"first": [], "incremental": [], "target": []}
        rnd = random.Random(1)
        for r in range(runs):
            peer.reset()
            compute = mgmt(ComputeManagementClient, peer)
            disk_id = compute.disks.begin_create_or_update(group, DISK, {
                "location": peer.location, "properties": {
                    "creationData": {"createOption": "Empty"}, "diskSizeGB": size_gib}}
            ).result().id
            written = sorted(rnd.sample(range(size_gib << 10), data_mib))
            for i in written:
                peer.write(DISK, i * MiB, rnd.randbytes(MiB), group=group)
            repo = work / f"repo-{r}"
            repo.mkdir()
            first = await source_cycle(peer, site, disk_id, {}, repo, 1)
            changed = sorted(rnd.sample(written, max(1, data_mib // 10)))
            for i in changed:
                peer.write(DISK, i * MiB, rnd.randbytes(MiB), group=group)
            peer.clear(DISK, next(i for i in written if i not in changed) * MiB, MiB,
                       group=group)
            inc = await source_cycle(peer, site, disk_id, first, repo, 2)
            for row, pieces in ((first, written), (inc, changed)):
                row["expected"] = len(pieces) * MiB
                row["baseline"] = read_baseline(compute, group, row["ref"], pieces)
            rows["first"].append(first)
            rows["incremental"].append(inc)
            rows["target"].append(await target_run(peer, work, size_gib << 30, written,
                                                   rnd.randbytes(MiB)))
        print(f"azure source, {size_gib} GiB managed disk, {data_mib} MiB written in 1 MiB "
              f"pieces, median of {runs} runs")
        print(f"{'cycle':12} {'served MiB':>10} {'expected':>9} {'ratio':>6} {'cycle s':>8} "
              f"{'read MiB/s':>10} {'GETs MiB/s':>10} {'vs GETs':>8}")
        for name in ("first", "incremental"):
            rs = rows[name]
            served, expected = med(rs, lambda r: r["served"]), med(rs, lambda r: r["expected"])
            rate = med(rs, lambda r: r["served"] / r["read_seconds"]) / MiB
            base = med(rs, lambda r: r["expected"] / r["baseline"]) / MiB
            print(f"{name:12} {served / MiB:10.1f} {expected / MiB:9.1f} "
                  f"{served / expected:6.2f} {med(rs, lambda r: r['seconds']):8.2f} "
                  f"{rate:10.1f} {base:10.1f} {rate / base:7.2f}x")
        rs, total = rows["target"], data_mib * MiB
        rate = med(rs, lambda r: total / r["seconds"]) / MiB
        base = med(rs, lambda r: total / r["baseline"]) / MiB
        print(f"azure-disk target, {data_mib} MiB into a {size_gib} GiB replica: "
              f"{rate:.1f} MiB/s (Put Page {med(rs, lambda r: r['written']) / MiB:.1f} MiB), "
              f"sequential 4 MiB upload_page {base:.1f} MiB/s: {rate / base:.2f}x")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS {peak:.0f} MiB (this process; the peer runs apart)")
    finally:
        process.stop()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.azure", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=0, help="default 3 (--smoke: 1)")
    ap.add_argument("--smoke", action="store_true",
                    help="32 MiB on a 1 GiB disk instead of 256 MiB on 4 GiB")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
