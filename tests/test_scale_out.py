"""More than one server process on one database: every event reaches every socket once,
whichever process holds it; presence is one truth across processes."""

import asyncio
import os
import signal
import time

import asyncpg
import httpx
import orjson
import pytest

from conftest import (
    FAST_BEAT,
    JWT_SECRET,
    LIMITS,
    open_socket,
    open_sockets_on_every_worker,
    plan_nodes,
    register_and_login,
    running_server,
)


async def _drain_all(*sockets, seconds=0.5):
    """Every non-presence frame that arrives on these sockets within `seconds` (should be none)."""
    extra = []
    for sock in sockets:
        try:
            while True:
                extra.append(await sock.recv(seconds))
        except TimeoutError:
            pass
    return extra


async def test_two_processes_deliver_as_one(two_servers, make_user, create_chat):
    one, two = two_servers
    alice, bob = await make_user("alice"), await make_user("bob")
    a1 = await open_socket(one.ws_url, alice.headers)
    a2 = await open_socket(two.ws_url, alice.headers)  # alice's second tab, on the other process
    b2 = await open_socket(two.ws_url, bob.headers)

    chat = await create_chat(a1, [bob], kind="private")
    assert (await b2.recv_action("chat_created"))["chat"] == chat
    assert (await a2.recv_action("chat_created"))["chat"] == chat

    sent = []
    for n in range(20):
        reply = await a1.command({"action": "send_message", "chat_id": chat["id"], "text": f"m{n}"})
        sent.append(reply["data"])
    assert [(await b2.recv_action("new_message"))["data"] for _ in sent] == sent
    assert [(await a2.recv_action("new_message"))["data"] for _ in sent] == sent

    reply = await b2.command({"action": "mark_read", "message_ids": [m["id"] for m in sent]})
    assert reply["message_ids"] == [m["id"] for m in sent]
    receipts = [(await a.recv_action("messages_read"))["data"] for a in (a1, a2)]
    assert receipts == [[{"id": m["id"], "chat_id": chat["id"]} for m in sent]] * 2

    # Back the other way: bob on process two writes, alice on process one reads.
    reply = await b2.command({"action": "send_message", "chat_id": chat["id"], "text": "hi from two"})
    assert (await a1.recv_action("new_message"))["data"] == reply["data"]
    assert (await a2.recv_action("new_message"))["data"] == reply["data"]
    assert await _drain_all(a1, a2, b2) == []  # nothing twice


async def test_edits_and_deletes_reach_the_other_process(two_servers, make_user, create_chat):
    one, two = two_servers
    alice, bob = await make_user("alice"), await make_user("bob")
    a1, b2 = await open_socket(one.ws_url, alice.headers), await open_socket(two.ws_url, bob.headers)
    chat = await create_chat(a1, [bob], kind="private")
    await b2.recv_action("chat_created")
    sent = (await a1.command({"action": "send_message", "chat_id": chat["id"], "text": "typo"}))["data"]
    await b2.recv_action("new_message")
    edited = await a1.command({"action": "edit_message", "message_id": sent["id"], "text": "fixed"})
    assert (await b2.recv_action("message_edited"))["data"] == edited["data"]
    deleted = await a1.command({"action": "delete_message", "message_id": sent["id"]})
    assert (await b2.recv_action("message_deleted"))["data"] == deleted["data"]
    assert await _drain_all(a1, b2) == []


async def test_membership_changes_reach_the_other_process(two_servers, make_user, create_chat):
    one, two = two_servers
    alice, bob, carol = await make_user("alice"), await make_user("bob"), await make_user("carol")
    a1 = await open_socket(one.ws_url, alice.headers)
    b2, c2 = await open_socket(two.ws_url, bob.headers), await open_socket(two.ws_url, carol.headers)
    chat = await create_chat(a1, [bob, carol], kind="group", name="team")
    for sock in (b2, c2):
        await sock.recv_action("chat_created")
    updated = await a1.command({"action": "remove_member", "chat_id": chat["id"], "user_id": carol.uuid})
    assert (await b2.recv_action("chat_updated"))["chat"] == updated["chat"]
    assert (await c2.recv_action("chat_removed"))["chat_id"] == chat["id"]
    assert await _drain_all(a1, b2, c2) == []


async def test_password_change_closes_sockets_on_every_process(two_servers, make_user):
    one, two = two_servers
    user = await make_user()
    socks = [await open_socket(server.ws_url, user.headers) for server in two_servers]
    async with httpx.AsyncClient(base_url=one.url) as http:
        body = {"old_password": "correct horse", "new_password": "battery staple"}
        assert (await http.post("/change_password", json=body, headers=user.headers)).status_code == 204
    for sock in socks:
        await asyncio.wait_for(sock.ws.wait_closed(), 5)
        assert sock.ws.close_code == 1008


