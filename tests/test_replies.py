"""Replies: send_message's reply_to, against the live server: kept with the message, shown
everywhere a message is, refused (and nothing stored) for a message one cannot reply to."""

import pytest


async def _send(sock, chat, text, **extra):
    reply = await sock.command({"action": "send_message", "chat_id": chat["id"], "text": text, **extra})
    assert reply["action"] == "message_sent", reply
    return reply["data"]


async def test_a_reply_names_its_original_everywhere(db, http, make_user, connect, create_chat):
    alice, bob = await make_user(), await make_user()
    a, b = await connect(alice), await connect(bob)
    chat = await create_chat(a, [bob])
    await b.recv_action("chat_created")
    original = await _send(a, chat, "who has the staging password?")
    assert original["reply_to"] is None
    await b.recv_action("new_message")

    answer = await _send(b, chat, "the vault has it", reply_to=original["id"])
    assert answer["reply_to"] == original["id"]
    assert (await a.recv_action("new_message"))["data"] == answer
    assert await db.fetchval("select reply_to from messages where id = $1", answer["id"]) == original["id"]
    history = (await http.get(f"/history/{chat['id']}", headers=alice.headers)).json()["messages"]
    assert history == [answer, original]
    assert (await connect(alice)).unread == [answer]
    chats = (await http.get("/chats", headers=alice.headers)).json()["chats"]
    assert chats[0]["last_message"] == answer

    # The original deleted later: the reply keeps its id (clients show "deleted message").
    await a.command({"action": "delete_message", "message_id": original["id"]})
    history = (await http.get(f"/history/{chat['id']}", headers=alice.headers)).json()["messages"]
    assert history == [answer]


async def test_a_retried_reply_is_stored_once(db, make_user, connect, create_chat):
    alice, bob = await make_user(), await make_user()
    a = await connect(alice)
    chat = await create_chat(a, [bob])
    original = await _send(a, chat, "first")
    sent = [await _send(a, chat, "again", reply_to=original["id"], client_msg_id="r-1") for _ in range(2)]
    assert sent[0] == sent[1] and sent[0]["reply_to"] == original["id"]
    assert await db.fetchval("select count(*) from messages where reply_to = $1", original["id"]) == 1


@pytest.mark.parametrize(
    ("reply_to", "error"),
    [
        ("OTHER CHAT", "invalid_request"),
        ("DELETED", "invalid_request"),
        (2**62, "invalid_request"),
        (0, "invalid_request"),
        ("seven", "invalid_request"),
        (True, "invalid_request"),
        ([1], "invalid_request"),
    ],
)
async def test_a_reply_to_what_one_cannot_reply_to_is_refused(db, make_user, connect, create_chat, reply_to, error):
    alice, bob = await make_user(), await make_user()
    a = await connect(alice)
    chat, other = await create_chat(a, [bob]), await create_chat(a, [bob], name="other")
    elsewhere = await _send(a, other, "in the other chat")
    deleted = await _send(a, chat, "soon gone")
    await a.command({"action": "delete_message", "message_id": deleted["id"]})
    reply_to = {"OTHER CHAT": elsewhere["id"], "DELETED": deleted["id"]}.get(str(reply_to), reply_to)
    before = await db.fetchval("select count(*) from messages")

    reply = await a.command({"action": "send_message", "chat_id": chat["id"], "text": "re", "reply_to": reply_to})
    assert (reply["action"], reply["error"]) == ("error", error), reply
    assert await db.fetchval("select count(*) from messages") == before
    assert (await _send(a, chat, "the socket goes on"))["reply_to"] is None


async def test_a_non_member_learns_nothing_from_reply_to(make_user, connect, create_chat):
    """Whether the id is a message of that chat or not, someone outside it hears only forbidden."""
    alice, bob, mallory = await make_user(), await make_user(), await make_user()
    a, m = await connect(alice), await connect(mallory)
    chat = await create_chat(a, [bob])
    real = await _send(a, chat, "private")
    for reply_to in (real["id"], 2**62):
        reply = await m.command({"action": "send_message", "chat_id": chat["id"], "text": "x", "reply_to": reply_to})
        assert (reply["action"], reply["error"]) == ("error", "forbidden")
