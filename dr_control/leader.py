"""Which dr-control replica runs the scheduler: one leader among replicas sharing a
PostgreSQL database, elected with a session-level advisory lock.

The leader holds `pg_try_advisory_lock(LOCK_KEY)` on a connection of its own (outside
the pool, so nothing else ever runs on it or returns it). Followers try the lock every
scheduler tick. PostgreSQL releases a session lock when the session ends, so when the
leader's process dies its connection closes and a follower wins within a tick. When the
leader's host vanishes instead (no FIN), TCP keepalives on the server side end the
session within about a third of a lease period, and the old leader, which cannot reach
the database either, steps down at its next check. For the short overlap that remains,
the database itself refuses a second active cycle of a plan (migration 0007).

SQLite is a single process's database: that process is always the leader.
"""

from __future__ import annotations

import asyncio

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from dr_control import metrics
from dr_control.db.engine import is_postgres, pg_connect_args

log = structlog.get_logger()

# Any constant shared by all replicas ("dr_sched"); not the migrations' key.
LOCK_KEY = 0x64725F7363686564
# A bigint advisory key shows in pg_locks as classid (high half), objid (low half),
# objsubid 1.
_HOLDS_LOCK = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                   "AND pid = pg_backend_pid() AND granted AND objsubid = 1 "
                   "AND classid = CAST(:hi AS oid) AND objid = CAST(:lo AS oid)")
_KEY_PARTS = {"hi": LOCK_KEY >> 32, "lo": LOCK_KEY & 0xFFFFFFFF}


class LeaderElection:
    """`await check()` once per tick: True while this replica may schedule."""

    def __init__(self, url: str, *, lease_seconds: float, check_timeout: float):
        self.url = url
        self.postgres = is_postgres(url)
        self.lease_seconds = lease_seconds
        self.check_timeout = check_timeout
        self.leader = not self.postgres
        self._engine: AsyncEngine | None = None
        self._conn: AsyncConnection | None = None
        metrics.SCHEDULER_LEADER.set(1 if self.leader else 0)

    async def check(self) -> bool:
        if not self.postgres:
            return True
        try:
            held = await asyncio.wait_for(self._check(), self.check_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # database unreachable: whoever can reach it leads
            first_line = (str(e) or type(e).__name__).splitlines()[0]
            log.warning("scheduler leader check failed", error=first_line)
            await self._drop_connection()
            held = False
        self._set(held)
        return held

    async def _check(self) -> bool:
        if self._conn is None:
            self._conn = await self._connect()
        if self.leader:
            # Still ours? (An administrator may have ended the session or unlocked it.)
            return bool(await self._conn.scalar(_HOLDS_LOCK, _KEY_PARTS))
        # Never re-taken while held: session locks stack, and one unlock must free it.
        return bool(await self._conn.scalar(text("SELECT pg_try_advisory_lock(:k)"),
                                            {"k": LOCK_KEY}))

    async def _connect(self) -> AsyncConnection:
        if self._engine is None:
            # Keepalives end a vanished leader's session (and so free the lock) well
            # within a lease period; a third of it to idle, then three probes.
            idle = max(1, int(self.lease_seconds / 3))
            probe = max(1, int(self.lease_seconds / 9))
            self._engine = create_async_engine(
                self.url, poolclass=NullPool, isolation_level="AUTOCOMMIT",
                connect_args=pg_connect_args(
                    application_name="dr-control-scheduler",
                    tcp_keepalives_idle=str(idle), tcp_keepalives_interval=str(probe),
                    tcp_keepalives_count="3"))
        return await self._engine.connect()

    def _set(self, leader: bool) -> None:
        if leader != self.leader:
            if leader:
                log.info("scheduler leadership gained")
            else:
                log.warning("scheduler leadership lost")
        self.leader = leader
        metrics.SCHEDULER_LEADER.set(1 if leader else 0)

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.invalidate()  # never back to a pool: its session holds the lock
            except Exception:  # already broken; its session ends with it
                pass

    async def close(self) -> None:
        """Gives leadership up now (a clean stop), so a follower takes over at its next
        tick instead of after a broken connection is noticed."""
        if self._conn is not None and self.leader:
            try:
                await asyncio.wait_for(self._conn.execute(
                    text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY}), 5)
            except Exception:  # closing the session below frees it as well
                pass
        if self._conn is not None:
            try:
                await self._conn.close()
            except Exception:
                await self._drop_connection()
            self._conn = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
        if self.postgres and self.leader:
            log.info("scheduler leadership released")
        self.leader = not self.postgres
        metrics.SCHEDULER_LEADER.set(1 if self.leader else 0)
