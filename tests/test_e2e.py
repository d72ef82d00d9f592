"""End-to-end: real dr-control and dr-node processes, drctl, a sparse disk, restores
compared byte for byte with the source as it was when each point was taken."""

from __future__ import annotations

import os
import signal

import pytest

from dr_common.proto.dr.v1 import protection_pb2
from dr_common.repository import FsStore, Repository, chunk_key
from tests.helpers.cluster import setup_plan, wait_points
from tests.helpers.disks import MiB, make_disk, write_at
from tools.localcluster import Cluster, sha256, wait_for

pytestmark = pytest.mark.e2e


def _restore(c: Cluster, point: str, name: str) -> os.PathLike:
    dest = c.out / name
    c.drctl("restore", point, "--to", str(dest))
    return dest


def _stats(cycle: dict) -> dict:
    return {k: int(v) for k, v in cycle["stats"].items()}


def test_three_cycles_restore_each_point_and_send_only_changes(cluster: Cluster):
    c = cluster
    disk = c.src / "vm1.img"
    make_disk(disk, 64 * MiB, [(0, 4 * MiB), (10 * MiB, 3 * MiB), (40 * MiB, 2 * MiB)])
    plan = setup_plan(c)
    expected = [sha256(disk)]
    wait_points(c, plan, 1)

    # Change 1: four chunks, one of them in a former hole.
    for off in (1 * MiB + 100, 11 * MiB, 20 * MiB + 5, 41 * MiB + 4096):
        write_at(disk, off, os.urandom(4096))
    expected.append(sha256(disk))
    c.drctl("plan", "run", plan, "--wait")
    # Change 2: two chunks written (one at the very end), one zeroed, one rewritten as is.
    write_at(disk, 2 * MiB + 7, os.urandom(512))
    write_at(disk, 63 * MiB + 4096, os.urandom(4096))
    write_at(disk, 12 * MiB, bytes(MiB))
    with open(disk, "rb") as f:
        f.seek(10 * MiB)
        same = f.read(MiB)
    write_at(disk, 10 * MiB, same)
    expected.append(sha256(disk))
    c.drctl("plan", "run", plan, "--wait")

    points = wait_points(c, plan, 3)
    cycles = c.cycles(plan)
    assert [cy["state"] for cy in cycles] == ["completed"] * 3
    s1, s2, s3 = (_stats(cy) for cy in cycles)
    # Cycle 1: a full sync reads only the 9 allocated chunks; the 55 holes are never read.
    assert (s1["chunks_read"], s1["chunks_sent"], s1["chunks_zero"]) == (9, 9, 55)
    assert s1["bytes_read"] == 9 * MiB
    # Cycle 2: exactly the four changed chunks are sent; the other data chunks are unchanged.
    assert (s2["chunks_read"], s2["chunks_sent"], s2.get("chunks_unchanged", 0)) == (10, 4, 6)
    # Cycle 3: two changed chunks sent; the zeroed chunk is recorded as zero, not sent.
    assert (s3["chunks_read"], s3["chunks_sent"], s3.get("chunks_unchanged", 0)) == (11, 2, 8)
    assert s3["chunks_zero"] == 54
    assert [d["disks"][0]["full_sync"] for d in points] == [True, False, False]

    for i, point in enumerate(points):
        restored = _restore(c, point["name"], f"rp{i}.raw")
        assert sha256(restored) == expected[i], f"recovery point {i + 1} differs from source"
        st = os.stat(restored)
        assert st.st_size == 64 * MiB
        assert st.st_blocks * 512 < 16 * MiB, "restore must keep holes sparse"


def test_verify_names_corrupt_chunk_and_restore_refuses(cluster: Cluster):
    c = cluster
    disk = c.src / "vm1.img"
    make_disk(disk, 16 * MiB, [(0, 8 * MiB)])
    plan = setup_plan(c)
    point = wait_points(c, plan, 1)[0]
    code, out, _ = c.drctl("point", "verify", point["name"], "-o", "json")
    assert code == 0

    # Flip one byte in the chunk that holds disk offset 3 MiB.
    import asyncio

    async def chunk_path() -> str:
        repo = await Repository.open(FsStore(c.repo))
        manifest = await repo.get_manifest(point["disks"][0]["root_hash"])
        return chunk_key((await repo.segment_ids(manifest, 0))[3])
    path = c.repo / asyncio.run(chunk_path())
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    code, out, _ = c.drctl("point", "verify", point["name"], "-o", "json", check=False)
    assert code == 1
    import json
    op = json.loads(out)
    bad = op["verify_result"]["bad_chunks"]
    assert len(bad) == 1
    assert int(bad[0]["offset"]) == 3 * MiB
    assert bad[0]["disk"] == "sites/src/workloads/vm1/disks/vm1"

    dest = c.out / "bad.raw"
    code, _, err = c.drctl("restore", point["name"], "--to", str(dest), check=False)
    assert code == 1
    assert "corrupt" in err and str(3 * MiB) in err, err
    assert not dest.exists()
    assert list(c.out.iterdir()) == [], "a failed restore must leave no partial file"


