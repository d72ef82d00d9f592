"""One measurement of our engine, in a fresh process: `python -m bench.worker SPEC_JSON`.

A fresh process per measurement keeps one measurement's peak RSS (getrusage of this
process) from leaking into another's. The timed part starts just before the engine call
and ends after it returned (the engine syncs the repository first) and a final
`os.sync()`, the same final sync the baselines get. Opening the repository and the
interpreter start are outside it (`process_seconds`, measured by the parent, has them).
Prints one line: RESULT_PREFIX + JSON.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import resource
import sys
import time
from pathlib import Path

RESULT_PREFIX = "BENCH-RESULT "


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _engine(spec: dict):
    from dr_node.config import EngineConfig
    from dr_node.engine import Engine
    return Engine(EngineConfig(**spec.get("engine", {})))


async def _open_target(engine, path: str, link: dict | None, roots: tuple[str, ...] = ()):
    """The repository target the node would open for `path` (its store without fsync,
    as the baselines' files are synced once at the end), optionally behind a WAN link."""
    from dr_common.repository import FsStore, Repository
    from dr_common.targets.repository import RepositoryTarget
    store = FsStore(path, executor=engine.pool, durable=False)
    if link:
        from bench.linkstore import LinkStore
        store = LinkStore(store, latency=link["latency"], rate=link["rate"])
    repo = await Repository.open_or_create(store)
    return RepositoryTarget(repo, name="bench-repo", env=engine.target_env(roots)), store


async def _sink(target, spec: dict, disk: str, src):
    from dr_common.targets.base import SinkRequest
    return await target.sink(SinkRequest(
        plan="plans/bench", cycle="plans/bench/cycles/1", disk=disk, size=src.size,
        chunk_size=spec["chunk_size"], compression=spec.get("compression", "none"),
        previous_root_hash=spec.get("previous", "")))


def _limiter_info(engine, target: str) -> dict:
    lim = engine.limiter(target)
    return {"final_limit": lim.limit,
            "max_limit": max([lim.limit, *(v for _, v in lim.history)]),
            "decreases": sum(1 for (_, a), (_, b) in zip(lim.history, lim.history[1:])
                             if b < a),
            "changes": len(lim.history), "throttles": lim.throttles}


async def replicate(spec: dict) -> dict:
    from dr_common.sources.file import FileDisk
    engine = _engine(spec)
    try:
        target, store = await _open_target(engine, spec["repo"], spec.get("link"))
        rss_before = _rss_mib()
        with FileDisk(spec["image"]) as src:
            disk = spec.get("disk", "d1")
            sink = await _sink(target, spec, disk, src)
            t0 = time.perf_counter()
            result = await engine.replicate(
                disk=disk, source=src, sink=sink, chunk_size=spec["chunk_size"],
                window=spec.get("window"))
            os.sync()
            seconds = time.perf_counter() - t0
        out = {"seconds": seconds, "root_hash": result.manifest.root_hash,
               "size": result.manifest.size, "full_sync": result.full_sync,
               "stats": result.stats.as_dict(), "budget_peak": engine.budget.peak,
               "budget_bytes": engine.config.budget_bytes, "rss_before_mib": rss_before,
               "limiter": _limiter_info(engine, "bench-repo")}
        if spec.get("link"):
            out["link"] = {"requests": store.requests, "bytes": store.bytes,
                           "queue_seconds": store.queue_seconds,
                           "mean_put_seconds": store.put_seconds / max(store.puts, 1),
                           "max_put_seconds": store.max_put_seconds}
        return out
    finally:
        engine.close()


async def replicate_kvm(spec: dict) -> dict:
    """One cycle of a qcow2 image through the kvm source (dirty bitmaps over NBD).

    Timed like a cycle: opening the source (qemu-img info, bitmap rotation, starting
    qemu-nbd and connecting), replicating, closing it (stopping qemu-nbd), `os.sync()`.
    """
    from dr_common.sources.kvm import KvmDisk
    engine = _engine(spec)
    try:
        target, _ = await _open_target(engine, spec["repo"], None)
        loop = asyncio.get_running_loop()
        rss_before = _rss_mib()
        t0 = time.perf_counter()
        src = await loop.run_in_executor(engine.pool, functools.partial(
            KvmDisk, spec["image"], previous_bitmap=spec.get("previous_bitmap", ""),
            new_bitmap=spec["new_bitmap"], connections=spec.get("connections", 4)))
        open_seconds = time.perf_counter() - t0
        try:
            t1 = time.perf_counter()
            disk = spec.get("disk", "d1")
            result = await engine.replicate(
                disk=disk, source=src, sink=await _sink(target, spec, disk, src),
                chunk_size=spec["chunk_size"], window=spec.get("window"))
            replicate_seconds = time.perf_counter() - t1
        finally:
            await loop.run_in_executor(engine.pool, src.close)
        os.sync()
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "open_seconds": open_seconds,
                "replicate_seconds": replicate_seconds,
                "root_hash": result.manifest.root_hash, "size": result.manifest.size,
                "full_sync": result.full_sync, "full_sync_reason": src.full_sync_reason,
                "source_bytes_read": src.bytes_read, "stats": result.stats.as_dict(),
                "budget_peak": engine.budget.peak,
                "budget_bytes": engine.config.budget_bytes, "rss_before_mib": rss_before,
                "limiter": _limiter_info(engine, "bench-repo")}
    finally:
        engine.close()


