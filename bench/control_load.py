"""`python -m bench.control_load`: load on the control plane alone.

One real dr-control process (SQLite by default; PostgreSQL with --database-url or
$DR_BENCH_DATABASE_URL, an empty database), DISKS sparse 1 MiB image files in one `file`
site, grouped into plans of --disks-per-plan disks, and NODES simulated nodes: asyncio
clients in this process that register, heartbeat every --heartbeat seconds and run
--slots loops each that long-poll AcquireTask, send one ReportProgress and complete the
task at once (no data moves: a replicate task "returns" a made-up manifest root hash).
An operator client calls ListPlans (every plan, one page) and GetRpoReport once a second.

Measured: client-side latency (p50/p99/max) of each unary call, the duration of the
scheduler's passes (dr-control's dr_control_scheduler_pass_seconds histogram: p50/p99
are bucket upper bounds), throughput, and dr-control's peak RSS (VmHWM). The simulated
nodes share one Python process, so under heavy load part of a latency is this client's
own queueing: read the numbers as an upper bound.

Prints a table; --json PATH also writes the numbers as JSON. --postgres measures twice
in one command, on SQLite and then on a PostgreSQL server started for the run
(tests/peers/pg.py), and the JSON then holds {"sqlite": ..., "postgresql": ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import grpc

from dr_common.proto.dr.v1 import (common_pb2, inventory_pb2, inventory_pb2_grpc, nodes_pb2,
                                   nodes_pb2_grpc, protection_pb2, protection_pb2_grpc)

BIN = Path(sys.executable).parent
MiB = 1 << 20
CALLS = ("Heartbeat", "AcquireTask (leased)", "ReportProgress", "CompleteTask", "ListPlans",
         "GetRpoReport")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.control_load", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--disks", type=int, default=2000, help="default %(default)s")
    ap.add_argument("--disks-per-plan", type=int, default=10, help="default %(default)s")
    ap.add_argument("--nodes", type=int, default=50, help="default %(default)s")
    ap.add_argument("--slots", type=int, default=4,
                    help="tasks each node runs at once (its max_tasks; default %(default)s)")
    ap.add_argument("--heartbeat", type=float, default=5.0,
                    help="seconds between a node's heartbeats (default %(default)s)")
    ap.add_argument("--seconds", type=float, default=60.0,
                    help="measured duration after setup (default %(default)s)")
    ap.add_argument("--rpo", type=int, default=30,
                    help="every plan's RPO in seconds: cycles keep coming (default %(default)s)")
    ap.add_argument("--tick", type=float, default=1.0,
                    help="dr-control's scheduler tick in seconds (default %(default)s)")
    ap.add_argument("--database-url", default=os.environ.get("DR_BENCH_DATABASE_URL", ""),
                    help="an empty PostgreSQL database (default $DR_BENCH_DATABASE_URL; "
                         "unset: SQLite in the work directory)")
    ap.add_argument("--postgres", action="store_true",
                    help="also run on a local PostgreSQL started for the run (tests/peers/pg.py; "
                         "needs the postgresql server binaries): SQLite first, then it")
    ap.add_argument("--work", type=Path, default=None,
                    help="directory for images and state (default: a temporary one, removed)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    for name in ("disks", "disks_per_plan", "nodes", "slots"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


class Latencies:
    def __init__(self):
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)

    @contextlib.asynccontextmanager
    async def measure(self, call: str):
        start = time.perf_counter()
        try:
            yield
        except grpc.aio.AioRpcError:
            self.errors[call] += 1
            raise
        self.samples[call].append(time.perf_counter() - start)

    def summary(self) -> dict[str, dict]:
        out = {}
        for call in CALLS:
            xs = sorted(self.samples.get(call, []))
            if not xs:
                out[call] = {"count": 0, "errors": self.errors.get(call, 0)}
                continue
            out[call] = {"count": len(xs), "errors": self.errors.get(call, 0),
                         "p50_ms": round(1000 * _pct(xs, 50), 2),
                         "p99_ms": round(1000 * _pct(xs, 99), 2),
                         "max_ms": round(1000 * xs[-1], 2),
                         "mean_ms": round(1000 * statistics.fmean(xs), 2)}
        return out


def _pct(sorted_xs: list[float], p: float) -> float:
    i = min(len(sorted_xs) - 1, max(0, round(p / 100 * (len(sorted_xs) - 1))))
    return sorted_xs[i]


class SimNode:
    def __init__(self, node_id: str, address: str, args, lat: Latencies, stop: asyncio.Event):
        self.id, self.name = node_id, f"nodes/{node_id}"
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = nodes_pb2_grpc.NodeServiceStub(self.channel)
        self.args, self.lat, self.stop = args, lat, stop
        self.running = 0
        self.completed: dict[str, int] = defaultdict(int)

    async def run(self) -> None:
        await self.stub.RegisterNode(nodes_pb2.RegisterNodeRequest(
            node_id=self.id, hostname=self.id, version="bench", max_tasks=self.args.slots,
            budget_bytes=256 * MiB), timeout=30)
        try:
            await asyncio.gather(self._heartbeats(),
                                 *(self._worker() for _ in range(self.args.slots)))
        finally:
            await self.channel.close()

    async def _heartbeats(self) -> None:
        # Spread the nodes' heartbeats over the interval, as real nodes started at
        # different times would be.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(),
                                   self.args.heartbeat * (hash(self.id) % 1000) / 1000)
        while not self.stop.is_set():
            with contextlib.suppress(grpc.aio.AioRpcError):
                async with self.lat.measure("Heartbeat"):
                    await self.stub.Heartbeat(nodes_pb2.HeartbeatRequest(
                        node=self.name, running_tasks=self.running,
                        inflight_bytes=self.running * MiB,
                        backpressure=self.running / self.args.slots / 2), timeout=30)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.args.heartbeat)

    async def _worker(self) -> None:
        while not self.stop.is_set():
            start = time.perf_counter()
            try:
                resp = await self.stub.AcquireTask(nodes_pb2.AcquireTaskRequest(
                    node=self.name, wait_seconds=5), timeout=30)
            except grpc.aio.AioRpcError as e:
                if self.stop.is_set():
                    return
                log(f"{self.id}: AcquireTask failed: {e.code().name} {e.details()}")
                await asyncio.sleep(1)
                continue
            if not resp.HasField("task"):
                continue
            self.lat.samples["AcquireTask (leased)"].append(time.perf_counter() - start)
            self.running += 1
            try:
                await self._do(resp.task)
            except grpc.aio.AioRpcError as e:
                if not self.stop.is_set():
                    log(f"{self.id}: {resp.task.name}: {e.code().name} {e.details()}")
            finally:
                self.running -= 1

    async def _do(self, task: nodes_pb2.Task) -> None:
        token = task.lease_token
        req = nodes_pb2.CompleteTaskRequest(task=task.name, lease_token=token)
        if task.kind == "replicate":
            size = task.replicate.size_bytes
            async with self.lat.measure("ReportProgress"):
                await self.stub.ReportProgress(nodes_pb2.ReportProgressRequest(
                    task=task.name, lease_token=token, bytes_done=size, full_sync=True,
                    checkpoint=common_pb2.Checkpoint(watermark_chunk=1)), timeout=30)
            req.root_hash, req.size_bytes, req.full_sync = "ab" * 32, size, True
            req.stats.CopyFrom(common_pb2.TransferStats(bytes_read=size, chunks_read=1))
        elif task.kind not in ("finalize", "delete", "gc", "snapshot"):
            req.error.CopyFrom(common_pb2.TaskError(reason="unsupported", retryable=False,
                                                    message=f"bench node: {task.kind}"))
        async with self.lat.measure("CompleteTask"):
            await self.stub.CompleteTask(req, timeout=30)
        self.completed[task.kind] += 1


async def operator(address: str, lat: Latencies, stop: asyncio.Event) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        plans = protection_pb2_grpc.ProtectionServiceStub(channel)
        while not stop.is_set():
            with contextlib.suppress(grpc.aio.AioRpcError):
                async with lat.measure("ListPlans"):
                    await plans.ListPlans(protection_pb2.ListPlansRequest(page_size=1000),
                                          timeout=60)
                async with lat.measure("GetRpoReport"):
                    await plans.GetRpoReport(protection_pb2.GetRpoReportRequest(), timeout=60)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


def make_images(src: Path, disks: int) -> list[str]:
    """Sparse 1 MiB images, one workload each (d00000, ...); returns workload ids."""
    src.mkdir(parents=True, exist_ok=True)
    ids = [f"d{i:05d}" for i in range(disks)]
    for w in ids:
        with open(src / f"{w}.img", "wb") as f:
            f.truncate(MiB)
    return ids


def start_control(args, work: Path, port: int, metrics_port: int) -> subprocess.Popen:
    env = {**os.environ,
           "DR_CONTROL_LISTEN": f"127.0.0.1:{port}",
           "DR_CONTROL_STATE_DIR": str(work / "state"),
           "DR_CONTROL_FILE_ROOTS": str(work),
           "DR_CONTROL_METRICS_PORT": str(metrics_port),
           "DR_CONTROL_REST_LISTEN": "",
           "DR_CONTROL_LOG_LEVEL": "warning",
           "DR_CONTROL_SCHEDULER__TICK_SECONDS": str(args.tick),
           "DR_CONTROL_SCHEDULER__LEASE_SECONDS": "60"}
    if args.database_url:
        env["DR_CONTROL_DATABASE_URL"] = args.database_url
    out = open(work / "control.log", "ab")
    return subprocess.Popen([str(BIN / "dr-control")], env=env, stdout=out,
                            stderr=subprocess.STDOUT)


def wait_serving(proc: subprocess.Popen, address: str, work: Path) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"dr-control exited:\n{(work / 'control.log').read_text()[-3000:]}")
            with contextlib.suppress(grpc.RpcError):
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == \
                        health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.monotonic() > deadline:
                raise SystemExit("dr-control did not serve within 60 s")
            time.sleep(0.1)


def setup(address: str, work: Path, workloads: list[str], args) -> int:
    """The sites and plans, through the API as an operator would; returns the plan count."""
    with grpc.insecure_channel(address) as channel:
        inv = inventory_pb2_grpc.InventoryServiceStub(channel)
        prot = protection_pb2_grpc.ProtectionServiceStub(channel)
        (work / "repo").mkdir(exist_ok=True)
        inv.CreateSite(inventory_pb2.CreateSiteRequest(site_id="src", site=inventory_pb2.Site(
            kind="file", path=str(work / "src"))), timeout=600)
        inv.CreateSite(inventory_pb2.CreateSiteRequest(site_id="dst", site=inventory_pb2.Site(
            kind="file", path=str(work / "repo"))), timeout=60)
        k = args.disks_per_plan
        groups = [workloads[i:i + k] for i in range(0, len(workloads), k)]
        for i, group in enumerate(groups):
            prot.CreatePlan(protection_pb2.CreatePlanRequest(
                plan_id=f"p{i:04d}", plan=protection_pb2.Plan(
                    source_site="sites/src", target_site="sites/dst", target_kind="fs",
                    workloads=[f"sites/src/workloads/{w}" for w in group],
                    rpo_seconds=args.rpo)), timeout=60)
        return len(groups)


def scrape(metrics_port: int) -> dict[str, float]:
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read()
    out = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[key] = float(value)
    return out


def scheduler_passes(m: dict[str, float]) -> dict:
    name = "dr_control_scheduler_pass_seconds"
    count = int(m.get(f"{name}_count", 0))
    if not count:
        return {"count": 0}
    buckets = sorted((float(k.split('le="')[1].rstrip('"}')), v) for k, v in m.items()
                     if k.startswith(f"{name}_bucket"))

    def quantile(q: float) -> float:
        for le, cum in buckets:
            if cum >= q * count:
                return le
        return float("inf")
    return {"count": count, "mean_ms": round(1000 * m[f"{name}_sum"] / count, 2),
            "p50_le_ms": 1000 * quantile(0.5), "p99_le_ms": 1000 * quantile(0.99)}


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def load(address: str, args, lat: Latencies) -> list[SimNode]:
    stop = asyncio.Event()
    nodes = [SimNode(f"sim-{i:03d}", address, args, lat, stop) for i in range(args.nodes)]
    runners = [asyncio.create_task(n.run()) for n in nodes]
    runners.append(asyncio.create_task(operator(address, lat, stop)))
    await asyncio.sleep(args.seconds)
    stop.set()
    # Long polls end within their wait (5 s); the rest at once.
    await asyncio.wait(runners, timeout=15)
    for r in runners:
        r.cancel()
    await asyncio.gather(*runners, return_exceptions=True)
    return nodes


def render(results: dict) -> str:
    rows = [("call", "count", "errors", "p50 ms", "p99 ms", "max ms")]
    for call, s in results["calls"].items():
        rows.append((call, s["count"], s["errors"], s.get("p50_ms", "-"), s.get("p99_ms", "-"),
                     s.get("max_ms", "-")))
    sp = results["scheduler_pass"]
    rows.append(("scheduler pass (tick)", sp.get("count", 0), 0,
                 f"<={sp['p50_le_ms']:g}" if sp.get("count") else "-",
                 f"<={sp['p99_le_ms']:g}" if sp.get("count") else "-",
                 f"mean {sp['mean_ms']}" if sp.get("count") else "-"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                       for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    s = results["setup"]
    t = results["throughput"]
    lines += [
        "",
        f"{s['disks']} disks in {s['plans']} plans, {s['nodes']} simulated nodes x "
        f"{s['slots']} slots, heartbeat {s['heartbeat_seconds']:g} s, RPO {s['rpo_seconds']} s, "
        f"{s['database']}; setup {s['setup_seconds']} s, measured {s['seconds']:g} s",
        f"tasks completed: {t['tasks_completed']} ({t['tasks_per_second']}/s; "
        f"{t['by_kind']}), cycles completed: {t['cycles_completed']}",
        f"dr-control peak RSS: {results['control_peak_rss_mib']} MiB",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if not args.postgres:
        results = run(args)
        print(render(results))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.peers.pg import PgServer
    server = PgServer().start()
    try:
        both = {"sqlite": run(argparse.Namespace(**{**vars(args), "database_url": ""})),
                "postgresql": run(argparse.Namespace(**{
                    **vars(args), "database_url": server.new_database("bench")}))}
    finally:
        server.stop()
    for name, results in both.items():
        print(f"== {name}\n{render(results)}\n")
    if args.json:
        args.json.write_text(json.dumps(both, indent=2) + "\n")
    return 0


def run(args) -> dict:
    """One measured run on args.database_url (empty: SQLite); its results."""
    temp = args.work is None
    work = Path(tempfile.mkdtemp(prefix="control-load-")) if temp else args.work.resolve()
    if not temp and args.database_url:
        work = work / "postgresql"
    work.mkdir(parents=True, exist_ok=True)
    port, metrics_port = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    proc = None
    try:
        t0 = time.monotonic()
        workloads = make_images(work / "src", args.disks)
        proc = start_control(args, work, port, metrics_port)
        wait_serving(proc, address, work)
        plans = setup(address, work, workloads, args)
        setup_seconds = round(time.monotonic() - t0, 1)
        log(f"setup: {args.disks} disks, {plans} plans in {setup_seconds} s; "
            f"running {args.nodes} nodes for {args.seconds:g} s")
        lat = Latencies()
        nodes = asyncio.run(load(address, args, lat))
        metrics = scrape(metrics_port)
        rss = peak_rss_mib(proc.pid)
        by_kind: dict[str, int] = defaultdict(int)
        for n in nodes:
            for kind, count in n.completed.items():
                by_kind[kind] += count
        done = sum(by_kind.values())
        results = {
            "setup": {"disks": args.disks, "plans": plans, "nodes": args.nodes,
                      "slots": args.slots, "heartbeat_seconds": args.heartbeat,
                      "rpo_seconds": args.rpo, "seconds": args.seconds,
                      "setup_seconds": setup_seconds,
                      "database": "postgresql" if args.database_url else "sqlite"},
            "calls": lat.summary(),
            "scheduler_pass": scheduler_passes(metrics),
            "throughput": {"tasks_completed": done,
                           "tasks_per_second": round(done / args.seconds, 1),
                           "by_kind": dict(sorted(by_kind.items())),
                           "cycles_completed": int(metrics.get(
                               'dr_cycles_total{state="completed"}', 0))},
            "control_peak_rss_mib": rss,
        }
        return results
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if temp:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
