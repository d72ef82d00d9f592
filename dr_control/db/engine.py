"""Database engine set-up and schema migration at start-up.

SQLite (the embedded default) runs in WAL mode so readers (API calls) never wait for
the scheduler's writes, with a busy timeout instead of immediate "database is locked"
errors. PostgreSQL (`postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DB`, for several
control replicas sharing one database) gets a bounded connection pool that checks a
connection before use (a replica outlives database restarts and fail-overs) and sessions
in UTC.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL is durable across process crashes
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


# Per replica: API calls and nodes' long polls share these; the scheduler's leader lock
# holds one more, outside the pool (dr_control/leader.py).
PG_POOL = {"pool_size": 10, "max_overflow": 20, "pool_timeout": 30,
           # Connections older than this are replaced (server-side idle limits, proxies).
           "pool_recycle": 1800, "pool_pre_ping": True}


def is_postgres(url: str) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


def pg_connect_args(**settings: str) -> dict:
    # timestamptz comes back aware in any zone; UTC keeps logs and SQL sessions alike.
    return {"server_settings": {"timezone": "UTC", "application_name": "dr-control",
                                **settings}}


def make_engine(url: str) -> AsyncEngine:
    if is_postgres(url):
        return create_async_engine(url, connect_args=pg_connect_args(), **PG_POOL)
    engine = create_async_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


async def migrate(url: str) -> None:
    """Brings the schema to the newest revision (Alembic runs its own event loop)."""
    await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
