"""The Sanic and websockets internals chat.py writes frames through, pinned.

chat._open_transport and chat.Client are the only code that reaches past Sanic's and
websockets' public API: they write frames straight to the socket's transport (as Sanic's own
fail_connection does), read the protocol's state, and take over reading from the socket (to
bound what a flood can make the server hold). An upgrade that changes any of this fails here,
with a message that says what to mend, instead of silently in production."""

import asyncio

import orjson
import pytest
import websockets
from sanic.server.websockets.impl import WebsocketImplProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State

REMEDY = "chat._open_transport and chat.Client must be updated for this Sanic/websockets version"


def test_the_socket_internals_chat_writes_through(client, app_loop, new_user):
    import chat

    user = new_user()
    url = f"ws://{client.host}:{client.port}/connect"

    async def probe():
        async with websockets.connect(url, additional_headers=user.headers) as ws:
            server_side = await _registered(chat, user)
            socket = server_side.ws
            assert isinstance(socket, WebsocketImplProtocol), f"the socket is a {type(socket)}: {REMEDY}"
            assert hasattr(socket, "io_proto") and hasattr(socket.io_proto, "transport"), (
                f"no io_proto.transport: {REMEDY}"
            )
            assert hasattr(socket, "ws_proto") and hasattr(socket.ws_proto, "state"), f"no ws_proto.state: {REMEDY}"
            assert callable(getattr(socket, "fail_connection", None)), f"no fail_connection: {REMEDY}"
            assert orjson.loads(await ws.recv())["action"] == "unread_messages", f"the unread frame: {REMEDY}"
            assert socket.ws_proto.state is State.OPEN, f"an open socket's state is {socket.ws_proto.state}: {REMEDY}"
            transport = chat._open_transport(socket)
            assert transport is socket.io_proto.transport, REMEDY
            assert isinstance(transport.get_write_buffer_size(), int), REMEDY
            assert server_side.unsent() == 0
            server_side.write(chat.wire({"action": "probe", "data": "é"}))
            assert orjson.loads(await ws.recv()) == {"action": "probe", "data": "é"}, f"a frame written raw: {REMEDY}"
            server_side.drop(1013, "probe")
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1013, f"fail_connection closed with {ws.close_code}: {REMEDY}"
            assert chat._open_transport(socket) is None, f"a closing socket still looks open: {REMEDY}"

    app_loop.run_until_complete(probe())


async def _registered(chat, user):
    """The server's Client for this user's socket, once its handler has registered it."""
    async with asyncio.timeout(5):
        while True:
            for key, clients in chat.app.ctx.sockets.by_user.items():
                if str(key) == user.uuid:
                    return next(iter(clients))
            await asyncio.sleep(0.01)


def test_reading_pauses_while_frames_wait_and_resumes_once_they_are_handled(client, app_loop, new_user):
    """Sanic's protocol hands every chunk read to the socket's data_received; chat.Client puts
    its own in place, which pauses the transport above INBOX_FRAMES waiting frames."""
    import chat

    user = new_user()
    url = f"ws://{client.host}:{client.port}/connect"
    frame = Frame(Opcode.TEXT, b'{"action": "mark_read", "message_ids": [1]}').serialize(mask=True)

    async def probe():
        async with websockets.connect(url, additional_headers=user.headers) as ws:
            server_side = await _registered(chat, user)
            socket = server_side.ws
            assert orjson.loads(await ws.recv())["action"] == "unread_messages"
            assert socket.io_proto.websocket is socket, f"the protocol no longer calls the socket: {REMEDY}"
            assert socket.data_received == server_side.data_received, REMEDY
            assert socket.can_pause is False and callable(getattr(socket, "async_data_received", None)), REMEDY
            transport = socket.io_proto.transport
            assert transport.is_reading()
            # As if 3 chunks of 7 frames arrived before the handler could take one.
            for _ in range(3):
                socket.io_proto.data_received(frame * 7)
            assert server_side.inbox == 21 and server_side.paused and not transport.is_reading(), REMEDY
            replies = [orjson.loads(await ws.recv()) for _ in range(21)]
            assert {reply["action"] for reply in replies} == {"marked_read"}
            await asyncio.sleep(0.05)
            assert server_side.inbox == 0 and not server_side.paused and transport.is_reading(), REMEDY
            assert not server_side.handing_over

    app_loop.run_until_complete(probe())