async def test_workers_share_one_port_and_deliver_each_message_once(database_url, tmp_path, make_user):
    env = {"DATABASE_URL": database_url, "JWT_SECRET": JWT_SECRET, **LIMITS}
    with running_server(tmp_path / "workers.log", "--workers", "2", **env) as server:

        async def new_user():
            user = await make_user()
            return user.uuid, user.headers

        # At least 24 sockets, in groups of four, some on each worker.
        users, socks, _ = await open_sockets_on_every_worker(server, database_url, new_user, minimum=24, step=4)
        groups = [list(range(start, start + 4)) for start in range(0, len(users), 4)]
        chats = []
        for group in groups:
            members = [users[i] for i in group[1:]]
            reply = await socks[group[0]].command(
                {"action": "create_chat", "type": "group", "name": "g", "user_ids": members}
            )
            chats.append(reply["chat"])
            for i in group[1:]:
                assert (await socks[i].recv_action("chat_created"))["chat"] == reply["chat"]

        for group, chat in zip(groups, chats, strict=True):
            for i in group:
                for n in range(5):
                    await socks[i].send({"action": "send_message", "chat_id": chat["id"], "text": f"{i}:{n}"})

        async def collect(sock):
            """Five acks of its own and fifteen messages from the three others."""
            acked, received = [], []
            while len(acked) < 5 or len(received) < 15:
                frame = await sock.recv()
                (acked if frame["action"] == "message_sent" else received).append(frame["data"]["id"])
            return acked, received

        results = await asyncio.gather(*(collect(sock) for sock in socks))
        all_acked = {message_id for acked, _ in results for message_id in acked}
        assert len(all_acked) == len(users) * 5
        for acked, received in results:
            assert len(set(received)) == 15 and set(received) <= all_acked - set(acked)
        assert await _drain_all(*socks, seconds=0.3) == []

        for sock in socks:
            await sock.close()
        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(10) == 0
        log = server.log_path.read_text()
        assert "Traceback" not in log and "Event loop is closed" not in log, log


@pytest.mark.parametrize(
    ("how", "logged"),
    [
        ("terminated", "event bus: connection lost"),  # PostgreSQL closes it: the termination listener sees it
        ("frozen", "event bus: TimeoutError"),  # a half-open link: only the timed keep-alive read finds it
    ],
)
async def test_a_lost_listener_catches_up_on_what_committed_meanwhile(how, logged, database_url, tmp_path, make_user):
    env = {"DATABASE_URL": database_url, "JWT_SECRET": JWT_SECRET, **LIMITS, **FAST_BEAT}
    with running_server(tmp_path / "one.log", **env) as one, running_server(tmp_path / "two.log", **env) as two:
        alice, bob = await make_user(), await make_user()
        a2 = await open_socket(two.ws_url, alice.headers)
        b1 = await open_socket(one.ws_url, bob.headers)
        chat = (await a2.command({"action": "create_chat", "type": "private", "user_ids": [bob.uuid]}))["chat"]
        await b1.recv_action("chat_created")

        # Cut process one's listening connection, and commit at once, while it is away:
        # no NOTIFY ever reaches it for these messages.
        conn = await asyncpg.connect(database_url)
        listener = await conn.fetchval(
            "select pid from pg_stat_activity where application_name = $1", f"chat bus {one.process.pid}"
        )
        try:
            if how == "terminated":
                await conn.execute("select pg_terminate_backend($1)", listener)
            else:  # the backend stops answering but its socket stays open
                os.kill(listener, signal.SIGSTOP)
            sent = [
                (await a2.command({"action": "send_message", "chat_id": chat["id"], "text": f"gap {n}"}))["data"]
                for n in range(5)
            ]
            assert [(await b1.recv_action("new_message", timeout=15))["data"] for _ in sent] == sent
            assert await _drain_all(b1) == []
        finally:
            if how == "frozen":
                os.kill(listener, signal.SIGCONT)
            await conn.close()
        assert logged in one.log_path.read_text()


