"""Several dr-control replicas on one PostgreSQL database: exactly one runs the scheduler,
and when its process dies another takes over within a tick, with no plan ever having
two active cycles and no recovery point lost or recorded twice."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import urllib.request
from datetime import datetime, timezone

import asyncpg
import pytest

from dr_control.leader import LeaderElection
from tests.helpers.disks import MiB, make_disk, write_at
from tools.localcluster import Cluster, sha256, wait_for

LEASE_SECONDS = 10


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _fetch(url: str, sql: str, *args) -> list[asyncpg.Record]:
    async def go():
        conn = await asyncpg.connect(_dsn(url))
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()
    return asyncio.run(go())


# --- one schema on both backends ---------------------------------------------------------

async def test_migrations_build_the_models_schema_and_go_down_again(metadata_url):
    """The same Alembic revisions on SQLite and PostgreSQL give exactly the tables,
    columns, types and indexes of dr_control/db/models.py, and downgrade cleanly."""
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from dr_control.db.engine import alembic_config, make_engine, migrate
    from dr_control.db.models import Base

    async def diff() -> list:
        engine = make_engine(metadata_url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(lambda c: compare_metadata(
                    MigrationContext.configure(c), Base.metadata))
        finally:
            await engine.dispose()

    await migrate(metadata_url)
    assert await diff() == []
    await asyncio.to_thread(command.downgrade, alembic_config(metadata_url), "base")
    await migrate(metadata_url)
    assert await diff() == []


# --- the election itself ----------------------------------------------------------------

async def test_one_leader_and_a_follower_takes_over_when_its_session_ends(postgres_db):
    a, b = (LeaderElection(postgres_db, lease_seconds=LEASE_SECONDS, check_timeout=5)
            for _ in range(2))
    try:
        assert await a.check() and not await b.check()
        assert await a.check() and not await b.check()  # stays leader; no stacked locks
        # The leader's session ends under it (as when its process dies or an
        # administrator terminates it): it steps down, the follower wins.
        conn = await asyncpg.connect(_dsn(postgres_db))
        try:
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'dr-control-scheduler' AND pid IN ("
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)")
        finally:
            await conn.close()
        assert killed == 1
        assert not await a.check()
        assert await b.check()
        assert not await a.check()
        # A clean stop hands over at the follower's next check.
        await b.close()
        assert await a.check()
    finally:
        await a.close()
        await b.close()


async def test_sqlite_process_is_always_the_leader(tmp_path):
    e = LeaderElection(f"sqlite+aiosqlite:///{tmp_path}/c.db", lease_seconds=30,
                       check_timeout=1)
    assert await e.check()
    await e.close()


# --- two replicas, one node, the leader killed ------------------------------------------

class ActiveCycleWatch(threading.Thread):
    """Polls the database throughout: the most active cycles one plan ever had at once."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.max_active = 0
        self.samples = 0
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._poll())
        except BaseException as e:  # reported by the test, not lost in the thread
            self.error = e

    async def _poll(self) -> None:
        conn = await asyncpg.connect(_dsn(self.url))
        try:
            while not self.halt.is_set():
                n = await conn.fetchval(
                    "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM cycles "
                    "WHERE state IN ('queued', 'running') GROUP BY plan_id) AS t")
                self.max_active, self.samples = max(self.max_active, n), self.samples + 1
                await asyncio.sleep(0.02)
        finally:
            await conn.close()


def _leader_gauge(port: int) -> float | None:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    except OSError:
        return None
    for line in text.decode().splitlines():
        if line.startswith("dr_control_scheduler_leader "):
            return float(line.split()[1])
    return None


def _leaders(c: Cluster) -> list[str]:
    return [name for name, p in c.controls().items()
            if p.poll() is None and _leader_gauge(p.metrics_port) == 1.0]