def _wait_watermark(c: Cluster, plan: str, minimum: int) -> int:
    def progressed():
        st = c.protection.GetPlanStatus(protection_pb2.GetPlanStatusRequest(name=f"plans/{plan}"))
        disks = st.current_cycle.disks
        return disks and disks[0].watermark_bytes >= minimum and disks[0].watermark_bytes
    return wait_for(progressed, interval=0.01, what="a checkpoint past the first window")


@pytest.fixture
def slow_cluster(tmp_path):
    """Short leases and frequent checkpoints, so a lost node's task resumes quickly."""
    with Cluster(tmp_path, lease_seconds=2, checkpoint_interval=16 * MiB,
                 node_env={"DR_NODE_ENGINE__WINDOW_CHUNKS": "4",
                           "DR_NODE_ENGINE__WORKERS": "1"}) as c:
        yield c


def _cycle_past_first_checkpoint(c: Cluster):
    """A 512 MiB disk whose first cycle has just persisted a checkpoint."""
    disk = c.src / "vm1.img"
    make_disk(disk, 512 * MiB, [(0, 512 * MiB)])
    plan = setup_plan(c)
    _wait_watermark(c, plan, 16 * MiB)
    return disk, plan


def test_node_killed_before_finalization_leaves_no_point(slow_cluster: Cluster):
    c = slow_cluster
    disk, plan = _cycle_past_first_checkpoint(c)
    assert c.kill_node("n1") == -signal.SIGKILL
    assert c.points(plan) == [], "a killed cycle must not leave a recovery point"
    first = c.cycles(plan)[0]
    assert first["state"] in ("queued", "running")

    # Another node takes the task once the lease expires and resumes at the watermark.
    c.start_node("n2")
    point = wait_points(c, plan, 1, timeout=120)[0]
    assert sha256(_restore(c, point["name"], "rp1.raw")) == sha256(disk)
    resumed = _stats(c.cycles(plan)[0])
    assert resumed["chunks_read"] < 512, "the second node must resume, not start over"

    # The next cycle after the failure completes and restores correctly too.
    write_at(disk, 100 * MiB, os.urandom(MiB))
    c.drctl("plan", "run", plan, "--wait")
    point2 = wait_points(c, plan, 2)[1]
    assert sha256(_restore(c, point2["name"], "rp2.raw")) == sha256(disk)
    assert _stats(c.cycles(plan)[1])["chunks_sent"] == 1


def test_sigterm_hands_task_back_without_a_point(slow_cluster: Cluster):
    c = slow_cluster
    disk, plan = _cycle_past_first_checkpoint(c)
    assert c.kill_node("n1", signal.SIGTERM) == 0, "dr-node must exit cleanly on SIGTERM"
    assert c.points(plan) == []
    assert "node-stopping" in c.log("control.log")
    c.start_node("n1")
    point = wait_points(c, plan, 1, timeout=120)[0]
    assert sha256(_restore(c, point["name"], "rp1.raw")) == sha256(disk)


def test_scheduler_meets_rpo_one_cycle_at_a_time(cluster: Cluster):
    c = cluster
    make_disk(c.src / "vm1.img", 4 * MiB, [(0, MiB)])
    plan = setup_plan(c, rpo="1s")
    wait_points(c, plan, 3, timeout=60)
    cycles = c.cycles(plan)
    done = [cy for cy in cycles if cy["state"] == "completed"]
    assert len(done) >= 3
    active = [cy for cy in cycles if cy["state"] in ("queued", "running")]
    assert len(active) <= 1
    # Cycles never overlap: each starts after the previous one ended.
    for a, b in zip(done, done[1:]):
        assert a["end_time"] <= b["create_time"]




def test_control_plane_restart_mid_cycle_loses_nothing(slow_cluster: Cluster):
    c = slow_cluster
    disk, plan = _cycle_past_first_checkpoint(c)
    c.restart_control()
    point = wait_points(c, plan, 1, timeout=120)[0]
    assert sha256(_restore(c, point["name"], "rp1.raw")) == sha256(disk)
    # One cycle, one point: the restart neither duplicated nor dropped work.
    assert [cy["state"] for cy in c.cycles(plan)] == ["completed"]
    assert len(c.points(plan)) == 1


