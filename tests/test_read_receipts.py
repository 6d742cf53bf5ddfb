"""mark_read, and the one messages_read a sender gets when everybody has read a message."""

import asyncio

import pytest


@pytest.fixture
def group_of_three(make_user, connect, create_chat):
    """alice, bob and carol online in one group; alice has sent two messages."""

    async def make():
        alice, bob, carol = await make_user(), await make_user(), await make_user()
        a, b, c = await connect(alice), await connect(bob), await connect(carol)
        chat = await create_chat(a, [bob, carol])
        for sock in (b, c):
            await sock.recv_action("chat_created")
        sent = []
        for text in ("one", "two"):
            sent.append((await a.command({"action": "send_message", "chat_id": chat["id"], "text": text}))["data"])
            for sock in (b, c):
                await sock.recv_action("new_message")
        return chat, sent, (a, b, c)

    return make


async def test_first_reader_no_notification_last_reader_exactly_one(db, http, group_of_three):
    chat, sent, (a, b, c) = await group_of_three()
    ids = [message["id"] for message in sent]
    reply = await b.command({"action": "mark_read", "message_ids": ids})
    assert (reply["action"], reply["message_ids"]) == ("marked_read", ids)
    await a.assert_silent()
    assert await db.fetchval("select bool_or(is_read) from messages where id = any($1)", ids) is False
    reply = await c.command({"action": "mark_read", "message_ids": ids})
    assert reply["message_ids"] == ids
    notice = await a.recv_action("messages_read")
    assert notice["data"] == [{"id": ids[0], "chat_id": chat["id"]}, {"id": ids[1], "chat_id": chat["id"]}]
    await a.assert_silent()
    assert await db.fetchval("select bool_and(is_read) from messages where id = any($1)", ids) is True


async def test_mark_read_is_idempotent_and_reports_only_new_marks(group_of_three):
    chat, sent, (a, b, c) = await group_of_three()
    first, second = sent[0]["id"], sent[1]["id"]
    assert (await b.command({"action": "mark_read", "message_ids": [first]}))["message_ids"] == [first]
    again = await b.command({"action": "mark_read", "message_ids": [first, first, second]})
    assert again["message_ids"] == [second]
    assert (await b.command({"action": "mark_read", "message_ids": [first, second]}))["message_ids"] == []
    await a.assert_silent()


async def test_sender_marking_its_own_message_changes_nothing(db, group_of_three):
    chat, sent, (a, b, c) = await group_of_three()
    ids = [message["id"] for message in sent]
    assert (await a.command({"action": "mark_read", "message_ids": ids}))["message_ids"] == []
    assert await db.fetchval("select count(*) from unread where message_id = any($1)", ids) == 4
    await a.assert_silent()


async def test_ids_outside_the_callers_chats_are_ignored(db, make_user, connect, group_of_three):
    chat, sent, (a, b, c) = await group_of_three()
    outsider = await connect(await make_user())
    ids = [message["id"] for message in sent]
    assert (await outsider.command({"action": "mark_read", "message_ids": [*ids, 2**62]}))["message_ids"] == []
    assert await db.fetchval("select count(*) from unread where message_id = any($1)", ids) == 4


async def test_two_last_readers_at_the_same_instant_make_one_notification(group_of_three):
    for _ in range(5):  # the race is narrow: try it a few times
        chat, sent, (a, b, c) = await group_of_three()
        ids = [message["id"] for message in sent]
        await asyncio.gather(
            b.command({"action": "mark_read", "message_ids": ids}),
            c.command({"action": "mark_read", "message_ids": ids}),
        )
        notice = await a.recv_action("messages_read")
        assert [item["id"] for item in notice["data"]] == ids
        await a.assert_silent(0.2)


async def test_private_chat_read_flips_history_read_status(http, make_user, connect, create_chat):
    alice, bob = await make_user(), await make_user()
    a, b = await connect(alice), await connect(bob)
    chat = await create_chat(a, [bob], kind="private")
    message = (await a.command({"action": "send_message", "chat_id": chat["id"], "text": "read me"}))["data"]
    history = await http.get(f"/history/{chat['id']}", headers=alice.headers)
    assert history.json()["messages"][0]["read_status"] == "unread"
    await b.command({"action": "mark_read", "message_ids": [message["id"]]})
    assert (await a.recv_action("messages_read"))["data"] == [{"id": message["id"], "chat_id": chat["id"]}]
    history = await http.get(f"/history/{chat['id']}", headers=bob.headers)
    assert history.json()["messages"][0]["read_status"] == "read"


@pytest.mark.parametrize(
    "ids",
    [None, [], "1", [1.5], ["x"], [True], [0], [-1], [2**63], list(range(1, 1002)), {"id": 1}],
)
async def test_invalid_mark_read_is_refused(make_user, connect, ids):
    sock = await connect(await make_user())
    frame = {"action": "mark_read"} if ids is None else {"action": "mark_read", "message_ids": ids}
    reply = await sock.command(frame)
    assert reply["action"] == "error" and reply["error"] == "invalid_request", reply
