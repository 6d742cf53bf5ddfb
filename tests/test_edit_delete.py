"""Editing and deleting messages, against the live server: who may, who is told, and read
receipts that stay exact."""

import asyncio

import pytest


async def _pair(make_user, connect, create_chat, kind="private"):
    """Alice and Bob connected, in a chat of theirs (Bob has seen chat_created)."""
    alice, bob = await make_user(), await make_user()
    a, b = await connect(alice), await connect(bob)
    chat = await create_chat(a, [bob], kind=kind)
    await b.recv_action("chat_created")
    return alice, bob, a, b, chat


async def _send(sock, chat, text):
    reply = await sock.command({"action": "send_message", "chat_id": chat["id"], "text": text})
    assert reply["action"] == "message_sent", reply
    return reply["data"]


async def test_an_edit_reaches_everyone_and_changes_no_read_state(db, make_user, connect, create_chat):
    alice, bob, a, b, chat = await _pair(make_user, connect, create_chat)
    a2 = await connect(alice)  # alice's other tab
    sent = await _send(a, chat, "helo")
    assert (await b.recv_action("new_message"))["data"] == sent
    await a2.recv_action("new_message")

    reply = await a.command({"action": "edit_message", "message_id": sent["id"], "text": "hello"})
    assert reply["action"] == "message_edited"
    edited = reply["data"]
    assert {**edited, "text": "helo", "edited_at": None} == sent, "only the text and edited_at change"
    assert edited["text"] == "hello" and edited["edited_at"] > sent["timestamp"]
    assert (await b.recv_action("message_edited"))["data"] == edited
    assert (await a2.recv_action("message_edited"))["data"] == edited
    await a.assert_silent()  # the editing socket got its reply, not the push as well

    # Still unread for bob, with its new text; and no messages_read for anyone.
    assert (await connect(bob)).unread == [edited]
    await b.command({"action": "mark_read", "message_ids": [sent["id"]]})
    assert (await a.recv_action("messages_read"))["data"] == [{"id": sent["id"], "chat_id": chat["id"]}]
    # A read message stays read when edited, and tells nobody it was read again.
    again = await a.command({"action": "edit_message", "message_id": sent["id"], "text": "hello!"})
    assert again["data"]["read_status"] == "read"
    await b.recv_action("message_edited")
    await a.assert_silent()
    assert await db.fetchval("select count(*) from unread where message_id = $1", sent["id"]) == 0


@pytest.mark.parametrize(
    ("who", "target", "error"),
    [
        ("bob", "alice's", "forbidden"),  # someone else's message in your chat
        ("carol", "alice's", "not_found"),  # a chat you are not in: the id reveals nothing
        ("alice", "unknown", "not_found"),
    ],
)
@pytest.mark.parametrize("action", ["edit_message", "delete_message"])
async def test_only_the_sender_may_change_a_message(db, make_user, connect, create_chat, who, target, error, action):
    alice, bob, a, b, chat = await _pair(make_user, connect, create_chat)
    carol = await connect(await make_user())
    sent = await _send(a, chat, "mine")
    sock = {"alice": a, "bob": b, "carol": carol}[who]
    message_id = sent["id"] if target == "alice's" else 2**62
    reply = await sock.command({"action": action, "message_id": message_id, "text": "changed"})
    assert (reply["action"], reply["error"]) == ("error", error), reply
    row = await db.fetchrow("select text, deleted_at from messages where id = $1", sent["id"])
    assert (row["text"], row["deleted_at"]) == ("mine", None)


@pytest.mark.parametrize(
    "frame",
    [
        {"message_id": "x", "text": "t"},
        {"message_id": 0, "text": "t"},
        {"text": "t"},
        {"message_id": "MINE", "text": ""},
        {"message_id": "MINE", "text": "   "},
        {"message_id": "MINE", "text": "x" * 4001},
        {"message_id": "MINE", "text": "nul\x00"},
        {"message_id": "MINE"},
    ],
)
async def test_an_invalid_edit_is_refused_and_changes_nothing(db, make_user, connect, create_chat, frame):
    _, _, a, _, chat = await _pair(make_user, connect, create_chat)
    sent = await _send(a, chat, "as sent")
    if frame.get("message_id") == "MINE":
        frame = {**frame, "message_id": sent["id"]}
    reply = await a.command({"action": "edit_message", **frame})
    assert (reply["action"], reply["error"]) == ("error", "invalid_request"), reply
    assert await db.fetchval("select text from messages where id = $1", sent["id"]) == "as sent"


