"""Group membership against the live server: add, remove, leave, rename; who is told; read
receipts that stay exact when people come and go."""

import asyncio

import pytest


async def _group(make_user, connect, create_chat, n=3):
    """n people connected, the first owning a group of all of them (all have seen chat_created)."""
    users = [await make_user() for _ in range(n)]
    socks = [await connect(user) for user in users]
    chat = await create_chat(socks[0], users[1:], kind="group", name="team")
    for sock in socks[1:]:
        await sock.recv_action("chat_created")
    return users, socks, chat


async def test_a_member_adds_people_who_then_see_the_history_but_nothing_unread(http, make_user, connect, create_chat):
    (alice, bob), (a, b), chat = await _group(make_user, connect, create_chat, n=2)
    sent = (await a.command({"action": "send_message", "chat_id": chat["id"], "text": "before you came"}))["data"]
    await b.recv_action("new_message")
    dave = await make_user()
    d = await connect(dave)
    reply = await b.command({"action": "add_members", "chat_id": chat["id"], "user_ids": [dave.uuid, alice.uuid]})
    assert reply["action"] == "chat_updated"
    members = reply["chat"]["members"]  # longest first: alice and bob (together, by uuid), then dave
    assert sorted(members[:2]) == sorted([alice.uuid, bob.uuid]) and members[2] == dave.uuid
    assert reply["chat"]["owner"] == alice.uuid
    for sock in (a, d):
        assert (await sock.recv_action("chat_updated"))["chat"] == reply["chat"]
    assert (await connect(dave)).unread == []
    history = (await http.get(f"/history/{chat['id']}", headers=dave.headers)).json()["messages"]
    assert [m["id"] for m in history] == [sent["id"]]
    # From now on dave is told, and the first message is not his to read.
    await a.command({"action": "send_message", "chat_id": chat["id"], "text": "welcome"})
    assert (await d.recv_action("new_message"))["data"]["text"] == "welcome"


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ({"action": "add_members", "user_ids": ["UNKNOWN"]}, "not_found"),
        ({"action": "add_members", "user_ids": "x"}, "invalid_request"),
        ({"action": "add_members", "user_ids": []}, "invalid_request"),
        ({"action": "remove_member", "user_id": "SELF"}, "invalid_request"),
        ({"action": "remove_member", "user_id": "OUTSIDER"}, "not_found"),
        ({"action": "remove_member", "user_id": "x"}, "invalid_request"),
        ({"action": "rename_chat", "name": "  "}, "invalid_request"),
        ({"action": "rename_chat", "name": "bidi\u202e"}, "invalid_request"),
    ],
)
async def test_invalid_membership_changes_change_nothing(db, make_user, connect, create_chat, frame, error):
    (alice, bob), (a, _), chat = await _group(make_user, connect, create_chat, n=2)
    outsider = await make_user()
    names = {"SELF": alice.uuid, "OUTSIDER": outsider.uuid, "UNKNOWN": "00000000-0000-0000-0000-000000000001"}
    frame = {key: names.get(value, value) if isinstance(value, str) else value for key, value in frame.items()}
    if isinstance(frame.get("user_ids"), list):
        frame["user_ids"] = [names.get(value, value) for value in frame["user_ids"]]
    reply = await a.command({**frame, "chat_id": chat["id"]})
    assert (reply["action"], reply["error"]) == ("error", error), reply
    assert await db.fetchval("select count(*) from chat_members where chat_id = $1", chat["id"]) == 2
    assert await db.fetchval("select name from chats where id = $1", chat["id"]) == "team"


@pytest.mark.parametrize("action", ["remove_member", "rename_chat"])
async def test_only_the_owner_removes_and_renames(make_user, connect, create_chat, action):
    (alice, bob, carol), (a, b, c), chat = await _group(make_user, connect, create_chat)
    reply = await b.command({"action": action, "chat_id": chat["id"], "user_id": carol.uuid, "name": "mine"})
    assert reply["error"] == "forbidden"


@pytest.mark.parametrize("action", ["add_members", "leave_chat", "rename_chat"])
async def test_a_private_chats_members_never_change(make_user, connect, create_chat, action):
    alice, bob = await make_user(), await make_user()
    a = await connect(alice)
    chat = await create_chat(a, [bob], kind="private")
    reply = await a.command({"action": action, "chat_id": chat["id"], "user_ids": [], "name": "x"})
    assert (reply["action"], reply["error"]) == ("error", "invalid_request")


