"""The reconnect storm's clients (run.py's storm part), in load-generator processes of their own.

Each client behaves as the web client (static/connection.js and app.js) does when its socket
drops: it waits a delay uniform in [ceiling / 2, ceiling], with a ceiling of 1 s doubling after
each failed try (capped at 10 s), and opens the socket with the cursor of the last frame it took
in (since=). A try that fails asks GET /users_list why (a 401 would mean logging in again); once
the unread frame is in, the client asks for GET /users_list again, as the page reloads its
people list (who is online is not in the event stream).
"""

import asyncio
import os
import random
import re
import time
from urllib.parse import quote

import orjson
import picows
import uvloop

MAX_DELAY = 10  # seconds: connection.js's MAX_DELAY_MS
TRY_TIMEOUT = 30  # seconds a probe, a handshake or the unread frame may take before the try counts as failed


def storm_loadgen(pipe, port, tokens):
    """One process of storm clients: connects them, then runs the commands run.py sends."""
    uvloop.run(_storm_loadgen(pipe, port, tokens))


def kind(error):
    """A failure's kind, for counting: the exception's type, and an HTTP status if it tells one."""
    status = re.search(r"received (\d+)", str(error)) if isinstance(error, picows.WSError) else None
    return type(error).__name__ + (f" {status.group(1)}" if status else "")


