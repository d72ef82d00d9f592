"""Paired nodes as separate processes with an emulated WAN between them (issue 7).

Real dr-control, a source node (site "dc") and a target node (site "recovery", a paired
file site), each its own process; the target node advertises the address of a
bench.wanproxy in front of its TransferService, so every chunk crosses the proxy
(latency, a rate cap, resets, a flipped byte). The source reads a `file` disk; the
target writes the `fs` repository of the recovery site; restores run on the target
node and must equal the source byte for byte.
"""

from __future__ import annotations

import contextlib

from bench.wanproxy import WanProxy
from tests.helpers.cluster import metric
from tests.helpers.disks import MiB, make_disk, write_at
from tools.localcluster import Cluster, free_port, sha256, wait_for

# The target node's credit window in these tests (min = max: not adapted), so that
# "at most one window" is a tight bound on a 64 MiB disk.
WINDOW = 4 * MiB
FIXED_WINDOW = {"DR_NODE_TRANSFER__WINDOW_BYTES": str(WINDOW),
                "DR_NODE_TRANSFER__MIN_WINDOW_BYTES": str(WINDOW),
                "DR_NODE_TRANSFER__MAX_WINDOW_BYTES": str(WINDOW)}


@contextlib.contextmanager
def _paired(c: Cluster, *, target_env: dict | None = None, **wan):
    """A paired site `recovery` with target node `tgt` behind a WAN proxy, a source site
    `dc` (c.src) with source node `src1`, and plan `p` protecting dc's vm1.img (which
    must exist: adding the site discovers it)."""
    c.add_paired_site("recovery")
    c.drctl("site", "add", "dc", "--kind", "file", "--path", str(c.src))
    port = free_port()
    with WanProxy.start_in_thread("127.0.0.1", port, **wan) as proxy:
        c.target_port, c.proxy = port, proxy
        _start_target(c, target_env)
        c.start_node("src1", site="dc", DR_NODE_TRANSFER__CONNECT_TIMEOUT_SECONDS="60")
        c.drctl("plan", "create", "p", "--source", "dc", "--target", "recovery",
                "--workload", "vm1", "--rpo", "1h")
        yield proxy


def _start_target(c: Cluster, env: dict | None) -> None:
    c.start_node("tgt", site="recovery", transfer_port=c.target_port,
                 advertise=f"127.0.0.1:{c.proxy.port}", **(env or {}))


def _cycle(c: Cluster, n: int) -> dict:
    """Runs plan p to the end of its n-th cycle (oldest first), which must complete."""
    c.drctl("plan", "run", "p", "--wait")
    cycles = c.cycles("plans/p")
    assert len(cycles) == n and cycles[-1]["state"] == "completed", cycles
    return cycles[-1]


def _restore_equals(c: Cluster, point: str, expected: str, name: str) -> None:
    dest = c.out / name
    c.drctl("restore", point, "--to", str(dest))
    assert sha256(dest) == expected, f"{point} does not restore to the source's bytes"


def _log(c: Cluster, name: str) -> str:
    """A daemon's whole log (Cluster.log gives only its tail)."""
    return (c.root / name).read_text(errors="replace")


def test_every_point_restores_bit_identical_across_the_wan(tmp_path):
    with Cluster(tmp_path, checkpoint_interval=8 * MiB) as c, contextlib.ExitStack() as stack:
        disk = c.src / "vm1.img"
        make_disk(disk, 48 * MiB, [(0, 20 * MiB), (30 * MiB, 8 * MiB)])
        first = sha256(disk)
        wan = stack.enter_context(_paired(c, rtt=0.02, rate_bytes_per_second=50e6))
        full = _cycle(c, 1)
        sent_full = wan.bytes_up
        assert int(full["stats"]["chunks_sent"]) == 28  # 28 MiB of data, 1 MiB chunks
        # An incremental: two chunks change, one hole gets data.
        write_at(disk, 3 * MiB + 100, b"changed" * 100)
        write_at(disk, 31 * MiB, b"changed" * 100)
        write_at(disk, 44 * MiB, b"new data" * 100)
        second = sha256(disk)
        inc = _cycle(c, 2)
        assert int(inc["stats"]["chunks_sent"]) == 3
        assert int(inc["stats"]["chunks_unchanged"]) == 26
        # What crossed the WAN for the incremental: 3 chunks, ids and calls, not more.
        assert wan.bytes_up - sent_full < 4 * MiB
        points = sorted(c.points("plans/p"), key=lambda p: p["create_time"])
        assert len(points) == 2
        _restore_equals(c, points[0]["name"], first, "p1.raw")
        _restore_equals(c, points[1]["name"], second, "p2.raw")
        # The repository is only at the recovery site, written by the target node.
        assert "task started" not in _log(c, "node-n1.log")
        assert not any(c.repo.iterdir())


