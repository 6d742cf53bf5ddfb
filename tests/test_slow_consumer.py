"""A reader that stops reading never holds up the others; once too far behind it is dropped
with 1013 and catches up from unread_messages."""

import socket
from urllib.parse import urlsplit

import httpx
import websockets

from conftest import Socket


async def _stalled_socket(ws_url, headers):
    """A socket with a small receive buffer that soon stops reading altogether."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # no autotuning to megabytes
    url = urlsplit(ws_url)
    sock.connect((url.hostname, url.port))
    stalled = Socket(await websockets.connect(ws_url, sock=sock, additional_headers=headers, max_size=None))
    await stalled.recv_action("unread_messages")
    return stalled


async def test_a_stalled_reader_is_dropped_without_slowing_the_others(server, make_user, connect, create_chat):
    alice, bob, carol = await make_user(), await make_user(), await make_user()
    a, b = await connect(alice), await connect(bob)
    slow = await _stalled_socket(server.ws_url, carol.headers)
    chat = await create_chat(a, [bob, carol])
    await b.recv_action("chat_created")
    slow.ws.transport.pause_reading()

    count, text = 3000, "x" * 3990
    for i in range(count):  # queued at once; the server runs them one after another
        await a.send({"action": "send_message", "chat_id": chat["id"], "text": f"{i:08d}{text}"})
    received = [(await b.recv_action("new_message", timeout=30))["data"] for _ in range(count)]
    assert [m["text"][:8] for m in received] == [f"{i:08d}" for i in range(count)]

    slow.ws.transport.resume_reading()
    try:
        while True:
            await slow.recv(timeout=30)
    except websockets.ConnectionClosed:
        pass
    assert slow.ws.close_code == 1013

    again = Socket(await websockets.connect(server.ws_url, additional_headers=carol.headers))
    frame = await again.recv_action("unread_messages", timeout=30)
    unread = frame["data"]
    async with httpx.AsyncClient(base_url=server.url) as http:
        while frame["more"]:  # the rest, a page at a time
            frame = (await http.get(f"/unread?after_id={unread[-1]['id']}", headers=carol.headers)).json()
            unread += frame["messages"]
    assert [m["id"] for m in unread] == [m["id"] for m in received]
    await again.close()
