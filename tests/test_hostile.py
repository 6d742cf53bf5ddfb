"""Hostile clients against a live server: a flood of frames is held in the kernel, not in memory,
and a flooder is cut off; a login storm is shed with 503, never a 500."""

import asyncio
import base64
import contextlib
import gc
import os
import statistics
import time
import uuid
from urllib.parse import urlsplit

import httpx
import pytest
import websockets
from websockets.frames import Frame, Opcode

from conftest import JWT_SECRET, PASSWORD, Socket, open_socket, register_and_login, running_server


def _rss_mib(process):
    """The server's resident memory."""
    with open(f"/proc/{process.pid}/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return kib / 1024


# {"action": "nope", "pad": "xxx…"}, 60 kB, masked as a client must: made once, so that flooding
# costs the attacker nearly nothing, as it would.
FLOOD_FRAME = Frame(Opcode.TEXT, b'{"action": "nope", "pad": "' + b"x" * 60000 + b'"}').serialize(mask=True)


async def _raw_socket(ws_url, token):
    """A socket opened by hand, for writing frames at the speed of the kernel: its stream writer."""
    url = urlsplit(ws_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(
        f"GET {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {token}\r\n\r\n".encode()
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    return writer


async def _flood(writer):
    """Write 2,000 flood frames as fast as the server takes them (3 s at most), then drop the TCP connection."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(3):
            for _ in range(2000):
                writer.write(FLOOD_FRAME)
                await writer.drain()
                await asyncio.sleep(0)  # drain() does not yield while the kernel takes it all: let this test measure
    writer.transport.abort()


@pytest.fixture(scope="module")
def unlimited(database_url, tmp_path_factory):
    """A fresh server (its memory not yet grown by other tests) with the command limit out of the
    way, so that nothing but reading stops a flood."""
    log_path = tmp_path_factory.mktemp("unlimited") / "server.log"
    env = {"DATABASE_URL": database_url, "JWT_SECRET": JWT_SECRET, "RATE_BURST": "10000000", "RATE_PER_SEC": "1"}
    with running_server(log_path, **env) as server:
        yield server


async def test_a_frame_flood_waits_in_the_kernel_and_leaves_nothing_behind(unlimited):
    """Four sockets send 60 kB frames as fast as they can, then vanish. The server stops reading
    them while their frames wait, so its memory hardly moves and others are still answered fast."""
    server = unlimited
    async with httpx.AsyncClient(base_url=server.url) as http:
        (_, alice), (bob_id, bob), (_, flooder) = [await register_and_login(http) for _ in range(3)]
    a, b = await open_socket(server.ws_url, alice), await open_socket(server.ws_url, bob)
    chat = (await a.command({"action": "create_chat", "type": "private", "user_ids": [bob_id]}))["chat"]
    await b.recv_action("chat_created")
    token = flooder["Authorization"].removeprefix("Bearer ")
    writers = [await _raw_socket(server.ws_url, token) for _ in range(4)]
    for _ in range(20):  # warm up, so the baseline includes what sending costs anyway
        await a.command({"action": "send_message", "chat_id": chat["id"], "text": "warm"})
    await asyncio.sleep(0.5)
    before = _rss_mib(server.process)

    floods = [asyncio.create_task(_flood(writer)) for writer in writers]
    latencies, peak = [], before
    # This process's own garbage collection would pause the measuring (by hundreds of ms, late
    # in a full run): what is measured here is the server.
    gc.collect()
    gc.disable()
    try:
        while not all(flood.done() for flood in floods):
            started = time.perf_counter()
            reply = await a.command({"action": "send_message", "chat_id": chat["id"], "text": "still here?"})
            latencies.append((time.perf_counter() - started) * 1000)
            assert reply["action"] == "message_sent"
            peak = max(peak, _rss_mib(server.process))
            await asyncio.sleep(0.005)
    finally:
        gc.enable()
    await asyncio.gather(*floods)
    await asyncio.sleep(1)
    after = _rss_mib(server.process)

    assert peak - before < 64, f"RSS {before:.0f} -> {peak:.0f} MiB during the flood"
    assert after - before < 8, f"RSS {before:.0f} -> {after:.0f} MiB after the flood"
    p99 = statistics.quantiles(latencies, n=100)[98]
    print(f"\nRSS {before:.1f} / {peak:.1f} / {after:.1f} MiB; p50/p99 {statistics.median(latencies):.1f}/{p99:.1f} ms")
    assert p99 < 50, f"another user's send -> ack p99 was {p99:.1f} ms during the flood"
    # The server is fine and has freed the flooders' sockets: they may connect again at once.
    for _ in range(10):
        await (await open_socket(server.ws_url, flooder)).close()
    await a.close()
    await b.close()


@pytest.fixture(scope="module")
def strict(database_url, tmp_path_factory):
    """A server with the default burst of 30 commands, refilled slowly (1 per second), so that
    what the limit allowed is exact; 2 s to send a request, 20 connections per address."""
    log_path = tmp_path_factory.mktemp("strict") / "server.log"
    env = {"RATE_PER_SEC": "1", "REQUEST_DEADLINE_SECONDS": "2", "MAX_CONNECTIONS_PER_IP": "20"}
    with running_server(log_path, DATABASE_URL=database_url, JWT_SECRET=JWT_SECRET, **env) as server:
        yield server


async def test_every_frame_counts_against_the_command_limit(strict, db):
    async with httpx.AsyncClient(base_url=strict.url) as http:
        alice, headers = await register_and_login(http)
        bob, _ = await register_and_login(http)
    sock = await open_socket(strict.ws_url, headers)
    chat = (await sock.command({"action": "create_chat", "type": "private", "user_ids": [bob]}))["chat"]
    for frame in ["not json", "[]", '{"action": "nope"}'] * 10:  # 29 tokens were left after create_chat
        await sock.send(frame)
    replies = [await sock.recv() for _ in range(30)]
    assert [r["error"] for r in replies[:29]] == ["invalid_json", "invalid_json", "unknown_action"] * 9 + [
        "invalid_json",
        "invalid_json",
    ]
    assert replies[29]["error"] == "rate_limited"
    reply = await sock.command({"action": "send_message", "chat_id": chat["id"], "text": "after the nonsense"})
    assert reply["error"] == "rate_limited", reply
    assert await db.fetchval("select count(*) from messages where chat_id = $1", chat["id"]) == 0
    await sock.close()


async def test_a_socket_that_keeps_flooding_is_closed_with_1008(strict):
    async with httpx.AsyncClient(base_url=strict.url) as http:
        _, headers = await register_and_login(http)
    sock = Socket(await websockets.connect(strict.ws_url, additional_headers=headers, max_queue=None))
    await sock.recv_action("unread_messages")
    # 30 frames the burst allows, then 31 refusals in a row: it ignored retry_after_ms.
    for _ in range(61):
        await sock.send('{"action": "nope"}')
    replies = []
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            replies.append(await sock.recv())
    assert [r["error"] for r in replies] == ["unknown_action"] * 30 + ["rate_limited"] * 31
    assert (sock.ws.close_code, sock.ws.close_reason) == (1008, "too many frames")
    # One that keeps sending is cut off all the same (its close frame may be lost to a reset).
    flood = Socket(await websockets.connect(strict.ws_url, additional_headers=headers, max_queue=None))
    with pytest.raises(websockets.ConnectionClosed):
        async with asyncio.timeout(10):
            while True:
                await flood.send('{"action": "nope"}')
    # The user is not banned: a well-behaved socket gets in and works once the limit refills.
    await asyncio.sleep(1.5)
    again = await open_socket(strict.ws_url, headers)
    assert (await again.command({"action": "mark_read", "message_ids": [1]}))["action"] == "marked_read"
    await again.close()


@pytest.fixture(scope="module")
def full_cost(database_url, tmp_path_factory):
    """A server with bcrypt at its production cost, and no per-address limit in the way."""
    log_path = tmp_path_factory.mktemp("full_cost") / "server.log"
    env = {"DATABASE_URL": database_url, "JWT_SECRET": JWT_SECRET, "BCRYPT_ROUNDS": "12"}
    with running_server(log_path, AUTH_RATE_PER_MIN="100000", **env) as server:
        yield server


@pytest.mark.parametrize("route", ["/login", "/register"])
async def test_a_storm_of_200_logins_is_shed_with_503_never_500(full_cost, route):
    email = f"{uuid.uuid4().hex}@example.com"
    async with httpx.AsyncClient(base_url=full_cost.url, timeout=30) as http:
        await http.post("/register", json={"name": "storm", "email": email, "password": PASSWORD})
        start = full_cost.log_path.stat().st_size

        async def attempt(n):
            body = {"email": email, "password": PASSWORD}
            if route == "/register":
                body = {"name": "storm", "email": f"{n}-{email}", "password": PASSWORD}
            started = time.monotonic()
            response = await http.post(route, json=body)
            return response, time.monotonic() - started

        results = await asyncio.gather(*(attempt(n) for n in range(200)))
    statuses = [response.status_code for response, _ in results]
    done = {"/login": 200, "/register": 201}[route]
    assert set(statuses) <= {done, 503}, statuses
    assert statuses.count(done) >= 1 and statuses.count(503) >= 100, statuses
    for response, seconds in results:
        if response.status_code == 503:
            assert response.json()["error"] == "unavailable"
            assert 1 <= int(response.headers["retry-after"]) <= 10
            assert seconds < 2, "a refusal should be at once, not after waiting in the queue"
    assert max(seconds for _, seconds in results) < 8
    assert b"Traceback" not in full_cost.log_path.read_bytes()[start:]


async def _raw_connection(server, local_address="127.0.0.1"):
    url = urlsplit(server.url)
    return await asyncio.open_connection(url.hostname, url.port, local_addr=(local_address, 0))


async def test_a_client_dripping_its_headers_is_cut_off_at_the_deadline(strict):
    """Sanic's own timeout starts again with every byte; the deadline does not."""
    reader, writer = await _raw_connection(strict)
    started = time.monotonic()
    answer = asyncio.create_task(reader.readuntil(b"\r\n\r\n"))
    writer.write(b"GET /users_list HTTP/1.1\r\nHost: x\r\n")
    with contextlib.suppress(ConnectionError):
        for byte in b"X-Drip: " + b"y" * 40:  # 20 s of drip, a byte every half second
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.wait([answer], timeout=0.5)
            if answer.done():
                break
    assert (await answer).startswith(b"HTTP/1.1 408"), answer.result()
    assert time.monotonic() - started < 4
    writer.close()


async def test_kept_alive_connections_and_open_sockets_outlive_the_deadline(strict):
    async with httpx.AsyncClient(base_url=strict.url) as http:
        _, headers = await register_and_login(http)
        sock = await open_socket(strict.ws_url, headers)
        for _ in range(3):  # one connection, a request every 1.5 s: each has its own 2 s
            assert (await http.get("/users_list", headers=headers)).status_code == 200
            await asyncio.sleep(1.5)
    assert (await sock.command({"action": "mark_read", "message_ids": [1]}))["action"] == "marked_read"
    await sock.close()


async def test_connections_per_address_are_capped(strict):
    async with httpx.AsyncClient(base_url=strict.url) as http:
        users = [await register_and_login(http) for _ in range(2)]
    sockets = [await open_socket(strict.ws_url, headers) for _, headers in users for _ in range(10)]
    # 20 open from 127.0.0.1: the 21st is closed before a byte is read.
    reader, writer = await _raw_connection(strict)
    writer.write(b"GET /users_list HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        answer = await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:  # closed with our request unread
        answer = b""
    assert answer == b"", "the connection over the cap was served"
    writer.close()
    # Another address is not affected, and a closed socket frees its place.
    async with httpx.AsyncClient(
        base_url=strict.url, transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    ) as http:
        assert (await http.get("/users_list")).status_code == 401
    await sockets.pop().close()
    await asyncio.sleep(0.2)
    async with httpx.AsyncClient(base_url=strict.url) as http:
        assert (await http.get("/users_list")).status_code == 401
    for sock in sockets:
        await sock.close()