async def test_a_database_restart_loses_nothing_committed(own_database, tmp_path):
    """Two processes, PostgreSQL restarted under them while alice keeps sending: bob gets
    every acknowledged message exactly once, and messages sent after recovery flow again."""
    env = {"DATABASE_URL": own_database.get_uri(), "JWT_SECRET": JWT_SECRET, **LIMITS}
    with running_server(tmp_path / "one.log", **env) as one, running_server(tmp_path / "two.log", **env) as two:
        async with httpx.AsyncClient(base_url=one.url) as http:
            (_, alice_headers), (bob, bob_headers) = await register_and_login(http), await register_and_login(http)
        a2 = await open_socket(two.ws_url, alice_headers)
        b1 = await open_socket(one.ws_url, bob_headers)
        chat = (await a2.command({"action": "create_chat", "type": "private", "user_ids": [bob]}))["chat"]
        await b1.recv_action("chat_created")

        acked, stop = [], asyncio.Event()

        async def keep_sending():
            n = 0
            while not stop.is_set():
                reply = await a2.command({"action": "send_message", "chat_id": chat["id"], "text": f"n{n}"})
                if reply["action"] == "message_sent":
                    acked.append(reply["data"]["id"])
                n += 1
                await asyncio.sleep(0.01)

        sender = asyncio.create_task(keep_sending())
        await asyncio.sleep(0.5)
        own_database.stop()
        await asyncio.sleep(1)
        own_database.start()
        deadline = time.monotonic() + 20
        while len(acked) < 20 or acked[-1] <= acked[len(acked) // 2]:  # sending again after recovery
            assert time.monotonic() < deadline, "sending did not recover"
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
        stop.set()
        await sender

        received = []
        while True:
            try:
                received.append((await b1.recv_action("new_message", timeout=3))["data"]["id"])
            except TimeoutError:
                break
        assert len(received) == len(set(received)), "a message arrived twice"
        assert set(acked) <= set(received), sorted(set(acked) - set(received))
        assert b1.ws.close_code is None  # bob's socket stayed up all along
    for server in (one, two):
        assert "ERROR" not in server.log_path.read_text()


async def test_presence_flips_once_per_user_across_processes(two_servers, make_user, create_chat):
    one, two = two_servers
    alice, bob = await make_user(), await make_user()
    a1 = await open_socket(one.ws_url, alice.headers)
    b2 = await open_socket(two.ws_url, bob.headers)
    await create_chat(a1, [bob], kind="private")
    await b2.recv_action("chat_created")
    # Bob's "online" may or may not be pushed: it races with the chat that makes them partners.
    await a1.assert_silent(0.5)
    a1.presence.clear()
    async with httpx.AsyncClient(base_url=one.url) as http:

        async def online():
            users = (await http.get("/users_list", headers=alice.headers)).json()["users"]
            return next(user["online"] for user in users if user["user_uuid"] == bob.uuid)

        assert await online() is True
        b1 = await open_socket(one.ws_url, bob.headers)  # a second socket: still one "online"
        await b2.close()  # one of two closes: bob stays online
        await a1.assert_silent(1)
        assert a1.presence == [], a1.presence
        assert await online() is True
        await b1.close()
        assert await a1.recv_presence() == {"user_uuid": bob.uuid, "online": False}
        assert await online() is False

        b2 = await open_socket(two.ws_url, bob.headers)
        assert await a1.recv_presence() == {"user_uuid": bob.uuid, "online": True}
        assert await online() is True

        # A process that dies without a word: the other takes it for dead and says so.
        two.process.send_signal(signal.SIGKILL)
        started = time.monotonic()
        assert await a1.recv_presence(timeout=10) == {"user_uuid": bob.uuid, "online": False}
        assert time.monotonic() - started < 5
        assert await online() is False
        await a1.assert_silent(0.5)
        assert a1.presence == []


async def test_presence_finds_partners_by_index_not_by_reading_every_member(fresh_database):
    """After a restart every user comes online at once: publish_presence looks up each one's
    chat partners. It reads their chats' members through the indexes, a few rows per user, not
    the whole of chat_members once per user (as a join planned as a hash did: 2,000 users in
    groups of 5 took 570 ms instead of 55)."""
    import chat

    conn = await asyncpg.connect(fresh_database)
    try:
        await conn.execute(
            "analyze chat_members"
        )  # empty: the statistics are stale from here on, as after a big import
        users = [
            row["id"]
            for row in await conn.fetch(
                "insert into users (name, email, password_hash) "
                "select 'p' || i, 'p' || i || '@example.com', 'x' from generate_series(1, 2000) i returning id"
            )
        ]
        new_chats = "insert into chats (type, name) select 'group', 'g' from generate_series(1, 400) returning id"
        chats = [row["id"] for row in await conn.fetch(new_chats)]
        await conn.execute(
            "insert into chat_members (chat_id, user_id) select unnest($1::int[]), unnest($2::uuid[])",
            [chats[n // 5] for n in range(len(users))],
            users,
        )
        explained = await conn.fetchval(
            f"explain (analyze, format json) {chat.SQL.publish_presence}", users, [True] * len(users)
        )
    finally:
        await conn.close()
    top = orjson.loads(explained)[0]["Plan"]
    read = sum(
        node["Actual Rows"] * node["Actual Loops"]
        for node in plan_nodes(explained)
        if node.get("Relation Name") == "chat_members" and node["Node Type"] != "Bitmap Index Scan"
    )
    assert top["Actual Rows"] == len(users)
    assert read <= 20 * len(users), f"{read:,} rows of chat_members read for {len(users):,} users"