async def test_someone_removed_is_told_and_then_sees_nothing_of_the_chat(db, http, make_user, connect, create_chat):
    (alice, bob, carol), (a, b, c), chat = await _group(make_user, connect, create_chat)
    before = (await a.command({"action": "send_message", "chat_id": chat["id"], "text": "before"}))["data"]
    await b.recv_action("new_message")
    await c.recv_action("new_message")  # and left unread
    reply = await a.command({"action": "remove_member", "chat_id": chat["id"], "user_id": carol.uuid})
    assert reply["action"] == "chat_updated" and sorted(reply["chat"]["members"]) == sorted([alice.uuid, bob.uuid])
    assert (await b.recv_action("chat_updated"))["chat"] == reply["chat"]
    assert (await c.recv_action("chat_removed"))["chat_id"] == chat["id"]
    await a.command({"action": "edit_message", "message_id": before["id"], "text": "edited, not for carol"})
    await a.command({"action": "send_message", "chat_id": chat["id"], "text": "not for carol"})
    await b.recv_action("message_edited")
    await b.recv_action("new_message")
    await c.assert_silent()
    assert await db.fetchval("select count(*) from unread where user_id = $1", carol.uuid) == 0
    refused = await c.command({"action": "send_message", "chat_id": chat["id"], "text": "still here?"})
    assert refused["error"] == "forbidden"
    assert (await http.get(f"/history/{chat['id']}", headers=carol.headers)).status_code == 403
    assert (await connect(carol)).unread == []


async def test_the_owner_leaving_hands_the_group_to_the_longest_member(make_user, connect, create_chat):
    (alice, bob, carol), (a, b, c), chat = await _group(make_user, connect, create_chat)
    reply = await a.command({"action": "leave_chat", "chat_id": chat["id"]})
    assert {key: reply[key] for key in ("action", "chat_id")} == {"action": "chat_removed", "chat_id": chat["id"]}
    updated = (await b.recv_action("chat_updated"))["chat"]
    assert sorted(updated["members"]) == sorted([bob.uuid, carol.uuid]) and updated["owner"] == updated["members"][0]
    assert (await c.recv_action("chat_updated"))["chat"] == updated
    renamed = await (b if updated["owner"] == bob.uuid else c).command(
        {"action": "rename_chat", "chat_id": chat["id"], "name": " Launch "}
    )
    assert renamed["chat"]["name"] == "Launch"


async def test_the_last_reader_leaving_completes_the_read(db, http, make_user, connect, create_chat):
    (alice, bob, carol), (a, b, c), chat = await _group(make_user, connect, create_chat)
    sent = (await a.command({"action": "send_message", "chat_id": chat["id"], "text": "read me"}))["data"]
    await b.recv_action("new_message")
    await c.recv_action("new_message")
    await b.command({"action": "mark_read", "message_ids": [sent["id"]]})
    await a.assert_silent()  # carol has not read it
    await c.command({"action": "leave_chat", "chat_id": chat["id"]})
    await a.recv_action("chat_updated")
    receipt = await a.recv_action("messages_read")
    assert receipt["data"] == [{"id": sent["id"], "chat_id": chat["id"]}]
    await a.assert_silent()  # once
    history = (await http.get(f"/history/{chat['id']}", headers=alice.headers)).json()["messages"]
    assert history[0]["read_status"] == "read"


async def test_the_last_member_leaving_leaves_a_group_nobody_sees(db, http, make_user, connect, create_chat):
    (alice, bob), (a, b), chat = await _group(make_user, connect, create_chat, n=2)
    await a.command({"action": "send_message", "chat_id": chat["id"], "text": "anyone?"})
    for sock in (b, a):
        assert (await sock.command({"action": "leave_chat", "chat_id": chat["id"]}))["action"] == "chat_removed"
    for user in (alice, bob):
        listed = (await http.get("/chats", headers=user.headers)).json()["chats"]
        assert chat["id"] not in [c["id"] for c in listed]
        assert (await http.get(f"/history/{chat['id']}", headers=user.headers)).status_code == 403
    row = await db.fetchrow(
        "select owner_id, (select count(*) from chat_members where chat_id = $1) n from chats c where id = $1",
        chat["id"],
    )
    assert (row["owner_id"], row["n"]) == (None, 0)
    assert (await a.command({"action": "add_members", "chat_id": chat["id"], "user_ids": [alice.uuid]}))[
        "error"
    ] == "forbidden", "nobody can get back into it"