def test_both_daemons_serve_prometheus_metrics(tmp_path):
    import urllib.request
    with Cluster(tmp_path, metrics=True) as c:
        node = c.nodes["n1"]
        make_disk(c.src / "vm1.img", 8 * MiB, [(0, 3 * MiB)])
        plan = setup_plan(c)
        wait_points(c, plan, 1)

        def scrape(port: int) -> dict[str, float]:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
            return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                    for line in text.decode().splitlines() if line and not line.startswith("#")}
        n = scrape(node.metrics_port)
        assert n['dr_node_bytes_total{stage="read"}'] == 3 * MiB
        assert n['dr_node_chunks_total{outcome="zero"}'] == 5
        ctl = wait_for(lambda: (lambda m: m if 'dr_plan_rpo_lag_seconds{plan="p1"}' in m else None)(
            scrape(c.control_metrics_port)), what="the RPO lag gauge")
        assert ctl['dr_plan_rpo_seconds{plan="p1"}'] == 3600
        assert ctl['dr_cycles_total{state="completed"}'] == 1


def _chunk_files(repo_dir) -> set[str]:
    return {str(p.relative_to(repo_dir)) for p in (repo_dir / "chunks").rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")}


def _referenced_chunks(repo_dir) -> set[str]:
    """Chunk keys the repository's points reference, read by the test itself."""
    import asyncio

    from dr_common.repository import ZERO_ID

    async def walk() -> set[str]:
        repo = await Repository.open(FsStore(repo_dir))
        keys = set()
        for pid in await repo.list_recovery_points():
            for d in (await repo.get_recovery_point(pid)).disks:
                m = await repo.get_manifest(d.root_hash)
                for s in range(len(m.segments)):
                    keys |= {chunk_key(cid) for cid in await repo.segment_ids(m, s)
                             if cid != ZERO_ID}
        return keys
    return asyncio.run(walk())


def test_retention_locks_deletion_and_gc_during_a_cycle(tmp_path):
    c = Cluster(tmp_path)
    c.control_env["DR_CONTROL_SCHEDULER__GC_GRACE_SECONDS"] = "2"
    c.control_env["DR_CONTROL_SCHEDULER__GC_INTERVAL_SECONDS"] = "3600"
    with c:
        disk = c.src / "vm1.img"
        make_disk(disk, 64 * MiB, [(0, 8 * MiB)])
        with open(disk, "rb") as f:
            first_chunk = f.read(MiB)
        plan = setup_plan(c, "vm1", "1h", "--keep-last", "2")
        names = [wait_points(c, plan, 1)[0]["name"]]
        c.drctl("point", "lock", names[0])
        for _ in range(3):  # chunk 0 differs in every point
            write_at(disk, 10, os.urandom(4096))
            c.drctl("plan", "run", plan, "--wait")
            names.append(c.points(plan)[-1]["name"])
        p1, p2, p3, p4 = names
        ids = [n.rsplit("/", 1)[1] for n in names]

        # keep_last 2 keeps p3 and p4; p1 is locked; p2 goes, from the API and the target.
        wait_for(lambda: [p["name"] for p in c.points(plan)] == [p1, p3, p4],
                 what="retention to delete the second point")
        assert sorted(p.name for p in (c.repo / "points").iterdir()) == sorted(
            f"{i}.json" for i in (ids[0], ids[2], ids[3]))
        code, _, err = c.drctl("point", "delete", p4, check=False)
        assert code != 0 and "newest" in err
        code, _, err = c.drctl("point", "delete", p1, check=False)
        assert code != 0 and "locked" in err

        # GC removes exactly the chunks no remaining point references (p2's chunk 0).
        garbage = _chunk_files(c.repo) - _referenced_chunks(c.repo)
        assert len(garbage) == 1
        import time
        time.sleep(2.5)  # past the grace period
        op = c.drctl_json("repository", "gc", plan)
        assert op["state"] == "completed", op
        assert int(op["gc_result"]["objects_removed"]) == 3  # chunk, segment, manifest
        assert _chunk_files(c.repo) == _referenced_chunks(c.repo)
        for name in (p1, p3, p4):
            c.drctl("point", "verify", name)

        # p1's chunk 0 becomes garbage; a cycle then writes that very content again
        # (dedup against garbage) plus new data, while GC runs.
        c.drctl("point", "unlock", p1)
        c.drctl("point", "delete", p1)
        wait_for(lambda: [p["name"] for p in c.points(plan)] == [p3, p4],
                 what="the unlocked point to be deleted")
        time.sleep(2.5)
        write_at(disk, 0, first_chunk)
        write_at(disk, 16 * MiB, os.urandom(40 * MiB))
        expected = sha256(disk)
        c.drctl("plan", "run", plan)
        gc_op = c.drctl_json("repository", "gc", plan, "--grace", "30s")
        assert gc_op["state"] == "completed", gc_op
        wait_for(lambda: c.cycles(plan)[-1]["state"] == "completed", timeout=60,
                 what="the cycle run during GC")
        p5 = c.points(plan)[-1]["name"]
        assert sha256(_restore(c, p5, "rp5.raw")) == expected
        # Retention dropped p3 after p5; a GC without grace must still leave p5 whole.
        c.drctl("repository", "gc", plan, "--grace", "0")
        c.drctl("point", "verify", p5)
        assert sha256(_restore(c, p5, "rp5-after-gc.raw")) == expected
