"""Alembic environment: runs migrations over the async engine (SQLite or PostgreSQL)."""

import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from dr_control.db.engine import _sqlite_pragmas
from dr_control.db.models import Base

target_metadata = Base.metadata


def _run(connection) -> None:
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