async def test_the_owner_removing_someone_while_leaving_leaves_nothing_unread(db, make_user, connect, create_chat):
    """The owner removes carol from one tab and leaves from another at once: either order is
    fine, but bob's message, unread by both, is told read exactly when nobody is left to read it."""
    for _ in range(10):
        (alice, bob, carol), (a, b, c), chat = await _group(make_user, connect, create_chat)
        a2 = await connect(alice)
        sent = (await b.command({"action": "send_message", "chat_id": chat["id"], "text": "unread by both"}))["data"]
        for sock in (a, a2, c):
            await sock.recv_action("new_message")
        remove = a.command({"action": "remove_member", "chat_id": chat["id"], "user_id": carol.uuid})
        leave = a2.command({"action": "leave_chat", "chat_id": chat["id"]})
        removed, left = await asyncio.gather(remove, leave)
        assert left["action"] == "chat_removed", left
        assert removed["action"] == "chat_updated" or removed.get("error") == "forbidden", removed
        members = await db.fetchval("select array_agg(user_id) from chat_members where chat_id = $1", chat["id"])
        told = [frame async for frame in _frames(b)]
        receipts = [frame["data"] for frame in told if frame["action"] == "messages_read"]
        if removed["action"] == "chat_updated":  # both went: nobody is left to read it
            assert sorted(map(str, members)) == [bob.uuid]
            assert receipts == [[{"id": sent["id"], "chat_id": chat["id"]}]], told
        else:  # alice left first, and could remove nobody
            assert sorted(map(str, members)) == sorted([bob.uuid, carol.uuid])
            assert receipts == [], told
        owner = await db.fetchval("select owner_id from chats where id = $1", chat["id"])
        assert str(owner) == bob.uuid or (removed.get("error") and str(owner) in (bob.uuid, carol.uuid))
        unread = await db.fetchval("select count(*) from unread where message_id = $1", sent["id"])
        assert unread == (0 if removed["action"] == "chat_updated" else 1)


async def test_someone_re_added_has_nothing_unread_from_the_time_away(make_user, connect, create_chat):
    (alice, bob, carol), (a, b, c), chat = await _group(make_user, connect, create_chat)
    await a.command({"action": "remove_member", "chat_id": chat["id"], "user_id": carol.uuid})
    await a.command({"action": "send_message", "chat_id": chat["id"], "text": "while carol was away"})
    await a.command({"action": "add_members", "chat_id": chat["id"], "user_ids": [carol.uuid]})
    assert (await connect(carol)).unread == []


async def test_the_owner_removing_a_member_who_leaves_at_once_tells_each_once(make_user, connect, create_chat):
    """remove_member and leave_chat of the same person at the same moment, again and again: one
    of them wins, nobody gets an error they should not, and each is told once."""
    for _ in range(10):
        (alice, bob, carol), (a, b, c), chat = await _group(make_user, connect, create_chat)
        remove = a.command({"action": "remove_member", "chat_id": chat["id"], "user_id": carol.uuid})
        leave = c.command({"action": "leave_chat", "chat_id": chat["id"]})
        removed, left = await asyncio.gather(remove, leave)
        assert left["action"] == "chat_removed" or left.get("error") == "forbidden", left
        assert removed["action"] == "chat_updated" or removed.get("error") == "not_found", removed
        assert (removed["action"] == "chat_updated") != (left["action"] == "chat_removed"), (removed, left)
        updates = [frame async for frame in _frames(b)]
        assert [f["action"] for f in updates] == ["chat_updated"], updates
        assert sorted(updates[0]["chat"]["members"]) == sorted([alice.uuid, bob.uuid])
        extra = [frame async for frame in _frames(c)]
        # The leaver got its reply; if the owner won, carol's chat_removed push is the only news.
        assert [f["action"] for f in extra] in ([], ["chat_removed"]), extra


async def _frames(sock, seconds=0.3):
    """Every non-presence frame that arrives within `seconds`."""
    try:
        while True:
            yield await sock.recv(timeout=seconds)
    except TimeoutError:
        return
