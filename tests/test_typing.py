"""Typing indicators against live servers: every other member hears it, on any process, at
most once per user and chat every 2 s; nobody else does, the typist's own sockets included;
and nothing is written to the database."""

import asyncio
import time

import pytest

from conftest import JWT_SECRET, LIMITS, open_socket, running_server

TYPING = "typing"
# Every row a chat keeps but presence, which sockets of other tests may write at any moment.
ROWS = """
    select (select count(*) from events where frame is null or frame ->> 'action' <> 'presence')
         + (select count(*) from messages) + (select count(*) from unread) + (select count(*) from chats)
"""


async def _typing_frames(sock, seconds=0.4):
    """The typing frames that arrive within `seconds`."""
    frames = []
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            frame = await sock.recv(left)
            if frame["action"] == TYPING:
                frames.append(frame)
    except TimeoutError:
        pass
    return frames


async def test_typing_reaches_the_other_members_on_every_process(two_servers, make_user, db, create_chat):
    one, two = two_servers
    alice, bob, carol, dave = [await make_user() for _ in range(4)]
    a1 = await open_socket(one.ws_url, alice.headers)
    a2 = await open_socket(two.ws_url, alice.headers)  # the typist's other tab
    b1 = await open_socket(one.ws_url, bob.headers)
    c2 = await open_socket(two.ws_url, carol.headers)
    d1 = await open_socket(one.ws_url, dave.headers)  # in no chat with them
    chat = await create_chat(a1, [bob, carol], kind="group", name="typing")
    for sock in (a2, b1, c2):
        await sock.recv_action("chat_created")
    rows = await db.fetchval(ROWS)

    started = time.monotonic()
    await a1.send({"action": TYPING, "chat_id": chat["id"], "request_id": "t1"})
    expected = {"action": TYPING, "chat_id": chat["id"], "user_uuid": alice.uuid}
    for sock in (b1, c2):  # same process, other process
        assert await sock.recv_action(TYPING) == expected
    assert time.monotonic() - started < 1  # "within 100 ms" is measured by make_bench, not here
    for sock in (a1, a2, d1):  # no reply, not the typist's tabs, not a stranger
        await sock.assert_silent(0.3)
    await asyncio.sleep(0.2)
    assert await db.fetchval(ROWS) == rows
    for sock in (a1, a2, b1, c2, d1):
        await sock.close()


async def test_typing_is_forwarded_once_every_two_seconds(make_user, connect, create_chat):
    alice, bob = await make_user(), await make_user()
    a, b = await connect(alice), await connect(bob)
    chat = await create_chat(a, [bob], kind="private")
    await b.recv_action("chat_created")
    for _ in range(5):  # a client typing fast, and one that ignores the advice
        await a.send({"action": TYPING, "chat_id": chat["id"]})
    assert len(await _typing_frames(b, 1.5)) == 1
    await asyncio.sleep(0.6)  # 2.1 s after the first: the next one goes through
    await a.send({"action": TYPING, "chat_id": chat["id"]})
    assert len(await _typing_frames(b, 0.5)) == 1
    await a.assert_silent(0.2)


@pytest.mark.parametrize(
    ("chat_id", "error"),
    [("OTHERS", "forbidden"), (2**31 - 1, "not_found"), ("x", "invalid_request"), (None, "invalid_request")],
)
async def test_typing_where_one_may_not_is_refused(make_user, connect, create_chat, chat_id, error):
    alice, bob, carol = await make_user(), await make_user(), await make_user()
    a, c = await connect(alice), await connect(carol)
    chat = await create_chat(a, [bob], kind="private")
    chat_id = chat["id"] if chat_id == "OTHERS" else chat_id
    for _ in range(2):  # refused every time, not only once per two seconds
        reply = await c.command({"action": TYPING, "chat_id": chat_id})
        assert (reply["action"], reply["error"]) == ("error", error)
    await a.assert_silent(0.3)


async def test_someone_removed_hears_no_more_typing(make_user, connect, create_chat):
    alice, bob, carol = await make_user(), await make_user(), await make_user()
    a, b, c = await connect(alice), await connect(bob), await connect(carol)
    chat = await create_chat(a, [bob, carol], kind="group", name="g")
    await a.command({"action": "remove_member", "chat_id": chat["id"], "user_id": carol.uuid})
    await a.send({"action": TYPING, "chat_id": chat["id"]})
    assert [f["user_uuid"] for f in await _typing_frames(b)] == [alice.uuid]
    assert await _typing_frames(c) == []


async def test_typing_spends_none_of_the_command_limit(database_url, tmp_path, make_user):
    """A person types for a long while: the typing frames cost none of the commands they may send."""
    env = {"DATABASE_URL": database_url, "JWT_SECRET": JWT_SECRET, **LIMITS, "RATE_BURST": "3", "RATE_PER_SEC": "0.1"}
    with running_server(tmp_path / "server.log", **env) as limited:
        alice, bob = await make_user(), await make_user()
        a = await open_socket(limited.ws_url, alice.headers)
        reply = await a.command({"action": "create_chat", "type": "private", "user_ids": [bob.uuid]})
        for _ in range(50):
            await a.send({"action": TYPING, "chat_id": reply["chat"]["id"]})
        for n in range(2):  # the two commands left of the burst of 3
            sent = await a.command({"action": "send_message", "chat_id": reply["chat"]["id"], "text": f"m{n}"})
            assert sent["action"] == "message_sent", sent
        await a.close()
