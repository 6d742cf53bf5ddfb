"""send_message: stored first, then delivered to every member's sockets and nobody else's."""

import asyncio
import uuid
from datetime import datetime, timedelta

import pytest


async def test_message_is_stored_then_delivered_to_members_only(db, make_user, connect, create_chat):
    alice, bob, outsider = await make_user(), await make_user(), await make_user()
    a, a2, b, o = await connect(alice), await connect(alice), await connect(bob), await connect(outsider)
    chat = await create_chat(a, [bob])
    await a2.recv_action("chat_created")
    await b.recv_action("chat_created")
    reply = await a.command({"action": "send_message", "chat_id": chat["id"], "text": "hello bob"})
    assert reply["action"] == "message_sent"
    message = reply["data"]
    assert set(message) == {"id", "chat_id", "sender_uuid", "text", "timestamp", "read_status", "edited_at", "reply_to"}
    assert message["edited_at"] is None
    assert message["chat_id"] == chat["id"] and message["sender_uuid"] == alice.uuid
    assert message["text"] == "hello bob" and message["read_status"] == "unread"
    sent_at = datetime.fromisoformat(message["timestamp"])
    assert sent_at.utcoffset() == timedelta(0)
    assert abs(datetime.now(sent_at.tzinfo) - sent_at) < timedelta(seconds=30)
    for sock in (b, a2):  # the recipient, and the sender's other tab
        assert (await sock.recv_action("new_message"))["data"] == message
    await o.assert_silent()
    await a.assert_silent()  # the sending socket had its reply
    row = await db.fetchrow("select * from messages where id = $1", message["id"])
    assert (row["chat_id"], str(row["sender_id"]), row["text"], row["is_read"]) == (
        chat["id"],
        alice.uuid,
        "hello bob",
        False,
    )


async def test_the_sending_socket_gets_replies_and_never_its_own_pushes(make_user, connect, create_chat):
    alice, bob = await make_user(), await make_user()
    a, a2, b = await connect(alice), await connect(alice), await connect(bob)
    chat = await create_chat(a, [bob])
    for sock in (a2, b):
        assert (await sock.recv_action("chat_created"))["chat"] == chat
    await a.assert_silent(0.1)  # the creator's socket got chat_created once: as its reply
    for n in range(20):  # one after another, without waiting for the replies
        await a.send({"action": "send_message", "chat_id": chat["id"], "text": f"m{n}", "request_id": n})
    replies = [await a.recv() for _ in range(20)]
    assert [(r["action"], r["request_id"]) for r in replies] == [("message_sent", n) for n in range(20)]
    for sock in (a2, b):
        assert [(await sock.recv_action("new_message"))["data"] for _ in range(20)] == [r["data"] for r in replies]
    await a.assert_silent()


async def test_each_message_gets_its_own_timestamp_and_identical_text_is_two_messages(make_user, connect, create_chat):
    alice, bob = await make_user(), await make_user()
    a = await connect(alice)
    chat = await create_chat(a, [bob])
    first = (await a.command({"action": "send_message", "chat_id": chat["id"], "text": "same"}))["data"]
    await asyncio.sleep(0.05)
    second = (await a.command({"action": "send_message", "chat_id": str(chat["id"]), "text": "same"}))["data"]
    assert second["id"] > first["id"]
    assert second["timestamp"] > first["timestamp"]


async def test_offline_recipient_gets_it_in_unread_until_marked_read(make_user, connect, create_chat):
    alice, bob = await make_user(), await make_user()
    a = await connect(alice)
    chat = await create_chat(a, [bob])
    message = (await a.command({"action": "send_message", "chat_id": chat["id"], "text": "while away"}))["data"]
    b = await connect(bob)
    assert b.unread == [message]
    assert (await connect(bob)).unread == [message]  # still unread: nothing was marked
    await b.command({"action": "mark_read", "message_ids": [message["id"]]})
    assert (await connect(bob)).unread == []


@pytest.mark.parametrize(
    "frame",
    [
        {"text": "no chat id"},
        {"chat_id": "seven", "text": "x"},
        {"chat_id": 1.5, "text": "x"},
        {"chat_id": True, "text": "x"},
        {"chat_id": None, "text": "x"},
        {"chat_id": "CHAT"},
        {"chat_id": "CHAT", "text": ""},
        {"chat_id": "CHAT", "text": " \n\t "},
        {"chat_id": "CHAT", "text": 5},
        {"chat_id": "CHAT", "text": "x" * 4001},
        {"chat_id": "CHAT", "text": "nul\x00"},
    ],
)
async def test_invalid_send_is_refused_and_stores_nothing(db, make_user, connect, create_chat, frame):
    alice, bob = await make_user(), await make_user()
    a = await connect(alice)
    chat = await create_chat(a, [bob])
    frame = {key: chat["id"] if value == "CHAT" else value for key, value in frame.items()}
    reply = await a.command({"action": "send_message", **frame})
    assert reply["action"] == "error" and reply["error"] == "invalid_request", reply
    assert await db.fetchval("select count(*) from messages where chat_id = $1", chat["id"]) == 0


async def test_4000_characters_is_the_limit(make_user, connect, create_chat):
    alice, bob = await make_user(), await make_user()
    a = await connect(alice)
    chat = await create_chat(a, [bob])
    text = "😀" * 4000  # characters, not bytes
    reply = await a.command({"action": "send_message", "chat_id": chat["id"], "text": text})
    assert reply["data"]["text"] == text


