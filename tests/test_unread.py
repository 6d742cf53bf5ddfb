"""The unread frame is bounded (500 messages, 1 MiB) and the rest comes in pages from GET /unread,
which marks nothing read."""

import uuid

import httpx
import orjson
import pytest
import websockets

from conftest import Socket


async def _seed_unread(db, alice, bob, count, text):
    """A private chat from alice to bob with `count` messages unread for bob: its id."""
    chat_id = await db.fetchval("insert into chats (type, name) values ('group', 'flood') returning id")
    await db.execute(
        "insert into chat_members (chat_id, user_id) values ($1, $2), ($1, $3)",
        chat_id,
        uuid.UUID(alice.uuid),
        uuid.UUID(bob.uuid),
    )
    await db.execute(
        """
        with sent as (
            insert into messages (chat_id, sender_id, text)
            select $1, $2, $4 || i from generate_series(1, $5) i returning id
        )
        insert into unread (user_id, message_id) select $3, id from sent
        """,
        chat_id,
        uuid.UUID(alice.uuid),
        uuid.UUID(bob.uuid),
        text,
        count,
    )
    return chat_id


async def _first_frame(server, user):
    """The raw unread frame, as bytes on the wire, and parsed."""
    async with websockets.connect(server.ws_url, additional_headers=user.headers, max_size=2**20) as ws:
        raw = await ws.recv(decode=False)
    return raw, orjson.loads(raw)


async def _pages(http, user, after_id):
    """Every unread message after after_id, page by page: the pages' sizes and the messages."""
    sizes, messages, more = [], [], True
    while more:
        response = await http.get("/unread", params={"after_id": after_id}, headers=user.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(response.content) <= 2**20
        sizes.append(len(body["messages"]))
        messages += body["messages"]
        more = body["more"]
        after_id = messages[-1]["id"] if body["messages"] else after_id
    return sizes, messages


@pytest.mark.parametrize(("count", "text"), [(20_000, "message "), (600, "ж" * 3990)], ids=["20,000 short", "600 long"])
async def test_the_unread_frame_is_bounded_and_the_rest_is_paged(server, http, db, make_user, count, text):
    alice, bob = await make_user(), await make_user()
    await _seed_unread(db, alice, bob, count, text)
    expected = [
        row["message_id"]
        for row in await db.fetch(
            "select message_id from unread where user_id = $1 order by message_id", uuid.UUID(bob.uuid)
        )
    ]
    raw, frame = await _first_frame(server, bob)
    assert frame["more"] is True
    holds = len(frame["data"])
    assert [m["id"] for m in frame["data"]] == expected[:holds], "the frame starts with the oldest"
    # 500 messages, or as many as fit in 1 MiB: one more would not have.
    one_more = len(orjson.dumps(frame["data"][-1]))
    assert len(raw) <= 2**20
    assert holds == 500 or len(raw) + one_more > 2**20 - 100, (holds, len(raw))
    sizes, rest = await _pages(http, bob, frame["data"][-1]["id"])
    assert [m["id"] for m in frame["data"] + rest] == expected, "every unread message, once, oldest first"
    assert max(sizes) <= 500
    assert all(m["read_status"] == "unread" and m["sender_uuid"] == alice.uuid for m in rest)
    # Reading them marked nothing read.
    assert await db.fetchval("select count(*) from unread where user_id = $1", uuid.UUID(bob.uuid)) == count


async def test_a_short_unread_list_says_there_is_no_more(server, make_user, connect, create_chat, http):
    alice, bob = await make_user(), await make_user()
    a = await connect(alice)
    chat = await create_chat(a, [bob])
    sent = (await a.command({"action": "send_message", "chat_id": chat["id"], "text": "hi"}))["data"]
    async with websockets.connect(server.ws_url, additional_headers=bob.headers) as ws:
        frame = await Socket(ws).recv_action("unread_messages")
    assert (frame["data"], frame["more"]) == ([sent], False)
    response = await http.get("/unread", params={"after_id": sent["id"]}, headers=bob.headers)
    assert response.json() == {"messages": [], "more": False}


@pytest.mark.parametrize("after_id", ["-1", "x", "1.5", str(2**63)])
async def test_unread_pages_refuse_a_bad_after_id(http, make_user, after_id):
    user = await make_user()
    response = await http.get("/unread", params={"after_id": after_id}, headers=user.headers)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_unread_pages_need_a_token(server):
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/unread")).status_code == 401
