"""P9: paired nodes over an emulated WAN (issue 7), every part its own process.

dr-control, a source node (site "dc", reads a `file` disk) and a target node (site
"recovery", writes the paired site's `fs` repository) run as the real daemons, as in
tools/localcluster; the target node advertises the address of `python -m bench.wanproxy`,
a separate process in front of its TransferService adding 50 ms RTT and a 200 Mbit/s cap
shared by all connections. So every chunk crosses the emulated link.

Measured, in one run of `make bench` (or `python -m bench --scenarios P9`):
- the link itself: one plain TCP stream through the same proxy (the baseline: what the
  emulated link carries at best on this machine, right now);
- a full sync of the base image (4 GiB) with the adaptive credit window, `runs` times
  (median quoted), and after the first one a 1 % incremental (scattered 64 KiB writes);
- the same full sync with a fixed one-chunk window (contrast; at most 1 GiB: it is slow);
- the same with 1 % of each connection's MiB segments ending in a reset (RST both
  ways); the source node resumes the stream in place from its newest checkpoint.
Time is the replicate task's, from the source node's log (snapshot and finalize tasks,
and control-plane polling, are not counted). Peak RSS is each node process's VmHWM.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from bench import GiB, MiB, data
from tools.localcluster import Cluster, free_port

LINK_MBIT = 200
LINK = LINK_MBIT * 1e6 / 8  # bytes/s
RTT_MS = 50
# The contrast runs (fixed one-chunk window) at most this large: about 40 % of the link.
CONTRAST_MAX = GiB
# Checkpoints as the product's default (500 MB): resets resume from the newest one.
CHECKPOINT = 500_000_000
ONE_CHUNK = {"DR_NODE_TRANSFER__WINDOW_BYTES": str(MiB),
             "DR_NODE_TRANSFER__MIN_WINDOW_BYTES": str(MiB),
             "DR_NODE_TRANSFER__MAX_WINDOW_BYTES": str(MiB)}


class WanProcess:
    """`python -m bench.wanproxy` in front of 127.0.0.1:upstream_port."""

    def __init__(self, upstream_port: int, *, reset_probability: float = 0.0,
                 reset_every_bytes: int = MiB, seed: int = 1):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.wanproxy", "--upstream",
             f"127.0.0.1:{upstream_port}", "--rtt-ms", str(RTT_MS), "--rate-mbit",
             str(LINK_MBIT), "--reset-probability", str(reset_probability),
             "--reset-every-bytes", str(reset_every_bytes), "--seed", str(seed)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parent.parent)
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"wanproxy did not start: {line}{self.proc.stderr.read()}")
        self.port = int(line)
        self.counters: dict[str, int] = {}

    def stop(self) -> dict[str, int]:
        """Stops it; returns its counters (connections, bytes_up, resets, ...)."""
        if self.proc.returncode is not None:
            return self.counters
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=30)
        for line in err.splitlines():
            if line.startswith("wanproxy:"):
                self.counters = {k: int(v) for k, v in
                                 (kv.split("=") for kv in line.split()[1:])}
        return self.counters


def link_baseline(nbytes: int) -> float:
    """Bytes/s of one plain TCP stream through the emulated link (a sink on loopback)."""
    sink = socket.create_server(("127.0.0.1", 0))
    received = threading.Event()

    def drain():
        conn, _ = sink.accept()
        got = 0
        with conn:
            while got < nbytes and (buf := conn.recv(1 << 20)):
                got += len(buf)
        received.set()

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    wan = WanProcess(sink.getsockname()[1])
    try:
        block = os.urandom(1 << 20)
        with socket.create_connection(("127.0.0.1", wan.port)) as s:
            t0 = time.perf_counter()
            for _ in range(nbytes // len(block)):
                s.sendall(block)
            received.wait(600)
            seconds = time.perf_counter() - t0
    finally:
        wan.stop()
        sink.close()
    return nbytes / seconds


def _vm_hwm_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _task_seconds(log_text: str) -> list[float]:
    """Seconds of each replicate task in a node's JSON log, in order: from `task
    started` to `disk replicated` (resumes in place included). That is logged before
    the node reports the task complete; `task finished` comes after, possibly after the
    cycle completed."""
    kinds, starts, out = {}, {}, []
    for line in log_text.splitlines():
        with contextlib.suppress(ValueError):
            ev = json.loads(line)
            if ev.get("event") == "task started":
                kinds[ev["task"]] = ev.get("kind")
                starts[ev["task"]] = datetime.fromisoformat(ev["timestamp"].rstrip("Z"))
            elif ev.get("event") == "disk replicated" and kinds.get(ev.get("task")) == "replicate":
                end = datetime.fromisoformat(ev["timestamp"].rstrip("Z"))
                out.append((end - starts[ev["task"]]).total_seconds())
    return out


class PairedRun:
    """A cluster with a paired site behind the emulated WAN, protecting one image."""

    def __init__(self, root: Path, image: Path, *, target_env: dict | None = None, **wan):
        shutil.rmtree(root, ignore_errors=True)
        self.cluster = Cluster(root, checkpoint_interval=CHECKPOINT)
        self.image = image
        self.target_env = target_env or {}
        self.wan_args = wan
        self.wan: WanProcess | None = None

    def __enter__(self) -> PairedRun:
        c = self.cluster.__enter__()
        try:
            os.link(self.image, c.src / "vm1.img")  # same content, no copy
            c.add_paired_site("recovery")
            c.drctl("site", "add", "dc", "--kind", "file", "--path", str(c.src))
            port = free_port()
            self.wan = WanProcess(port, **self.wan_args)
            c.start_node("tgt", site="recovery", transfer_port=port,
                         advertise=f"127.0.0.1:{self.wan.port}", **self.target_env)
            c.start_node("src1", site="dc")
            c.drctl("plan", "create", "p", "--source", "dc", "--target", "recovery",
                    "--workload", "vm1", "--rpo", "24h")
        except BaseException:
            self.__exit__()
            raise
        return self

    def cycle(self) -> dict:
        """One cycle; returns its seconds (the replicate task's) and stats."""
        c = self.cluster
        c.drctl("plan", "run", "p", "--wait")
        cycle = c.cycles("plans/p")[-1]
        if cycle["state"] != "completed":
            raise RuntimeError(f"P9 cycle did not complete: {cycle}")
        seconds = _task_seconds(self.source_log())[-1]
        return {"seconds": seconds, "stats": {k: int(v) for k, v in cycle["stats"].items()}}

    def peak_rss_mib(self) -> dict[str, float]:
        return {n: round(_vm_hwm_mib(self.cluster.nodes[n].pid), 1) for n in ("src1", "tgt")}

    def source_log(self) -> str:
        """The source node's whole log (Cluster.log gives only its tail)."""
        return (self.cluster.root / "node-src1.log").read_text(errors="replace")

    def resumes(self) -> int:
        return self.source_log().count("resuming in place")

    def __exit__(self, *exc) -> None:
        if self.wan is not None:
            self.wan.stop()
        self.cluster.__exit__(*exc)


def p9(bench) -> dict:
    """The scenario for bench.scenarios (Bench.p9)."""
    s, log = bench.s, bench.log
    image = bench.base_image()
    size = s.size
    work = bench.dir("p9")
    share = lambda secs, n=size: n / secs / LINK  # noqa: E731
    link = link_baseline(min(size, 256 * MiB))
    log(f"  P9 link: one TCP stream through the proxy {link / 1e6:.1f} MB/s "
        f"({link / LINK * 100:.0f} % of {LINK_MBIT} Mbit/s)")
    adaptive, incremental, rss = [], None, {}
    for r in range(s.runs):
        with PairedRun(work / "adaptive", image) as run:
            full = run.cycle()
            adaptive.append(full["seconds"])
            bench._progress("P9", r, "adaptive window", size, full["seconds"])
            if r == 0:
                offsets = data.scattered_offsets(size, 0.01, seed=9)
                changed = data.apply_writes(image, offsets, "p9")
                try:
                    inc = run.cycle()
                finally:
                    data.restore_writes(image, offsets)
                incremental = {"changed_bytes": changed, "seconds": inc["seconds"],
                               "bytes_sent": inc["stats"].get("bytes_sent", 0),
                               "chunks_sent": inc["stats"].get("chunks_sent", 0)}
                log(f"  P9 incremental 1 %: {inc['seconds']:.1f} s, "
                    f"{incremental['bytes_sent'] / MiB:.0f} MiB sent")
            rss = {k: max(v, rss.get(k, 0)) for k, v in run.peak_rss_mib().items()}
    contrast_size = min(size, CONTRAST_MAX)
    contrast_image = image if contrast_size == size else data.make_image(
        s.work / "data" / "p9-contrast.img", contrast_size, "base")
    with PairedRun(work / "fixed", contrast_image, target_env=ONE_CHUNK) as run:
        fixed = run.cycle()["seconds"]
        bench._progress("P9", 0, "fixed 1-chunk window", contrast_size, fixed)
    with PairedRun(work / "resets", image, reset_probability=0.01) as run:
        resets = run.cycle()["seconds"]
        resumed = run.resumes()
        counters = run.wan.stop()
        bench._progress("P9", 0, "adaptive, 1 % resets", size, resets)
    shutil.rmtree(work, ignore_errors=True)
    median = statistics.median(adaptive)
    return {
        "id": "P9",
        "ours_mb_s": size / median / 1e6,
        "peak_rss_mib": max(rss.values()),
        "baselines": {"link (1 TCP stream via the proxy)": link / 1e6},
        "extra": {
            "image_bytes": size, "link_mbit": LINK_MBIT, "rtt_ms": RTT_MS,
            "share_of_link": share(median),
            "share_of_measured_link": size / median / link,
            "runs_seconds": adaptive,
            "fixed_one_chunk": {"image_bytes": contrast_size, "seconds": fixed,
                                "share_of_link": share(fixed, contrast_size)},
            "resets_1pct": {"seconds": resets, "share_of_link": share(resets),
                            "resets": counters.get("resets", 0), "resumed": resumed},
            "incremental_1pct": incremental,
            "peak_rss_mib_by_node": rss,
        },
    }
