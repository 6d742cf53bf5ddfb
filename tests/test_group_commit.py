"""Group commit: sends that arrive together are stored by one INSERT, and every sender is
answered, even when delivering a stored batch fails. Drives chat.MessageWriter in this process
on the session's real PostgreSQL."""

import asyncio
import logging

import asyncpg
import pytest


@pytest.fixture
async def chat_of_two(db):
    """A sender and a reader in one chat, straight in the database."""
    users = await db.fetch(
        "insert into users (name, email, password_hash) "
        "select 'gc', md5(random()::text) || '@example.com', 'x' from generate_series(1, 2) returning id"
    )
    chat_id = await db.fetchval("insert into chats (type, name) values ('group', 'gc') returning id")
    await db.execute(
        "insert into chat_members (chat_id, user_id) select $1, unnest($2::uuid[])", chat_id, [u["id"] for u in users]
    )
    return chat_id, users[0]["id"], {u["id"] for u in users}


async def test_every_sender_is_answered_even_when_delivering_a_batch_fails(database_url, db, chat_of_two, caplog):
    import chat

    chat_id, sender, members = chat_of_two
    delivered = []

    def deliver(events):
        delivered.append(events)
        if len(delivered) == 1:
            raise RuntimeError("the first batch cannot be delivered")

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        writer = chat.MessageWriter(pool, deliver)
        with caplog.at_level(logging.ERROR):
            first = await asyncio.wait_for(
                asyncio.gather(*(writer.write(chat_id, sender, f"a{n}", None, None) for n in range(5))), 5
            )
            second = await asyncio.wait_for(
                asyncio.gather(*(writer.write(chat_id, sender, f"b{n}", None, None) for n in range(5))), 5
            )
    finally:
        await pool.close()

    assert [row["text"] for row in first + second] == [f"a{n}" for n in range(5)] + [f"b{n}" for n in range(5)]
    stored = await db.fetch("select id, text from messages where chat_id = $1 order by id", chat_id)
    assert [(row["id"], row["text"]) for row in stored] == [(row["id"], row["text"]) for row in first + second]
    assert len(delivered) == 2, "each batch is one INSERT and one delivery"
    assert [(set(user_ids), frame["data"]["text"]) for _, user_ids, frame in delivered[1]] == [
        (members, f"b{n}") for n in range(5)
    ]
    assert "delivering a batch of new messages failed" in caplog.text


async def test_a_send_that_cannot_be_stored_fails_alone(database_url, db, chat_of_two):
    """An INSERT that fails (here: text PostgreSQL refuses) fails its batch's senders; the next batch goes through."""
    import chat

    chat_id, sender, _ = chat_of_two
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        writer = chat.MessageWriter(pool, lambda events: None)
        bad = asyncio.gather(
            *(writer.write(chat_id, sender, text, None, None) for text in ("fine", "nul\x00")), return_exceptions=True
        )
        results = await asyncio.wait_for(bad, 5)
        good = await asyncio.wait_for(writer.write(chat_id, sender, "after", None, None), 5)
    finally:
        await pool.close()
    assert all(isinstance(result, asyncpg.PostgresError) for result in results), results
    assert good["text"] == "after"
    assert [row["text"] for row in await db.fetch("select text from messages where chat_id = $1", chat_id)] == ["after"]


@pytest.mark.parametrize("plan", ["force_custom_plan", "force_generic_plan"])
async def test_a_batch_is_numbered_in_the_order_it_was_sent(database_url, db, chat_of_two, plan):
    """Ids follow the order of the sends whatever plan PostgreSQL picks (a generic plan may
    join through a hash table, which hands rows back in another order)."""
    import chat

    chat_id, sender, _ = chat_of_two
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1, server_settings={"plan_cache_mode": plan})
    try:
        writer = chat.MessageWriter(pool, lambda events: None)
        rows = await asyncio.wait_for(
            asyncio.gather(*(writer.write(chat_id, sender, f"m{n}", None, None) for n in range(20))), 5
        )
    finally:
        await pool.close()
    assert [row["text"] for row in sorted(rows, key=lambda row: row["id"])] == [f"m{n}" for n in range(20)]
