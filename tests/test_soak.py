"""A short soak: 200 sockets for 30 s of mixed commands and random disconnects.

Every acknowledged message is stored exactly once and reached every socket of every member
that was connected from before it was sent until after it was acknowledged; server memory
comes back near where it started once the clients leave.
"""

import asyncio
import itertools
import os
import random
import time
import uuid
from collections import defaultdict
from types import SimpleNamespace

import asyncpg
import httpx
import orjson
import websockets

from conftest import JWT_SECRET, PASSWORD, running_server

SECONDS = float(os.environ.get("SOAK_SECONDS", "30"))
USERS, SOCKETS_PER_USER, GROUP_SIZE = 50, 4, 5
GRACE = 1.0  # how long after its ack a push may still be on its way


def _rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


class Session:
    """One connection's life, as its client saw it."""

    def __init__(self, user):
        self.user, self.received, self.replies, self.stray = user, [], {}, []
        self.opened = self.closed = None


async def _read(ws, session):
    async for raw in ws:
        frame = orjson.loads(raw)
        if frame["action"] == "new_message":
            session.received.append(frame["data"]["id"])
        elif frame.get("request_id") in session.replies:
            session.replies.pop(frame["request_id"]).set_result(frame)
        elif "request_id" in frame:
            session.stray.append(frame)  # somebody else's reply: must never happen


async def _command(ws, session, frame):
    request_id = uuid.uuid4().hex
    session.replies[request_id] = asyncio.get_running_loop().create_future()
    await ws.send(orjson.dumps({**frame, "request_id": request_id}).decode())
    return await asyncio.wait_for(session.replies[request_id], 10)


async def _client(server, user, users, chats, sessions, sends, deadline, rng):
    """Connect, run random commands for a while, leave (politely or not), repeat."""
    while time.monotonic() < deadline:
        session = Session(user)
        ws = await websockets.connect(server.ws_url, additional_headers=user.headers, max_queue=None)
        assert orjson.loads(await ws.recv())["action"] == "unread_messages"
        session.opened = time.monotonic()
        sessions.append(session)
        reader = asyncio.create_task(_read(ws, session))
        stay_until = min(deadline, time.monotonic() + rng.uniform(2, 15))
        while time.monotonic() < stay_until:
            roll = rng.random()
            if roll < 0.75:
                chat = rng.choice(user.chats)
                text = f"{user.uuid}-{uuid.uuid4().hex}"
                sent_at = time.monotonic()
                reply = await _command(ws, session, {"action": "send_message", "chat_id": chat, "text": text})
                assert reply["action"] == "message_sent", reply
                sends.append(
                    SimpleNamespace(reply=reply["data"], session=session, sent=sent_at, acked=time.monotonic())
                )
            elif roll < 0.95 and session.received:  # read what arrived, as an open chat window does
                ids = session.received[-1000:]
                reply = await _command(ws, session, {"action": "mark_read", "message_ids": ids})
                assert reply["action"] == "marked_read", reply
            else:
                other = rng.choice(users)
                if other is not user:
                    frame = {"action": "create_chat", "type": "private", "user_ids": [other.uuid]}
                    reply = await _command(ws, session, frame)
                    assert reply["action"] == "chat_created", reply
            await asyncio.sleep(rng.expovariate(2.0))
        if time.monotonic() >= deadline:
            await asyncio.sleep(GRACE + 1)  # the last connection drains what is still coming
        session.closed = time.monotonic()
        reader.cancel()
        if rng.random() < 0.5:
            ws.transport.abort()  # vanish without a close frame
        else:
            await ws.close()


async def test_soak(database_url, tmp_path):
    env = {"DATABASE_URL": database_url, "JWT_SECRET": JWT_SECRET, "RATE_BURST": "100000", "RATE_PER_SEC": "100000"}
    env["AUTH_RATE_PER_MIN"] = env["MAX_CONNECTIONS_PER_IP"] = "100000"  # every user is 127.0.0.1
    with running_server(tmp_path / "server.log", **env) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            users = []
            for n in range(USERS):
                email = f"soak-{uuid.uuid4().hex}@example.com"
                await http.post("/register", json={"name": f"soak{n}", "email": email, "password": PASSWORD})
                login = (await http.post("/login", json={"email": email, "password": PASSWORD})).json()
                headers = {"Authorization": f"Bearer {login['access_token']}"}
                users.append(SimpleNamespace(uuid=login["user_uuid"], headers=headers, chats=[]))
        # Groups of five, each user in two of them.
        chats = {}
        for offset in (0, GROUP_SIZE // 2):
            for start in range(0, USERS, GROUP_SIZE):
                members = [users[(start + offset + i) % USERS] for i in range(GROUP_SIZE)]
                async with websockets.connect(server.ws_url, additional_headers=members[0].headers) as ws:
                    await ws.recv()
                    others = [m.uuid for m in members[1:]]
                    await ws.send(
                        orjson.dumps(
                            {"action": "create_chat", "type": "group", "name": "soak", "user_ids": others}
                        ).decode()
                    )
                    chat = orjson.loads(await ws.recv())["chat"]
                chats[chat["id"]] = {m.uuid for m in members}
                for member in members:
                    member.chats.append(chat["id"])

        async def run(seconds, seed):
            """All users' sockets at once, until `seconds` have passed; then wait for Sanic to let go."""
            sessions, sends, rng = [], [], random.Random(seed)
            deadline = time.monotonic() + seconds
            await asyncio.gather(
                *(
                    _client(server, user, users, chats, sessions, sends, deadline, random.Random(rng.random()))
                    for user, _ in itertools.product(users, range(SOCKETS_PER_USER))
                )
            )
            await asyncio.sleep(12)  # Sanic lets go of a closed connection after RESPONSE_TIMEOUT (10 s)
            return sessions, sends, _rss_kib(server.process.pid)

        # A first, shorter round brings the allocator to its working size; the soak must end where it began.
        _, _, rss_before = await run(10, seed=1)
        sessions, sends, rss_after = await run(SECONDS, seed=7)

    assert len(sends) > 1000
    conn = await asyncpg.connect(database_url)
    rows = await conn.fetch("select id, text from messages where id = any($1)", [s.reply["id"] for s in sends])
    texts = [s.reply["text"] for s in sends]
    duplicates = await conn.fetchval("select count(*) - count(distinct text) from messages where text = any($1)", texts)
    await conn.close()
    assert {row["id"]: row["text"] for row in rows} == {s.reply["id"]: s.reply["text"] for s in sends}
    assert duplicates == 0

    sends_by_chat = defaultdict(list)
    for send in sends:
        sends_by_chat[send.reply["chat_id"]].append(send)
    checked = 0
    for session in sessions:
        assert session.stray == []
        assert len(session.received) == len(set(session.received)), "a message arrived twice on one socket"
        received = set(session.received)
        for send in (send for chat in session.user.chats for send in sends_by_chat[chat]):
            if send.session is not session and session.opened <= send.sent and send.acked + GRACE <= session.closed:
                assert send.reply["id"] in received, (send.reply, session.opened, session.closed)
                checked += 1
    assert checked > 1000
    print(f"soak: {len(sends)} messages, {len(sessions)} connections, {checked} deliveries checked, "
          f"server RSS {rss_before // 1024} MiB -> {rss_after // 1024} MiB")  # fmt: skip
    assert rss_after - rss_before < 32 * 1024, (rss_before, rss_after)
