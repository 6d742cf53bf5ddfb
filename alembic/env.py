"""Alembic environment: runs the migrations over asyncpg, the same driver the app uses."""

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

if context.config.config_file_name and not context.config.attributes.get("keep_logging"):
    fileConfig(context.config.config_file_name, disable_existing_loggers=False)


def _async_url():
    """DATABASE_URL as SQLAlchemy wants it: postgresql+asyncpg://..."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("DATABASE_URL is not set")
    scheme, rest = url.split("://", 1)
    return f"postgresql+asyncpg://{rest}" if scheme in ("postgres", "postgresql") else url


def _run(connection):
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online():
    engine = create_async_engine(_async_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_async_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
