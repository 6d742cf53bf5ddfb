"""Abuse limits, with the default knobs: auth attempts per IP, commands per user, sockets per user,
Origin and idle sockets."""

import asyncio
import itertools
import time
import uuid

import httpx
import pytest
import websockets

from conftest import JWT_SECRET, PASSWORD, open_socket, running_server

# Each helper call comes from its own loopback address, so per-IP limits do not trip over each other.
ADDRESSES = (f"127.0.0.{n}" for n in itertools.count(2))


def _client(server, address=None):
    transport = httpx.AsyncHTTPTransport(local_address=address or next(ADDRESSES))
    return httpx.AsyncClient(base_url=server.url, transport=transport)


@pytest.fixture(scope="module")
def limited(database_url, tmp_path_factory):
    """A server with the default limits, pinging every second."""
    log_path = tmp_path_factory.mktemp("limited") / "server.log"
    with running_server(log_path, DATABASE_URL=database_url, JWT_SECRET=JWT_SECRET, WS_PING_SECONDS="1") as server:
        yield server


@pytest.fixture
def limited_user(limited):
    async def make():
        email = f"{uuid.uuid4().hex}@example.com"
        async with _client(limited) as http:
            await http.post("/register", json={"name": "lim", "email": email, "password": PASSWORD})
            body = (await http.post("/login", json={"email": email, "password": PASSWORD})).json()
        return body["user_uuid"], {"Authorization": f"Bearer {body['access_token']}"}

    return make


async def test_auth_attempts_are_limited_per_address(limited):
    body = {"email": "nobody@example.com", "password": PASSWORD}
    async with _client(limited, "127.0.0.250") as http:
        statuses = [(await http.post("/login", json=body)).status_code for _ in range(10)]
        assert statuses == [401] * 10
        refused = await http.post("/register", json={"name": "x", "email": "x@example.com", "password": PASSWORD})
        assert refused.status_code == 429
        assert refused.json()["error"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 6
    async with _client(limited, "127.0.0.251") as other_address:
        assert (await other_address.post("/login", json=body)).status_code == 401


async def test_socket_commands_are_rate_limited_per_user(db, limited, limited_user):
    alice, headers = await limited_user()
    bob, _ = await limited_user()
    sock = await open_socket(limited.ws_url, headers)
    second_tab = await open_socket(limited.ws_url, headers)
    chat = (await sock.command({"action": "create_chat", "type": "private", "user_ids": [bob]}))["chat"]
    await second_tab.recv_action("chat_created")
    started = time.monotonic()
    for n in range(40):  # the rest of a burst of 30 (one went on create_chat), shared by both tabs
        frame = {"action": "send_message", "chat_id": chat["id"], "text": f"{n}", "request_id": n}
        await (sock, second_tab)[n % 2].send(frame)
    replies = []
    for tab in (sock, second_tab):
        mine = []
        while len(mine) < 20:  # each tab also gets the other's messages as new_message
            frame = await tab.recv()
            if "request_id" in frame:
                mine.append(frame)
        replies += mine
    sent = [r for r in replies if r["action"] == "message_sent"]
    limited_replies = [r for r in replies if r["action"] == "error"]
    refilled = (time.monotonic() - started) * 10  # RATE_PER_SEC while the frames were on their way
    assert 29 <= len(sent) <= 30 + refilled, replies  # 29 tokens were left after create_chat
    assert len(sent) + len(limited_replies) == 40
    assert all(r["error"] == "rate_limited" and r["retry_after_ms"] > 0 for r in limited_replies)
    assert await db.fetchval("select count(*) from messages where chat_id = $1", chat["id"]) == len(sent)
    await asyncio.sleep(max(r["retry_after_ms"] for r in limited_replies) / 1000)
    reply = await sock.command({"action": "send_message", "chat_id": chat["id"], "text": "after a pause"})
    assert reply["action"] == "message_sent"


async def test_eleventh_socket_is_refused_and_a_vanished_one_frees_its_place(limited, limited_user):
    _, headers = await limited_user()
    sockets = [await open_socket(limited.ws_url, headers) for _ in range(10)]
    with pytest.raises(websockets.InvalidStatus) as caught:
        await websockets.connect(limited.ws_url, additional_headers=headers)
    assert caught.value.response.status_code == 429
    assert (await sockets[0].command({"action": "mark_read", "message_ids": [1]}))["action"] == "marked_read"
    sockets[1].ws.transport.abort()  # vanishes while its handler waits for a frame
    await asyncio.sleep(0.3)
    replacement = await open_socket(limited.ws_url, headers)
    assert (await replacement.command({"action": "mark_read", "message_ids": [1]}))["action"] == "marked_read"


async def test_a_socket_that_stops_answering_pings_is_closed_and_forgotten(limited, limited_user):
    _, headers = await limited_user()
    sockets = [await open_socket(limited.ws_url, headers) for _ in range(10)]
    sockets[0].ws.transport.pause_reading()  # it reads nothing, so it never answers a ping
    await asyncio.sleep(2)  # a ping within 1 s, no pong within 1 s more
    deadline = time.monotonic() + 10
    while True:  # its place is free again as soon as the server has closed it
        try:
            await open_socket(limited.ws_url, headers)
            break
        except websockets.InvalidStatus:
            assert time.monotonic() < deadline, "the silent socket was never dropped"
            await asyncio.sleep(0.5)


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [(None, True), ("SELF", True), ("http://evil.example", False), ("null", False), ("http://127.0.0.1:1", False)],
)
async def test_origin_is_checked_on_the_handshake(limited, limited_user, origin, allowed):
    _, headers = await limited_user()
    if origin:
        headers = {**headers, "Origin": limited.url if origin == "SELF" else origin}
    if allowed:
        await open_socket(limited.ws_url, headers)
    else:
        with pytest.raises(websockets.InvalidStatus) as caught:
            await websockets.connect(limited.ws_url, additional_headers=headers)
        assert caught.value.response.status_code == 403


async def test_allowed_origins_setting(database_url, tmp_path, make_user):
    user = await make_user()  # on the main test server, same database
    env = {"DATABASE_URL": database_url, "JWT_SECRET": JWT_SECRET, "ALLOWED_ORIGINS": "https://chat.example.com, *x"}
    with running_server(tmp_path / "server.log", **env) as server:
        await open_socket(server.ws_url, {**user.headers, "Origin": "https://chat.example.com"})
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(server.ws_url, additional_headers={**user.headers, "Origin": server.url})
    with running_server(tmp_path / "server.log", **{**env, "ALLOWED_ORIGINS": "*"}) as server:
        await open_socket(server.ws_url, {**user.headers, "Origin": "http://anywhere.example"})