async def replicate_many(spec: dict) -> dict:
    """All of spec["images"] at once through one engine; per-disk finish times."""
    from contextlib import ExitStack

    from dr_common.sources.file import FileDisk
    engine = _engine(spec)
    try:
        target, _ = await _open_target(engine, spec["repo"], None)
        with ExitStack() as stack:
            sources = [stack.enter_context(FileDisk(p)) for p in spec["images"]]
            finish: list[float] = [0.0] * len(sources)
            t0 = time.perf_counter()

            async def one(i: int, src):
                r = await engine.replicate(
                    disk=f"d{i}", source=src, chunk_size=spec["chunk_size"],
                    sink=await _sink(target, {**spec, "compression": "none"}, f"d{i}", src))
                finish[i] = time.perf_counter() - t0
                return r

            results = await asyncio.gather(*(one(i, s) for i, s in enumerate(sources)))
            os.sync()
            seconds = time.perf_counter() - t0
        stats: dict[str, int] = {}
        for r in results:
            for k, v in r.stats.as_dict().items():
                stats[k] = stats.get(k, 0) + v
        return {"seconds": seconds, "finish_seconds": finish, "stats": stats,
                "root_hashes": [r.manifest.root_hash for r in results],
                "budget_peak": engine.budget.peak, "budget_bytes": engine.config.budget_bytes,
                "limiter": _limiter_info(engine, "bench-repo")}
    finally:
        engine.close()


async def restore(spec: dict) -> dict:
    engine = _engine(spec)
    try:
        from dr_common.proto.dr.v1 import nodes_pb2
        dest = Path(spec["destination"])
        target, _ = await _open_target(engine, spec["repo"], None, roots=(str(dest.parent),))

        async def progress(done: int, total: int) -> None:
            return None

        t0 = time.perf_counter()
        out = await target.restore(nodes_pb2.RestoreSpec(
            root_hash=spec["root_hash"], disk=spec.get("disk", "d1"),
            destination_path=str(dest), format="raw", overwrite=True), progress)
        os.sync()
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "bytes_written": out.bytes_written,
                "budget_peak": engine.budget.peak, "budget_bytes": engine.config.budget_bytes}
    finally:
        engine.close()


OPS = {"replicate": replicate, "replicate_kvm": replicate_kvm,
       "replicate_many": replicate_many, "restore": restore}


def main(argv: list[str]) -> None:
    spec = json.loads(argv[0])
    from dr_common.logging import setup
    setup("warning", service="bench")
    try:
        import uvloop  # the node daemon runs on uvloop: measure on it too
        run = uvloop.run
    except ImportError:
        run = asyncio.run
    out = run(OPS[spec["op"]](spec))
    out["peak_rss_mib"] = _rss_mib()
    sys.stdout.write(RESULT_PREFIX + json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
