"""Several nodes at once (real daemons): a node killed mid-cycle, a node drained
mid-cycle, and the RPO compliance report.

A background thread reads the control plane's SQLite database every 10 ms while cycles
run, to check what no single snapshot of the API would show: a disk's task is never
leased to two nodes at once, and a drained node is leased nothing new.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

from tests.helpers.disks import MiB, make_disk
from tools.localcluster import Cluster, sha256, wait_for

pytestmark = pytest.mark.e2e

NODE_ENV = {"DR_NODE_MAX_TASKS": "4", "DR_NODE_ENGINE__WINDOW_CHUNKS": "2",
            "DR_NODE_ENGINE__WORKERS": "1"}
DISK_SIZE = 4 * MiB


class LeaseWatch(threading.Thread):
    """Polls the tasks table; records every (task, disk, node, lease token) seen leased,
    with the first time it was seen, and any moment a disk had two leased tasks."""

    def __init__(self, db: Path, interval: float = 0.01):
        super().__init__(daemon=True)
        self.db, self.interval = db, interval
        self.first_seen: dict[tuple[int, str, str, int], float] = {}
        self.overlaps: list[tuple[float, str, list]] = []
        self.polls = 0
        self._halt = threading.Event()

    def run(self) -> None:
        conn = None
        while not self._halt.is_set():
            try:
                if conn is None:
                    conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=1)
                rows = conn.execute("SELECT id, disk, node_id, lease_token FROM tasks "
                                    "WHERE state = 'leased' AND kind = 'replicate'").fetchall()
            except sqlite3.OperationalError:  # not created yet, or busy: look again
                rows = None
            if rows is not None:
                self.polls += 1
                now = time.monotonic()
                by_disk = defaultdict(list)
                for row in rows:
                    self.first_seen.setdefault(tuple(row), now)
                    by_disk[row[1]].append(row)
                for disk, held in by_disk.items():
                    if len(held) > 1:
                        self.overlaps.append((now, disk, held))
            self._halt.wait(self.interval)
        if conn is not None:
            conn.close()

    def stop(self) -> "LeaseWatch":
        self._halt.set()
        self.join(5)
        return self

    def holders(self) -> dict[str, list[tuple[int, str]]]:
        """disk -> [(lease token, node)] in token order."""
        out = defaultdict(list)
        for (_task, disk, node, token) in self.first_seen:
            out[disk].append((token, node))
        return {d: sorted(v) for d, v in out.items()}

    def leased_to(self, node: str, after: float = 0.0) -> list:
        return [k for k, t in self.first_seen.items() if k[2] == node and t > after]


def _db_rows(c: Cluster, sql: str) -> list[tuple]:
    with sqlite3.connect(f"file:{c.root / 'state' / 'control.db'}?mode=ro", uri=True) as conn:
        return conn.execute(sql).fetchall()


def _setup(c: Cluster, disks: int, *, bandwidth: str = "1MiB/s") -> list[str]:
    """`disks` fully written 4 MiB file disks in one plan p1 (64 KiB chunks, capped
    per disk so that a cycle lasts a few seconds); returns the disk ids."""
    ids = [f"d{i:02d}" for i in range(disks)]
    for i, d in enumerate(ids):
        make_disk(c.src / f"{d}.img", DISK_SIZE, [(0, DISK_SIZE)], seed=i + 1)
    c.drctl("site", "add", "src", "--kind", "file", "--path", str(c.src))
    c.drctl("site", "add", "dst", "--kind", "file", "--path", str(c.repo))
    workloads = [a for d in ids for a in ("--workload", f"src/{d}")]
    c.drctl("plan", "create", "p1", "--source", "src", "--target", "dst", *workloads,
            "--rpo", "1h", "--chunk-size", "64KiB", "--bandwidth", bandwidth)
    return ids


def _start(c: Cluster, *nodes: str) -> None:
    c.start_control()
    for n in nodes:
        c.start_node(n)


def _leased_by_node(c: Cluster) -> dict[str, int]:
    return dict(_db_rows(c, "SELECT node_id, count(*) FROM tasks WHERE state = 'leased' "
                            "GROUP BY node_id"))


def _restore_all(c: Cluster, point: dict, ids: list[str]) -> None:
    assert sorted(d["disk"].rsplit("/", 1)[-1] for d in point["disks"]) == ids
    for d in ids:
        dest = c.out / f"{d}.raw"
        c.drctl("restore", point["name"], "--disk", f"src/{d}/{d}", "--to", str(dest))
        assert sha256(dest) == sha256(c.src / f"{d}.img"), f"{d} restored differently"


@pytest.fixture
def three_nodes(tmp_path):
    c = Cluster(tmp_path, lease_seconds=2, checkpoint_interval=256 << 10, node_env=NODE_ENV)
    try:
        _start(c, "n1", "n2", "n3")
        yield c
    finally:
        c.stop()


def test_node_killed_mid_cycle_its_disks_finish_elsewhere(three_nodes: Cluster):
    c = three_nodes
    ids = _setup(c, 12)
    watch = LeaseWatch(c.root / "state" / "control.db")
    watch.start()
    try:
        # All three nodes work (the queue is deep enough to fill every slot); kill one
        # once its disks have made some progress.
        wait_for(lambda: len(_leased_by_node(c)) == 3, interval=0.02,
                 what="tasks on all three nodes")
        victim = max(_leased_by_node(c).items(), key=lambda kv: kv[1])[0]
        wait_for(lambda: _db_rows(c, f"SELECT count(*) FROM tasks WHERE node_id = '{victim}' "
                                     "AND state = 'leased' AND bytes_done > 0")[0][0] > 0,
                 interval=0.02, what=f"progress on {victim}")
        victim_tasks = {r[0]: r[1] for r in _db_rows(
            c, f"SELECT id, lease_token FROM tasks WHERE node_id = '{victim}' "
               "AND state = 'leased'")}
        assert c.kill_node(victim) == -signal.SIGKILL
        point = wait_for(lambda: (lambda p: p[0] if p else None)(c.points("p1")),
                         timeout=90, what="the cycle's recovery point")
    finally:
        watch.stop()

    assert watch.polls > 50
    assert watch.overlaps == [], f"a disk was leased twice at once: {watch.overlaps[:3]}"
    [cycle] = c.cycles("p1")
    assert cycle["state"] == "completed"
    tasks = _db_rows(c, "SELECT id, disk, node_id, lease_token, attempts, state, checkpoint "
                        "FROM tasks WHERE kind = 'replicate'")
    assert len(tasks) == 12 and {t[5] for t in tasks} == {"completed"}
    survivors = {"n1", "n2", "n3"} - {victim}
    for task_id, disk, node, token, attempts, _state, checkpoint in tasks:
        if task_id in victim_tasks:
            # Lease expired (one attempt), finished by another node with a newer token:
            # the killed holder's token is fenced off for good.
            assert attempts == 2 and node in survivors, (disk, attempts, node)
            assert token > victim_tasks[task_id]
        else:
            assert attempts == 1, (disk, attempts)
    # Each disk's holders, in lease order: at most one per token, the victim only first.
    holders = watch.holders()
    for task_id in victim_tasks:
        disk = next(t[1] for t in tasks if t[0] == task_id)
        nodes = [n for _, n in holders[disk]]
        assert nodes[0] == victim and victim not in nodes[1:], (disk, holders[disk])
    for disk, seq in holders.items():
        tokens = [t for t, _ in seq]
        assert len(tokens) == len(set(tokens)), (disk, seq)
    # No live node ever had to be fenced (no live node held a lease it had lost).
    for n in survivors:
        assert "lease lost" not in (c.root / f"node-{n}.log").read_text()
    # The victim's disks resumed from their checkpoints rather than starting over.
    stats = {k: int(v) for k, v in cycle["stats"].items()}
    assert stats["chunks_read"] < 2 * 12 * DISK_SIZE // (64 << 10)
    _restore_all(c, point, ids)


def test_drained_node_hands_back_its_tasks_and_gets_no_new_ones(three_nodes: Cluster):
    c = three_nodes
    ids = _setup(c, 8)
    watch = LeaseWatch(c.root / "state" / "control.db")
    watch.start()
    try:
        wait_for(lambda: _db_rows(c, "SELECT count(*) FROM tasks WHERE node_id = 'n2' AND "
                                     "state = 'leased' AND bytes_done > 0")[0][0] > 0,
                 interval=0.02, what="progress on n2")
        code, out, err = c.drctl("node", "drain", "n2", "--wait", "-o", "json")
        drained_at = time.monotonic()
        node = json.loads(out)
        assert node["draining"] is True and node["leased_tasks"] == 0
        point = wait_for(lambda: (lambda p: p[0] if p else None)(c.points("p1")),
                         timeout=90, what="the cycle's recovery point")
        # The next cycle: n2 gets nothing at all.
        c.drctl("plan", "run", "p1", "--wait")
    finally:
        watch.stop()

    assert watch.overlaps == []
    assert [cy["state"] for cy in c.cycles("p1")] == ["completed", "completed"]
    tasks = _db_rows(c, "SELECT state, attempts, error_reason FROM tasks")
    assert {t[0] for t in tasks} == {"completed"}, "no task failed"
    assert {t[1] for t in tasks} == {1}, "a handed-back task costs no attempt"
    assert any(t[2] == "node-stopping" for t in tasks), "n2 handed tasks back"
    assert watch.leased_to("n2", after=drained_at) == []
    assert watch.leased_to("n2"), "n2 worked before it was drained"
    [n2] = [n for n in c.drctl_json("node", "list") if n["name"] == "nodes/n2"]
    assert n2["draining"] is True and n2["leased_tasks"] == 0 and n2["state"] == "online"
    _, table, _ = c.drctl("node", "list")
    assert "DRAINING" in table and "LOAD" in table
    _restore_all(c, point, ids)
    node = json.loads(c.drctl("node", "undrain", "n2", "-o", "json")[1])
    assert node["draining"] is False


def test_rpo_report_shows_a_paused_plan_breached(tmp_path):
    with Cluster(tmp_path, metrics=True) as c:
        make_disk(c.src / "vm1.img", MiB, [(0, MiB)])
        c.drctl("site", "add", "src", "--kind", "file", "--path", str(c.src))
        c.drctl("site", "add", "dst", "--kind", "file", "--path", str(c.repo))
        c.drctl("plan", "create", "p1", "--source", "src", "--target", "dst",
                "--workload", "src/vm1", "--rpo", "1s")
        wait_for(lambda: c.points("p1"), what="a first point")
        c.drctl("plan", "pause", "p1")

        def breached():
            report = c.drctl_json("report", "rpo")
            return report if report["plans"][0]["rpo_met"] is False else None
        report = wait_for(breached, timeout=30, what="the RPO to be breached")
        [p] = report["plans"]
        assert p["plan"] == "plans/p1" and p["rpo_seconds"] == "1" and p["paused"] is True
        assert p["state"] == "stopped" and p["last_recovery_point"].startswith("plans/p1/")
        assert p["rpo_lag_seconds"] > 1 and p["recovery_point_age_seconds"] > 1
        assert (report["met_count"], report["breached_count"]) == (0, 1)
        _, table, _ = c.drctl("report", "rpo")
        row = table.splitlines()[1].split()
        assert row[0] == "p1" and "breached" in row and "0/1" in row
        assert "0 met, 1 breached" in table

        def scrape():
            text = urllib.request.urlopen(
                f"http://127.0.0.1:{c.control_metrics_port}/metrics", timeout=5).read()
            m = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                 for line in text.decode().splitlines() if line and not line.startswith("#")}
            return m if m.get('dr_control_recovery_point_age_seconds{plan="p1"}', 0) > 1 \
                else None
        m = wait_for(scrape, what="the RPO gauges")
        assert m['dr_control_rpo_lag_seconds{plan="p1"}'] > 1
        assert m['dr_control_rpo_met{plan="p1"}'] == 0
        assert m["dr_control_scheduler_pass_seconds_count"] > 0