async def test_non_member_cannot_send_and_nobody_hears_of_it(db, make_user, connect, create_chat):
    alice, bob, mallory = await make_user(), await make_user(), await make_user()
    a, b, m = await connect(alice), await connect(bob), await connect(mallory)
    chat = await create_chat(a, [bob])
    await b.recv_action("chat_created")
    reply = await m.command({"action": "send_message", "chat_id": chat["id"], "text": "let me in"})
    assert reply["error"] == "forbidden"
    reply = await m.command({"action": "send_message", "chat_id": 2**31 - 1, "text": "anyone?"})
    assert reply["error"] == "not_found"
    await a.assert_silent()
    await b.assert_silent()
    assert await db.fetchval("select count(*) from messages where sender_id = $1", uuid.UUID(mallory.uuid)) == 0


async def test_50_concurrent_sends_are_all_stored_and_delivered(db, make_user, connect, create_chat):
    alice, bob = await make_user(), await make_user()
    a, b = await connect(alice), await connect(bob)
    chat = await create_chat(a, [bob])
    await b.recv_action("chat_created")
    senders = [await connect(alice) for _ in range(5)]
    await asyncio.gather(*(s.send({"action": "send_message", "chat_id": chat["id"], "text": f"{n}:{i}"})
                           for n, s in enumerate(senders) for i in range(10)))  # fmt: skip
    delivered = [(await b.recv_action("new_message"))["data"] for _ in range(50)]
    stored = await db.fetch("select id, text from messages where chat_id = $1 order by id", chat["id"])
    assert sorted((m["id"], m["text"]) for m in delivered) == [tuple(row) for row in stored]
    assert len(stored) == 50
    # Commands on one socket run in order, so each sender's messages keep their order.
    for n in range(5):
        mine = [m for m in delivered if m["text"].startswith(f"{n}:")]
        assert [m["text"] for m in mine] == [f"{n}:{i}" for i in range(10)]
        assert [m["id"] for m in mine] == sorted(m["id"] for m in mine)
    await b.assert_silent()


async def test_each_chat_reaches_its_members_in_the_order_it_was_stored(make_user, connect, create_chat):
    """Two chats are stored side by side (one writer each, by chat id), yet within a chat every
    member gets the messages in id order, the order they were stored in."""
    alice, bob, carol = await make_user(), await make_user(), await make_user()
    a, c = await connect(alice), await connect(carol)
    chats = [await create_chat(a, [bob, carol]), await create_chat(a, [bob, carol])]
    while chats[0]["id"] % 2 == chats[1]["id"] % 2:  # one chat for each writer
        chats[1] = await create_chat(a, [bob, carol])
    while (await c.recv_action("chat_created"))["chat"]["id"] != chats[1]["id"]:
        pass
    senders = [await connect(user) for user in (alice, alice, alice, bob, bob)]
    await asyncio.gather(*(s.send({"action": "send_message", "chat_id": chat["id"], "text": f"{n}:{i}"})
                           for n, s in enumerate(senders) for i in range(10) for chat in chats))  # fmt: skip
    received = [(await c.recv_action("new_message"))["data"] for _ in range(100)]
    for chat in chats:
        ids = [m["id"] for m in received if m["chat_id"] == chat["id"]]
        assert len(ids) == 50
        assert ids == sorted(ids)
    await c.assert_silent()


async def test_a_retried_client_msg_id_returns_the_original_and_stores_once(db, make_user, connect, create_chat):
    alice, bob = await make_user(), await make_user()
    a, b = await connect(alice), await connect(bob)
    chat = await create_chat(a, [bob])
    await b.recv_action("chat_created")
    frame = {"action": "send_message", "chat_id": chat["id"], "text": "once", "client_msg_id": "tab1-0001"}
    first = (await a.command(frame))["data"]
    retry = (await a.command({**frame, "text": "a retry with other text"}))["data"]
    assert retry == first
    assert (await b.recv_action("new_message"))["data"] == first
    await b.assert_silent()
    rows = await db.fetch("select text from messages where sender_id = $1", uuid.UUID(alice.uuid))
    assert [row["text"] for row in rows] == ["once"]
    # The id is the sender's own: another sender may use the same one.
    theirs = (await b.command({**frame, "text": "bob's"}))["data"]
    assert theirs["id"] != first["id"]


@pytest.mark.parametrize("client_msg_id", ["", "x" * 65, 42, "nul\x00"])
async def test_invalid_client_msg_id_is_refused(make_user, connect, create_chat, client_msg_id):
    alice, bob = await make_user(), await make_user()
    a = await connect(alice)
    chat = await create_chat(a, [bob])
    frame = {"action": "send_message", "chat_id": chat["id"], "text": "x", "client_msg_id": client_msg_id}
    assert (await a.command(frame))["error"] == "invalid_request"


@pytest.mark.parametrize(
    "text",
    [
        "'); drop table messages; --",
        "$1 $2 %s {0} \\x00 \\\\",
        "\u202eright-to-left override\u202c and \u200f mark",
        "emoji 👩‍👩‍👧‍👦 and flags 🇺🇦🇯🇵",
        "e\u0301 combining, ﬁ ligature, \ufeff bom",
        "line\r\nbreaks\tand\u2028separators",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 " * 100,
        "<img src=x onerror=alert(1)>",
    ],
)
async def test_edge_text_is_stored_and_returned_exactly(db, http, make_user, connect, create_chat, text):
    alice, bob = await make_user(), await make_user()
    a = await connect(alice)
    chat = await create_chat(a, [bob])
    sent = (await a.command({"action": "send_message", "chat_id": chat["id"], "text": text}))["data"]
    assert sent["text"] == text
    assert await db.fetchval("select text from messages where id = $1", sent["id"]) == text
    history = await http.get(f"/history/{chat['id']}", headers=bob.headers)
    assert history.json()["messages"][0]["text"] == text
    assert (await connect(bob)).unread[0]["text"] == text