async def probe(port, token):
    """GET /users_list over a new connection (the restart dropped any kept-alive one): its status
    and the bytes of its body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        request = f"GET /users_list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\r\n"
        writer.write(request.encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        length = re.search(r"(?im)^content-length:\s*(\d+)", head)
        body = await reader.readexactly(int(length.group(1))) if length else b""
        return int(head.split(" ", 2)[1]), len(body)
    finally:
        writer.close()


async def _storm_loadgen(pipe, port, tokens):
    loop = asyncio.get_running_loop()
    clients = [
        {"token": token, "cursor": None, "acked": [], "failures": {}, "probes": [], "handshakes": [], "people": None}
        for token in tokens
    ]

    class Listener(picows.WSListener):
        """One socket of a client: keeps the cursor of every frame, tells the unread frame, the
        acknowledgements of its sends, and the close (with the server's code, if it sent one)."""

        def __init__(self, client):
            self.client, self.code, self.connected_at = client, None, None
            self.unread, self.closed = loop.create_future(), loop.create_future()

        def on_ws_connected(self, transport):
            self.connected_at = time.monotonic()  # the 101 read: the handshake is done

        def on_ws_frame(self, transport, ws_frame):
            if ws_frame.msg_type == picows.WSMsgType.CLOSE:
                self.code = int(ws_frame.get_close_code())
                transport.disconnect()
                return
            if ws_frame.msg_type != picows.WSMsgType.TEXT:
                return
            frame = orjson.loads(ws_frame.get_payload_as_memoryview())
            self.client["cursor"] = frame.get("cursor") or self.client["cursor"]
            if frame.get("action") == "unread_messages" and not self.unread.done():
                self.unread.set_result((time.monotonic(), frame))
            elif frame.get("action") == "message_sent":
                self.client["acked"].append(frame["data"]["id"])
                waiter = self.client.get("all_acked")
                if waiter and len(self.client["acked"]) >= self.client["to_send"] and not waiter.done():
                    waiter.set_result(None)
            elif frame.get("action") == "error":
                fail(self.client, "seed: error reply")

        def on_ws_disconnected(self, transport):
            if not self.closed.done():
                self.closed.set_result(time.monotonic())

    def url(client):
        since = f"&since={quote(client['cursor'])}" if client["cursor"] else ""
        return f"ws://127.0.0.1:{port}/connect?access_token={client['token']}{since}"

    async def open_socket(client):
        """The socket and its listener, once the handshake is done (raises if it fails)."""
        listener = Listener(client)
        transport, _ = await picows.ws_connect(
            lambda: listener, url(client), websocket_handshake_timeout=TRY_TIMEOUT, max_frame_size=2**30
        )
        if listener.connected_at is None:  # picows returns, not raises, when the connection is lost mid-handshake
            raise ConnectionResetError("lost during the handshake")
        client["transport"], client["listener"] = transport, listener
        return listener

    semaphore = asyncio.Semaphore(50)

    async def first_connect(client):
        async with semaphore:
            listener = await open_socket(client)
            await listener.unread

    def fail(client, what):
        client["failures"][what] = client["failures"].get(what, 0) + 1

    async def seed(client, count, spread):
        """Send `count` messages to the client's group, all at once at a random moment of `spread`
        seconds, and wait for their acknowledgements."""
        client.update(to_send=count, all_acked=loop.create_future())
        await asyncio.sleep(random.random() * spread)
        for k in range(count):
            command = {"action": "send_message", "chat_id": client["chat"], "text": f"storm {os.getpid()} {k}"}
            client["transport"].send(picows.WSMsgType.TEXT, orjson.dumps({**command, "request_id": k}))
        try:
            await asyncio.wait_for(client["all_acked"], 60)
        except TimeoutError:
            fail(client, "seed: not acknowledged in 60 s")

    async def ask(client, what):
        """GET /users_list, as the web client asks it: (when asked, seconds, status, bytes), or
        None if it failed (counted as `what`'s failure)."""
        started = time.monotonic()
        try:
            status, size = await asyncio.wait_for(probe(port, client["token"]), TRY_TIMEOUT)
        except Exception as error:  # the server still away, or too slow
            fail(client, f"{what}: {kind(error)}")
            return None
        if status != 200:
            fail(client, f"{what}: {status}")
        return started, time.monotonic() - started, status, size

    async def reconnect(client, deadline):
        """After the drop: the web client's back-off and socket until the unread frame (asking
        HTTP why after a failed try), then its people list."""
        listener = client["listener"]
        try:
            client["dropped_at"] = await asyncio.wait_for(listener.closed, deadline - time.monotonic())
        except TimeoutError:
            fail(client, "never dropped")
            return
        client["drop_code"] = listener.code
        retries = 0
        while time.monotonic() < deadline:
            ceiling = min(MAX_DELAY, 2**retries)
            retries += 1
            await asyncio.sleep(ceiling / 2 + random.random() * ceiling / 2)
            client["tries"] = retries
            started = time.monotonic()
            try:
                listener = await open_socket(client)
            except Exception as error:
                fail(client, f"socket: {kind(error)}")
            else:
                client["handshakes"].append(listener.connected_at - started)
                waiting = [listener.unread, listener.closed]
                await asyncio.wait(waiting, timeout=TRY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
                if listener.unread.done():
                    client["unread_at"], frame = listener.unread.result()
                    client["after_handshake"] = client["unread_at"] - listener.connected_at
                    client["frame"] = {key: value for key, value in frame.items() if key != "data"}
                    client["unread_ids"] = [message["id"] for message in frame["data"]]
                    client["people"] = await ask(client, "people list")
                    return
                closed = f"socket: closed ({listener.code}) before the unread frame"
                fail(client, closed if listener.closed.done() else "socket: no unread frame in time")
                client["transport"].disconnect()
            why = await ask(client, "probe")
            if why is not None:
                client["probes"].append(why)
                if why[2] == 401:  # the web client would log in again: a failure here
                    return
        fail(client, "not reconnected by the deadline")

    await asyncio.gather(*(first_connect(client) for client in clients))
    pipe.send(("connected", len(clients)))
    while True:
        command = await loop.run_in_executor(None, pipe.recv)
        if command[0] == "seed":
            _, chats, count, spread = command
            for client, chat in zip(clients, chats, strict=True):
                client["chat"] = chat
            await asyncio.gather(*(seed(client, count, spread) for client in clients))
            await asyncio.sleep(2)  # the pushes to the others land (and move their cursors on)
            pipe.send(("seeded", [client["acked"] for client in clients]))
        elif command[0] == "storm":
            deadline = time.monotonic() + command[1]
            tasks = [asyncio.create_task(reconnect(client, deadline)) for client in clients]
            pipe.send(("armed",))
            await asyncio.gather(*tasks)
            keys = (
                "dropped_at",
                "drop_code",
                "tries",
                "probes",
                "handshakes",
                "unread_at",
                "after_handshake",
                "people",
            )
            report = [
                {key: client.get(key) for key in (*keys, "frame", "unread_ids", "failures")} for client in clients
            ]
            pipe.send(("stormed", report))
        else:
            for client in clients:
                if not client["transport"].is_disconnected:
                    client["transport"].send_close(picows.WSCloseCode.OK)
                    client["transport"].disconnect()
            pipe.send(("closed",))
            return
