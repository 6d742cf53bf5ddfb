"""Connecting to /connect: auth before the upgrade, the unread frame, several sockets per user."""

import asyncio
import uuid

import pytest
import websockets

from conftest import Socket


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Basic abc"}],
    ids=["missing", "garbage", "other-scheme"],
)
async def test_handshake_without_a_valid_token_is_401(server, headers):
    with pytest.raises(websockets.InvalidStatus) as caught:
        await websockets.connect(server.ws_url, additional_headers=headers)
    assert caught.value.response.status_code == 401


async def test_token_as_query_parameter_like_a_browser(server, make_user):
    user = await make_user()
    async with websockets.connect(f"{server.ws_url}?access_token={user.token}") as ws:
        frame = await Socket(ws).recv_action("unread_messages")
        assert {key: frame[key] for key in ("data", "more", "resumed")} == {"data": [], "more": False, "resumed": False}


async def test_first_frame_is_unread_messages_oldest_first(make_user, connect, create_chat):
    alice, bob = await make_user(), await make_user()
    a = await connect(alice)
    chat = await create_chat(a, [bob])
    sent = [(await a.command({"action": "send_message", "chat_id": chat["id"], "text": t}))["data"] for t in "xyz"]
    b = await connect(bob)
    assert b.unread == sent
    assert [m["read_status"] for m in b.unread] == ["unread"] * 3
    # The sender's own messages are never unread for the sender.
    assert (await connect(alice)).unread == []


async def test_every_socket_of_a_user_gets_pushes_and_closing_one_keeps_the_other(make_user, connect, create_chat):
    alice, bob = await make_user(), await make_user()
    a = await connect(alice)
    b1, b2 = await connect(bob), await connect(bob)
    chat = await create_chat(a, [bob])
    assert (await b1.recv_action("chat_created"))["chat"] == chat
    assert (await b2.recv_action("chat_created"))["chat"] == chat
    await a.command({"action": "send_message", "chat_id": chat["id"], "text": "to both tabs"})
    assert (await b1.recv_action("new_message"))["data"]["text"] == "to both tabs"
    assert (await b2.recv_action("new_message"))["data"]["text"] == "to both tabs"
    await b1.close()
    await a.command({"action": "send_message", "chat_id": chat["id"], "text": "one tab left"})
    assert (await b2.recv_action("new_message"))["data"]["text"] == "one tab left"


async def test_a_vanished_client_does_not_disturb_the_others(server, make_user, connect, create_chat):
    alice, bob = await make_user(), await make_user()
    a, b = await connect(alice), await connect(bob)
    chat = await create_chat(a, [bob])
    await b.recv_action("chat_created")
    gone = await connect(bob)
    gone.ws.transport.abort()  # no close frame: the server sees the TCP connection drop
    await asyncio.sleep(0.2)
    for text in ("after", "the drop"):
        await a.command({"action": "send_message", "chat_id": chat["id"], "text": text})
        assert (await b.recv_action("new_message"))["data"]["text"] == text


async def test_a_message_committed_while_its_recipient_connects_arrives_exactly_once(
    server, db, make_user, connect, create_chat
):
    """Alice sends without a pause while bob connects, again and again. Bob's socket is
    registered before his unread list is read, and the pushes that list already carries are
    dropped: each message reaches that socket exactly once, in unread or pushed."""
    alice, bob = await make_user(), await make_user()
    pump, marker_tab = await connect(alice), await connect(alice)
    chat = await create_chat(pump, [bob], kind="private")
    # 400 older unread messages make bob's unread read take a while (the window to hit), and
    # leave room in the frame (500 at most) for messages committed meanwhile.
    await db.execute(
        """
        with old as (
            insert into messages (chat_id, sender_id, text)
            select $1, $2, 'old ' || i from generate_series(1, 400) i returning id
        )
        insert into unread (user_id, message_id) select $3, id from old
        """,
        chat["id"],
        uuid.UUID(alice.uuid),
        uuid.UUID(bob.uuid),
    )
    old_max = await db.fetchval("select max(id) from messages where chat_id = $1", chat["id"])
    acked, stop = [0], asyncio.Event()
    read_before = set()  # live messages taken out of bob's unread between his connects

    async def keep_sending():
        n = 0
        while not stop.is_set():
            reply = await pump.command({"action": "send_message", "chat_id": chat["id"], "text": f"live {n}"})
            acked.append(reply["data"]["id"])
            n += 1

    sender = asyncio.create_task(keep_sending())
    in_the_window = 0
    try:
        for _ in range(20):
            # What bob was told last time is no longer unread: only the 400 old ones are.
            rows = await db.fetch(
                "delete from unread where user_id = $1 and message_id > $2 returning message_id",
                uuid.UUID(bob.uuid),
                old_max,
            )
            read_before |= {row["message_id"] for row in rows}
            before = acked[-1]
            bob_socket = Socket(await websockets.connect(server.ws_url, additional_headers=bob.headers, max_size=None))
            frame = await bob_socket.recv_action("unread_messages", timeout=10)
            assert not frame["more"]
            told = [m["id"] for m in frame["data"]]
            in_the_window += acked[-1] - before  # sent while bob was connecting (roughly: ids are shared)
            marker = await marker_tab.command({"action": "send_message", "chat_id": chat["id"], "text": "marker"})
            while told[-1] != marker["data"]["id"]:
                told.append((await bob_socket.recv_action("new_message"))["data"]["id"])
            await bob_socket.close()
            ids = await db.fetch("select id from messages where chat_id = $1 and id <= $2", chat["id"], told[-1])
            assert len(told) == len(set(told)), "a message reached the socket twice"
            expected = sorted(row["id"] for row in ids if row["id"] not in read_before)
            assert sorted(told) == expected, "a message never reached the socket"
    finally:
        stop.set()
        await sender
    assert in_the_window >= 20, f"only {in_the_window} messages were sent while bob connected: the race was not run"