def test_killing_the_target_node_mid_cycle_resends_at_most_one_window(tmp_path):
    size = 64 * MiB
    with Cluster(tmp_path, checkpoint_interval=8 * MiB, metrics=True) as c:
        disk = c.src / "vm1.img"
        make_disk(disk, size, [(0, size)])
        expected = sha256(disk)
        with _paired(c, target_env=FIXED_WINDOW, rtt=0.02, rate_bytes_per_second=16e6) as wan:
            _kill_target_mid_cycle(c, wan, size, expected)


def _kill_target_mid_cycle(c: Cluster, wan, size: int, expected: str) -> None:
    """Kills the target node once 24 MiB crossed the WAN, restarts it, checks."""
    c.drctl("plan", "run", "p")
    wait_for(lambda: wan.bytes_up > 24 * MiB, timeout=60, what="24 MiB on the wire")
    c.kill_node("tgt")
    at_kill = wan.bytes_up
    # The source notices and stops: while the target is down nothing more than what
    # was already under way (at most one window of credits) crosses the proxy.
    wait_for(lambda: "transfer stream broke" in _log(c, "node-src1.log"),
             what="the source node to notice")
    stopped_at = wan.bytes_up
    assert stopped_at - at_kill <= WINDOW
    _start_target(c, FIXED_WINDOW)
    cycle = wait_for(lambda: (lambda cy: cy if cy["state"] != "running"
                              and cy["state"] != "queued" else None)(
        c.cycles("plans/p")[0]), timeout=120, what="the cycle to end")
    assert cycle["state"] == "completed", cycle
    # The stream was resumed in place: the task's attempt was not spent.
    assert "resuming in place" in _log(c, "node-src1.log")
    assert metric([c.nodes["src1"].metrics_port], "dr_transfer_resumes_total") >= 1
    # Chunks sent twice: whatever crossed the WAN beyond the disk itself is the
    # chunks in flight when the target died (at most one window), plus framing,
    # ids and calls (well under 1 MiB for 64 chunks).
    assert wan.bytes_up <= size + WINDOW + MiB, wan.bytes_up - size
    [point] = c.points("plans/p")
    _restore_equals(c, point["name"], expected, "p1.raw")


def test_a_byte_flipped_on_the_wan_is_rejected_and_sent_again(tmp_path):
    marker = b"\x8fHYBRID-DR-FLIP\x01"
    with Cluster(tmp_path, metrics=True) as c, contextlib.ExitStack() as stack:
        disk = c.src / "vm1.img"
        make_disk(disk, 16 * MiB, [(0, 16 * MiB)])
        write_at(disk, 5 * MiB + 4096, marker * 256)  # copies: framing may split one
        expected = sha256(disk)
        wan = stack.enter_context(_paired(c, rtt=0.01))
        wan.corrupt(marker, count=1)
        cycle = _cycle(c, 1)
        assert wan.corruptions == 1
        src = c.nodes["src1"].metrics_port
        assert metric([src], "dr_transfer_chunks_total", side="source", outcome="rejected") == 1
        assert metric([src], "dr_transfer_chunks_total", side="source", outcome="stored") == 16
        assert int(cycle["stats"]["chunks_sent"]) == 16
        assert "rejected a chunk damaged in transit" in _log(c, "node-src1.log")
        [point] = c.points("plans/p")
        _restore_equals(c, point["name"], expected, "p1.raw")


def test_connection_resets_on_the_wan_resume_in_place(tmp_path):
    """A WAN that resets connections now and then: streams are opened again from the
    newest checkpoint, without failing the task, and the point restores equal."""
    size = 48 * MiB
    with Cluster(tmp_path, checkpoint_interval=4 * MiB, metrics=True) as c, \
            contextlib.ExitStack() as stack:
        disk = c.src / "vm1.img"
        make_disk(disk, size, [(0, size)])
        expected = sha256(disk)
        # A 4 MiB window: a stream's first acknowledgement comes within a few MiB, so
        # streams that break before any (stalls) stay rare even at 10 % per MiB.
        wan = stack.enter_context(_paired(c, target_env=FIXED_WINDOW, rtt=0.01,
                                          reset_probability=0.1, reset_every_bytes=MiB,
                                          seed=3))
        cycle = _cycle(c, 1)
        assert wan.resets >= 1
        # The task's stats add up every stream's, not just the last one's (which began at
        # a checkpoint): each chunk was acknowledged on some stream, or found stored by
        # a later one's probe (its ack lost with the broken stream).
        stats = {k: int(v) for k, v in cycle["stats"].items()}
        assert stats["chunks_sent"] + stats.get("chunks_deduplicated", 0) >= 48
        assert stats["chunks_read"] > 48  # resumed streams read again from a checkpoint
        resumes = metric([c.nodes["src1"].metrics_port], "dr_transfer_resumes_total")
        assert resumes >= 1
        assert not cycle.get("error")
        assert "task failed" not in _log(c, "node-src1.log")
        [point] = c.points("plans/p")
        _restore_equals(c, point["name"], expected, "p1.raw")
