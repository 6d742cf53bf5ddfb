"""The Alembic schema: it goes down and up cleanly, and the hot queries use indexes."""

import asyncpg
import pytest

from conftest import run_alembic

TABLES = {"users", "chats", "chat_members", "messages", "unread", "events", "processes", "presence", "stream"}


@pytest.fixture
def scratch_url(postgres):
    """An empty database next to the test one, for migrations and plans."""
    url = postgres.create_database("chat_scratch", migrate=False)
    yield url
    postgres.drop_database(url)


async def _tables(url):
    conn = await asyncpg.connect(url)
    rows = await conn.fetch("select tablename from pg_tables where schemaname = 'public'")
    await conn.close()
    return {row["tablename"] for row in rows} - {"alembic_version"}


async def test_migration_goes_down_and_up_again(scratch_url):
    run_alembic(scratch_url, "upgrade", "head")
    assert await _tables(scratch_url) == TABLES
    run_alembic(scratch_url, "downgrade", "base")
    assert await _tables(scratch_url) == set()
    run_alembic(scratch_url, "upgrade", "head")
    assert await _tables(scratch_url) == TABLES


async def test_unread_and_history_are_index_scans(scratch_url):
    import chat  # only for the statements in queries.sql

    run_alembic(scratch_url, "upgrade", "head")
    conn = await asyncpg.connect(scratch_url)
    # 2 users, 50 chats, 100,000 messages, half of them unread for bob.
    await conn.execute("""
        insert into users (id, name, email, password_hash) values
            ('00000000-0000-0000-0000-00000000000a', 'alice', 'a@x.io', 'x'),
            ('00000000-0000-0000-0000-00000000000b', 'bob', 'b@x.io', 'x');
        insert into chats (type, name) select 'group', 'g' || i from generate_series(1, 50) i;
        insert into chat_members (chat_id, user_id) select c.id, u.id from chats c, users u;
        insert into messages (chat_id, sender_id, text)
            select 1 + i % 50, '00000000-0000-0000-0000-00000000000a', 'hi' from generate_series(1, 100000) i;
        insert into unread (user_id, message_id)
            select '00000000-0000-0000-0000-00000000000b', id from messages where id % 2 = 0;
    """)
    bob = "00000000-0000-0000-0000-00000000000b"
    for statistics in ("stale", "fresh"):  # stale: just loaded, not analyzed yet
        if statistics == "fresh":
            await conn.execute("analyze")
        for query, args in [(chat.SQL.list_unread, [bob, 0, 501]), (chat.SQL.list_history, [7, 50, 500])]:
            plan = "\n".join(row[0] for row in await conn.fetch(f"explain {query}", *args))
            assert "Seq Scan" not in plan, f"with {statistics} statistics:\n{plan}"
    await conn.close()
