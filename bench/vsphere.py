"""`python -m bench.vsphere` / `make bench-vsphere`: the vsphere source against the vSphere
peer (tests/peers/vsphere): a VM disk with data written in 1 MiB pieces, a first cycle
(CBT "*": the allocated areas) and an incremental after some of them changed, each into
an fs repository through the real engine, in-process.

Prints per cycle: the disk bytes the peer served against the bytes that were allocated
or changed (the ratio must be 1.00: CBT makes the cycle read nothing else), the cycle's
time (snapshot, reads, drop of the snapshot), its read throughput, and as the baseline
measured in the same run the peer's own ceiling: plain sequential Range GETs of the same
areas through one session. Medians of --runs; peak RSS of the process at the end.
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

from dr_common import sources, targets
from dr_common.proto.dr.v1 import common_pb2, nodes_pb2
from dr_common.sources.base import DiskToRead, SourceEnv
from dr_common.targets.base import SinkRequest
from dr_common.vsphere import Session, VsphereSettings, flat_file
from dr_node.config import EngineConfig
from dr_node.engine import Engine
from tests.helpers.vsphere import add_disk, connect, find_vm
from tests.peers.vsphere.client import PeerProcess

MiB = 1 << 20
VM = "DC0_H0_VM0"


async def cycle(peer, site, disk_msg, previous: dict, repo: Path, n: int) -> dict:
    spec = nodes_pb2.SnapshotSpec(plan="plans/bench", cycle=f"plans/bench/cycles/{n}",
                                  disks=[disk_msg])
    spec.source.vsphere.SetInParent()
    spec.source.site.CopyFrom(site)
    peer.reset_stats()
    start = time.perf_counter()
    ref = (await sources.take_snapshots(spec, SourceEnv()))[0].snapshot_id
    loc = nodes_pb2.SourceLocator(site=site)
    loc.vsphere.CopyFrom(sources.vsphere.locate(DiskToRead(
        plan=spec.plan, cycle=spec.cycle, locator=disk_msg.locator, snapshot_id=ref,
        previous_source_snapshot_id=previous.get("ref", ""))))
    engine = Engine(EngineConfig())
    try:
        async with targets.opened(targets.locator("fs", str(repo)),
                                  engine.target_env([str(repo.parent)])) as target:
            src = await sources.open_source(loc, SourceEnv())
            try:
                sink = await target.sink(SinkRequest(
                    plan=spec.plan, cycle=spec.cycle, disk="d", size=src.size,
                    chunk_size=MiB, previous_root_hash=previous.get("root_hash", "")))
                read_start = time.perf_counter()
                result = await engine.replicate(disk="d", source=src, sink=sink,
                                                chunk_size=MiB)
                read_s = time.perf_counter() - read_start
            finally:
                await asyncio.to_thread(src.close)
    finally:
        engine.close()
    drop = nodes_pb2.DropSnapshotsSpec(plan=spec.plan, cycle=spec.cycle, disks=[disk_msg])
    drop.source.CopyFrom(spec.source)
    await sources.drop_snapshots(drop, SourceEnv())
    served = sum(peer.stats()["served"].values())
    return {"ref": ref, "root_hash": result.root_hash, "served": served,
            "seconds": time.perf_counter() - start, "read_seconds": read_s}


def ceiling(peer, settings: VsphereSettings, key: int, pieces: list[int]) -> float:
    """Seconds to GET `pieces` (MiB indices) of the disk's base file, one session."""
    with Session(settings) as s:
        path = flat_file(peer.disk_info(VM, key)["base"])
        url = s.files.url(path, peer.datacenter)
        buf = memoryview(bytearray(MiB))
        start = time.perf_counter()
        for i in pieces:
            s.files.read_into(url, i * MiB, buf)
        return time.perf_counter() - start


async def run(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-vsphere-"))
    process = PeerProcess(work / "peer")
    peer = process.start()
    try:
        settings = VsphereSettings(url=peer.url, user=peer.user, password=peer.password,
                                   ca_file=str(peer.ca_file))
        site = common_pb2.SiteSettings(vsphere=common_pb2.VsphereSettings(**settings.as_dict()))
        rows: dict[str, list[dict]] = {"first": [], "incremental": [], "ceiling": []}
        rnd = random.Random(1)
        size_mib = args.size_mib
        for r in range(args.runs):
            peer.reset()
            vm = find_vm(connect(peer), VM)
            key = add_disk(vm, size_mib * MiB)
            written = sorted(rnd.sample(range(size_mib), size_mib // 4))
            for i in written:
                peer.write(VM, key, i * MiB, rnd.randbytes(MiB))
            disk_msg = nodes_pb2.SnapshotDisk(disk="d", workload="w",
                                              locator=f"{vm.config.instanceUuid}/{key}")
            repo = work / f"repo-{r}"
            repo.mkdir()
            first = await cycle(peer, site, disk_msg, {}, repo, 1)
            changed = sorted(rnd.sample(written, max(1, len(written) // 16)))
            for i in changed:
                peer.write(VM, key, i * MiB, rnd.randbytes(MiB))
            inc = await cycle(peer, site, disk_msg, first, repo, 2)
            rows["first"].append({**first, "expected": len(written) * MiB})
            rows["incremental"].append({**inc, "expected": len(changed) * MiB})
            secs = ceiling(peer, settings, key, written)
            rows["ceiling"].append({"seconds": secs, "served": len(written) * MiB})
        ceil = statistics.median(r["served"] / r["seconds"] for r in rows["ceiling"]) / MiB
        print(f"vsphere source, {size_mib} MiB disk, {size_mib // 4} MiB written, "
              f"median of {args.runs} runs")
        print(f"{'cycle':12} {'served MiB':>10} {'expected':>9} {'ratio':>6} {'cycle s':>8} "
              f"{'read MiB/s':>10} {'vs ceiling':>10}")
        for name in ("first", "incremental"):
            rs = rows[name]
            served = statistics.median(r["served"] for r in rs) / MiB
            expected = statistics.median(r["expected"] for r in rs) / MiB
            secs = statistics.median(r["seconds"] for r in rs)
            rate = statistics.median(r["served"] / r["read_seconds"] for r in rs) / MiB
            print(f"{name:12} {served:10.1f} {expected:9.1f} {served / expected:6.2f} "
                  f"{secs:8.2f} {rate:10.1f} {rate / ceil:9.2f}x")
        print(f"{'ceiling':12} sequential Range GETs of the same areas: {ceil:.1f} MiB/s")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS {peak:.0f} MiB (this process; the peer runs apart)")
    finally:
        process.stop()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.vsphere", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
