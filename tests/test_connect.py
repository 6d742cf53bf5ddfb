"""Connecting to /connect: auth before the upgrade, the unread frame, several sockets per user."""

import asyncio

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
        assert await Socket(ws).recv_action("unread_messages") == {"action": "unread_messages", "data": []}


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
