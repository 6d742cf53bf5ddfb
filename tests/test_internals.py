"""The Sanic and websockets internals chat.py writes frames through, pinned.

chat._open_transport and chat.Client are the only code that reaches past Sanic's and
websockets' public API: they write frames straight to the socket's transport (as Sanic's own
fail_connection does) and read the protocol's state. An upgrade that changes any of this fails
here, with a message that says what to mend, instead of silently in production."""

import orjson
import pytest
import websockets
from sanic.server.websockets.impl import WebsocketImplProtocol
from websockets.protocol import State

REMEDY = "chat._open_transport and chat.Client must be updated for this Sanic/websockets version"


def test_the_socket_internals_chat_writes_through(client, app_loop, new_user):
    import chat

    user = new_user()
    url = f"ws://{client.host}:{client.port}/connect"

    async def probe():
        async with websockets.connect(url, additional_headers=user.headers) as ws:
            assert orjson.loads(await ws.recv())["action"] == "unread_messages"
            (server_side,) = next(c for key, c in chat.app.ctx.sockets.by_user.items() if str(key) == user.uuid)
            socket = server_side.ws
            assert isinstance(socket, WebsocketImplProtocol), f"the socket is a {type(socket)}: {REMEDY}"
            assert hasattr(socket, "io_proto") and hasattr(socket.io_proto, "transport"), (
                f"no io_proto.transport: {REMEDY}"
            )
            assert hasattr(socket, "ws_proto") and socket.ws_proto.state is State.OPEN, f"no ws_proto.state: {REMEDY}"
            transport = chat._open_transport(socket)
            assert transport is socket.io_proto.transport, REMEDY
            assert isinstance(transport.get_write_buffer_size(), int), REMEDY
            assert server_side.unsent() == 0
            server_side.write(chat.wire({"action": "probe", "data": "é"}))
            assert orjson.loads(await ws.recv()) == {"action": "probe", "data": "é"}, f"a frame written raw: {REMEDY}"
            assert callable(getattr(socket, "fail_connection", None)), f"no fail_connection: {REMEDY}"
            server_side.drop(1013, "probe")
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1013, f"fail_connection closed with {ws.close_code}: {REMEDY}"
            assert chat._open_transport(socket) is None, f"a closing socket still looks open: {REMEDY}"

    app_loop.run_until_complete(probe())