async def test_a_deleted_message_is_gone_everywhere(db, http, make_user, connect, create_chat):
    alice, bob, a, b, chat = await _pair(make_user, connect, create_chat)
    kept = await _send(a, chat, "stays")
    gone = await _send(a, chat, "the staging password is hunter2")
    await a.command({"action": "edit_message", "message_id": gone["id"], "text": "the password is hunter3"})
    for _ in range(2):
        await b.recv_action("new_message")
    await b.recv_action("message_edited")

    reply = await a.command({"action": "delete_message", "message_id": gone["id"]})
    assert (reply["action"], reply["data"]) == ("message_deleted", {"id": gone["id"], "chat_id": chat["id"]})
    assert (await b.recv_action("message_deleted"))["data"] == reply["data"]

    assert [m["id"] for m in (await connect(bob)).unread] == [kept["id"]]
    history = (await http.get(f"/history/{chat['id']}", headers=bob.headers)).json()["messages"]
    assert [m["id"] for m in history] == [kept["id"]]
    (listed,) = [c for c in (await http.get("/chats", headers=bob.headers)).json()["chats"] if c["id"] == chat["id"]]
    assert (listed["unread"], listed["last_message"]["id"]) == (1, kept["id"])
    assert (await b.command({"action": "mark_read", "message_ids": [gone["id"]]}))["message_ids"] == []
    for action in ("edit_message", "delete_message"):
        reply = await a.command({"action": action, "message_id": gone["id"], "text": "again"})
        assert reply["error"] == "not_found"
    # Its words are not in the database any more: not in the message, not in any event.
    assert await db.fetchval("select text from messages where id = $1", gone["id"]) == ""
    assert await db.fetchval("select count(*) from events where frame::text like '%hunter%'") == 0
    await a.assert_silent()  # and never a messages_read for it


async def test_a_group_owner_may_delete_anyones_message_and_others_may_not(make_user, connect, create_chat):
    alice, bob, a, b, chat = await _pair(make_user, connect, create_chat, kind="group")
    assert chat["owner"] == alice.uuid
    carol = await make_user()
    mine = await _send(b, chat, "bob's")
    await a.recv_action("new_message")
    private = await create_chat(b, [carol], kind="private")
    assert private["owner"] is None
    not_owner = await b.command({"action": "delete_message", "message_id": (await _send(a, chat, "alice's"))["id"]})
    assert not_owner["error"] == "forbidden"
    reply = await a.command({"action": "delete_message", "message_id": mine["id"]})
    assert reply["action"] == "message_deleted"
    assert (await b.recv_action("message_deleted"))["data"]["id"] == mine["id"]


async def test_a_delete_racing_the_last_read_tells_the_sender_at_most_once(db, make_user, connect, create_chat):
    """Bob marks read while alice deletes, again and again: no error, no deadlock, and alice
    hears messages_read for a message only if it was read before it was deleted."""
    alice, bob, a, b, chat = await _pair(make_user, connect, create_chat)
    told = []
    for n in range(20):
        sent = await _send(a, chat, f"race {n}")
        await b.recv_action("new_message")
        delete = a.command({"action": "delete_message", "message_id": sent["id"]})
        read = b.command({"action": "mark_read", "message_ids": [sent["id"]]})
        deleted, marked = await asyncio.gather(delete, read)
        assert deleted["action"] == "message_deleted" and marked["action"] == "marked_read", (deleted, marked)
        await b.recv_action("message_deleted")
        try:
            while True:
                frame = await a.recv(timeout=0.2)
                assert frame["action"] == "messages_read", frame
                told += [m["id"] for m in frame["data"]]
        except TimeoutError:
            pass
        if sent["id"] in told:
            assert marked["message_ids"] == [sent["id"]], "told it was read, though bob's read missed it"
    assert len(told) == len(set(told)), "a messages_read came twice"
    rows = await db.fetch("select is_read, deleted_at from messages where chat_id = $1", chat["id"])
    assert all(row["deleted_at"] for row in rows) and len(rows) == 20
    left = "select count(*) from unread u join messages m on m.id = u.message_id where m.chat_id = $1"
    assert await db.fetchval(left, chat["id"]) == 0, "a deleted message stayed unread"


async def test_an_edit_racing_the_last_read_changes_no_receipt(db, http, make_user, connect, create_chat):
    """Bob marks read while alice edits, again and again: each message is told read once, keeps
    its new text, and nothing is left unread."""
    alice, bob, a, b, chat = await _pair(make_user, connect, create_chat)
    for n in range(20):
        sent = (await a.command({"action": "send_message", "chat_id": chat["id"], "text": f"race {n}"}))["data"]
        await b.recv_action("new_message")
        edit = a.command({"action": "edit_message", "message_id": sent["id"], "text": f"edited {n}"})
        read = b.command({"action": "mark_read", "message_ids": [sent["id"]]})
        edited, marked = await asyncio.gather(edit, read)
        assert edited["action"] == "message_edited" and marked["message_ids"] == [sent["id"]], (edited, marked)
        assert (await b.recv_action("message_edited"))["data"]["text"] == f"edited {n}"
        assert (await a.recv_action("messages_read"))["data"] == [{"id": sent["id"], "chat_id": chat["id"]}]
        await a.assert_silent(0.2)  # once
    history = (await http.get(f"/history/{chat['id']}", headers=alice.headers)).json()["messages"]
    assert [(m["text"], m["read_status"]) for m in history] == [(f"edited {n}", "read") for n in reversed(range(20))]
    assert await db.fetchval("select count(*) from unread where user_id = $1", bob.uuid) == 0


async def test_a_delete_finds_the_edits_to_forget_by_an_index(db):
    """forget_message_events matches the partial index's expression, so a delete reads the edit
    events of its own message, not every event kept (a sequential scan: 4 ms at 22,000 events)."""
    import chat

    async with db.transaction():
        await db.execute("set local enable_seqscan = off")  # whatever this table's size, can the index serve?
        plan = "\n".join(row[0] for row in await db.fetch(f"explain {chat.SQL.forget_message_events}", 1))
    assert "events_edited_message" in plan, plan