@pytest.mark.e2e
def test_killed_leader_is_replaced_within_a_lease_and_no_point_is_lost(tmp_path,
                                                                       postgres_db):
    c = Cluster(tmp_path, database_url=postgres_db, metrics=True,
                lease_seconds=LEASE_SECONDS)
    watch = ActiveCycleWatch(postgres_db)
    try:
        a, b = c.start_control(), c.start_control("b")
        watch.start()
        # The node may talk to either replica: gRPC picks the first that answers.
        c.start_node("n1", DR_NODE_CONTROL=f"ipv4:{a.address},{b.address}")
        disk = c.src / "vm1.img"
        make_disk(disk, 16 * MiB, [(0, 4 * MiB), (9 * MiB, 2 * MiB)])
        c.drctl("site", "add", "src", "--kind", "file", "--path", str(c.src))
        c.drctl("site", "add", "dst", "--kind", "file", "--path", str(c.repo))
        c.drctl("plan", "create", "p1", "--source", "src", "--target", "dst",
                "--workload", "src/vm1", "--rpo", "1s")

        [leader] = wait_for(lambda: (lambda ls: ls if len(ls) == 1 else None)(_leaders(c)),
                            timeout=10, what="exactly one scheduler leader")
        survivor = "b" if leader == "" else ""
        assert "scheduler leadership gained" in c.log(c.controls()[leader].log_name)
        wait_for(lambda: len(c.points("p1")) >= 2, timeout=30, what="two points")
        write_at(disk, 1 * MiB + 17, b"changed before the hand-over" * 100)
        expected = sha256(disk)

        c.use_control(survivor)
        c.controls()[leader].send_signal(signal.SIGKILL)
        c.controls()[leader].wait(10)
        killed_at, t0 = datetime.now(timezone.utc), time.monotonic()
        wait_for(lambda: _leaders(c) == [survivor], timeout=LEASE_SECONDS,
                 interval=0.02, what="the survivor to lead")
        takeover = time.monotonic() - t0
        wait_for(lambda: _fetch(postgres_db, "SELECT 1 FROM cycles WHERE create_time > $1",
                                killed_at), timeout=LEASE_SECONDS, interval=0.05,
                 what="a cycle started by the new leader")
        first_cycle = time.monotonic() - t0
        assert first_cycle < LEASE_SECONDS
        # The new leader's cycles complete: wait for a point whose cycle began after the
        # kill (so after the change), through the surviving replica.
        wait_for(lambda: _fetch(postgres_db, """
            SELECT 1 FROM recovery_points p JOIN cycles c ON c.id = p.cycle_id
            WHERE c.create_time > $1""", killed_at), timeout=30, what="a point after the kill")
        print(f"\nleader {leader or 'a'} killed: survivor leads after {takeover:.2f}s, "
              f"its first cycle starts after {first_cycle:.2f}s "
              f"(lease {LEASE_SECONDS}s, tick 0.2s)")
        c.drctl("plan", "pause", "p1")
        wait_for(lambda: not _fetch(postgres_db, "SELECT 1 FROM cycles WHERE state IN "
                                    "('queued', 'running')"), timeout=30,
                 what="the last cycle to end")
        # The newest point restores to the source's bytes (taken after the change).
        newest = c.points("p1")[-1]
        dest = c.out / "restored.img"
        c.drctl("restore", newest["name"], "--to", str(dest))
        assert sha256(dest) == expected
    finally:
        watch.halt.set()
        watch.join(10)
        c.stop()

    assert watch.error is None, watch.error
    assert watch.samples > 50 and watch.max_active == 1, (watch.samples, watch.max_active)
    cycles = _fetch(postgres_db, "SELECT id, seq, state, create_time, end_time, "
                    "recovery_point_id FROM cycles WHERE plan_id = 'p1' ORDER BY seq")
    points = _fetch(postgres_db, "SELECT id, cycle_id, cycle_seq FROM recovery_points "
                    "WHERE plan_id = 'p1' ORDER BY create_time")
    assert [cy["seq"] for cy in cycles] == list(range(1, len(cycles) + 1))
    # One cycle at a time, also by the clock: each starts after the previous one ended.
    for prev, nxt in zip(cycles, cycles[1:]):
        assert prev["end_time"] is not None and nxt["create_time"] >= prev["end_time"]
    # Every completed cycle has exactly one point, and every point one completed cycle.
    completed = {cy["id"]: cy for cy in cycles if cy["state"] == "completed"}
    assert sorted(p["cycle_id"] for p in points) == sorted(completed)
    for p in points:
        assert completed[p["cycle_id"]]["recovery_point_id"] == p["id"]
        assert completed[p["cycle_id"]]["seq"] == p["cycle_seq"]
    assert len(points) >= 3

