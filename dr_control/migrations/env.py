"""Alembic environment: runs migrations over the async engine (SQLite or PostgreSQL)."""

import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from dr_control.db.engine import _sqlite_pragmas
from dr_control.db.models import Base

target_metadata = Base.metadata


# Any constant; dr_control/leader.py uses another.
MIGRATION_LOCK_KEY = 0x64725F6D69677261  # "dr_migra"


def _run(connection) -> None:
    if connection.dialect.name == "postgresql":
        # Replicas starting together: the first migrates, the others wait here and then
        # find the schema at head (held until the migration's transaction ends).
        from sqlalchemy import text
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                           {"k": MIGRATION_LOCK_KEY})
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    engine = create_async_engine(context.config.get_main_option("sqlalchemy.url"))
    if engine.dialect.name == "sqlite":
        from sqlalchemy import event
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    async with engine.connect() as conn:
        await conn.run_sync(_run)
        await conn.commit()
    await engine.dispose()


asyncio.run(_main())
