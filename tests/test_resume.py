"""Resume after a reconnect, against live servers: `/connect?since=<cursor>` tells a client
every stream frame it missed, exactly once, on one process or another; a cursor that cannot
be resumed says so (`resumed: false`) and nothing else goes wrong."""

import asyncio
import uuid
from types import SimpleNamespace

import asyncpg
import httpx
import orjson
import pytest

from conftest import JWT_SECRET, LIMITS, open_socket, plan_nodes, register_and_login, running_server


async def _reconnect(ws_url, user, cursor):
    """A socket of `user` that resumes from `cursor`; its unread frame is in `.first`."""
    return await open_socket(f"{ws_url}?since={cursor}", user.headers)


async def _frames(sock, seconds=0.5):
    """Every non-presence frame that arrives within `seconds` of the one before."""
    frames = []
    try:
        while True:
            frames.append(await sock.recv(seconds))
    except TimeoutError:
        return frames


async def test_a_client_away_is_told_everything_it_missed_in_order(server, db, make_user, connect, create_chat):
    alice, bob, carol = await make_user(), await make_user(), await make_user()
    a, b, c = await connect(alice), await connect(bob), await connect(carol)
    group = await create_chat(a, [bob, carol], kind="group", name="team")
    for sock in (b, c):
        await sock.recv_action("chat_created")
    mine = (await b.command({"action": "send_message", "chat_id": group["id"], "text": "bob's"}))["data"]
    await c.recv_action("new_message")
    await a.recv_action("new_message")
    await asyncio.sleep(0.2)
    # bob's laptop lid closes here. (His socket saw "bob's" as its reply, not as a push: the
    # cursor of a fresh socket's unread frame is past it, as a client's would be by then.)
    tab = await connect(bob)
    cursor = tab.first["cursor"]
    for sock in (b, tab):
        await sock.close()

    # While bob is away, every kind of stream event of his happens.
    sent = (await a.command({"action": "send_message", "chat_id": group["id"], "text": "while away"}))["data"]
    edited = (await a.command({"action": "edit_message", "message_id": sent["id"], "text": "edited away"}))["data"]
    gone = (await a.command({"action": "send_message", "chat_id": group["id"], "text": "oops"}))["data"]
    await a.command({"action": "delete_message", "message_id": gone["id"]})
    for sock in (a, c):
        await sock.command({"action": "mark_read", "message_ids": [mine["id"]]})
    private = (await c.command({"action": "create_chat", "type": "private", "user_ids": [bob.uuid]}))["chat"]
    other = await create_chat(a, [carol], kind="group", name="other")
    added = await a.command({"action": "add_members", "chat_id": other["id"], "user_ids": [bob.uuid]})
    renamed = await a.command({"action": "rename_chat", "chat_id": group["id"], "name": "team 2"})
    await a.send({"action": "typing", "chat_id": group["id"]})  # ephemeral: never resumed (and no reply)
    await a.command({"action": "remove_member", "chat_id": other["id"], "user_id": bob.uuid})

    back = await _reconnect(server.ws_url, bob, cursor)
    assert back.first["resumed"] is True
    assert [m["id"] for m in back.unread] == [sent["id"]]  # still unread, with its current text
    assert back.unread[0]["text"] == "edited away"
    missed = await _frames(back)
    assert [(f["action"], f.get("data") or f.get("chat") or f.get("chat_id")) for f in missed] == [
        ("new_message", {**sent, "text": "edited away", "edited_at": edited["edited_at"]}),
        ("message_edited", edited),
        # "oops" was deleted before bob was back: its new_message is not news, its deletion is.
        ("message_deleted", {"id": gone["id"], "chat_id": group["id"]}),
        ("messages_read", [{"id": mine["id"], "chat_id": group["id"]}]),
        ("chat_created", private),
        ("chat_updated", added["chat"]),
        ("chat_updated", renamed["chat"]),
        ("chat_removed", other["id"]),
    ]
    assert back.first["missed"] == len(missed)  # these frames are the resume; live ones follow them
    cursors = [frame["cursor"] for frame in missed]
    assert len(set(cursors)) == len(cursors) and cursor not in cursors

    # From the last cursor, nothing more is missed; live frames follow as usual.
    again = await _reconnect(server.ws_url, bob, cursors[-1])
    assert again.first["resumed"] is True and again.first["cursor"] == cursors[-1]
    assert await _frames(again, 0.3) == []
    live = (await a.command({"action": "send_message", "chat_id": group["id"], "text": "live"}))["data"]
    for sock in (back, again):
        assert (await sock.recv_action("new_message"))["data"] == live


async def test_what_another_device_read_comes_in_the_resume_and_not_as_unread(server, make_user, connect):
    alice, bob = await make_user(), await make_user()
    a, phone, laptop = await connect(alice), await connect(bob), await connect(bob)
    chat = (await a.command({"action": "create_chat", "type": "private", "user_ids": [bob.uuid]}))["chat"]
    cursor = (await laptop.recv_action("chat_created"))["cursor"]
    await laptop.close()
    await phone.recv_action("chat_created")
    read, unread = [
        (await a.command({"action": "send_message", "chat_id": chat["id"], "text": text}))["data"]
        for text in ("read on the phone", "not yet read")
    ]
    await phone.command({"action": "mark_read", "message_ids": [read["id"]]})
    back = await _reconnect(server.ws_url, bob, cursor)
    assert [m["id"] for m in back.unread] == [unread["id"]]
    missed = await _frames(back)
    assert back.first["missed"] == 2
    assert [f["data"]["id"] for f in missed if f["action"] == "new_message"] == [read["id"], unread["id"]]


@pytest.mark.parametrize(
    "since", ["", "garbage", "0", "abc.12", "00000000.5", "EPOCH.-1", "EPOCH.1.x", "EPOCH.99999999999999"]
)
async def test_a_cursor_that_cannot_be_resumed_says_so(server, db, make_user, connect, create_chat, since):
    """Malformed, empty, of another database or from its future: `resumed: false`, never an error."""
    alice, bob = await make_user(), await make_user()
    a = await connect(alice)
    chat = await create_chat(a, [bob], kind="private")
    sent = (await a.command({"action": "send_message", "chat_id": chat["id"], "text": "unread"}))["data"]
    epoch = await db.fetchval("select epoch from stream")
    back = await _reconnect(server.ws_url, bob, since.replace("EPOCH", epoch))
    assert (back.first["resumed"], back.unread) == (False, [sent])
    assert back.first["cursor"].startswith(f"{epoch}.")
    assert await _frames(back, 0.3) == []
    reply = await back.command({"action": "send_message", "chat_id": chat["id"], "text": "still works"})
    assert reply["action"] == "message_sent"


async def test_a_cursor_older_than_the_events_kept_is_not_resumed(server, db, make_user, connect, create_chat):
    alice, bob = await make_user(), await make_user()
    a, b = await connect(alice), await connect(bob)
    chat = await create_chat(a, [bob], kind="private")
    cursor = (await b.recv_action("chat_created"))["cursor"]
    await a.command({"action": "send_message", "chat_id": chat["id"], "text": "gone from the log"})
    # As pruning would: the events after the cursor are forgotten.
    before = await db.fetchval("select pruned_through from stream")
    await db.execute("update stream set pruned_through = (select max(id) from events)")
    try:
        back = await _reconnect(server.ws_url, bob, cursor)
        assert back.first["resumed"] is False and len(back.unread) == 1
        assert await _frames(back, 0.3) == []
    finally:
        await db.execute("update stream set pruned_through = $1", before)


async def test_an_event_that_commits_late_under_a_smaller_id_is_not_skipped(server, database_url, make_user, connect):
    """Event ids are handed out in order but commit out of order: an event that took id X, and
    commits after one with a larger id was pushed, still reaches a client that resumes from
    the cursor of that push. A cursor that were just "the last id told" would skip it."""
    alice, bob = await make_user(), await make_user()
    a, b = await connect(alice), await connect(bob)
    chat = (await a.command({"action": "create_chat", "type": "private", "user_ids": [bob.uuid]}))["chat"]
    await b.recv_action("chat_created")
    late = await asyncpg.connect(database_url)
    try:
        transaction = late.transaction()
        await transaction.start()
        # Takes its id now, commits later: a transaction of another process, slow to commit.
        frame = {"action": "message_deleted", "data": {"id": 1, "chat_id": chat["id"]}}
        await late.execute(
            "insert into events (user_ids, frame) values ($1, $2)", [uuid.UUID(bob.uuid)], orjson.dumps(frame).decode()
        )
        sent = (await a.command({"action": "send_message", "chat_id": chat["id"], "text": "after"}))["data"]
        pushed = await b.recv_action("new_message")
        assert pushed["data"] == sent
        await b.close()
        await transaction.commit()
    finally:
        await late.close()
    back = await _reconnect(server.ws_url, bob, pushed["cursor"])
    assert back.first["resumed"] is True
    missed = await _frames(back)
    assert [{k: v for k, v in f.items() if k != "cursor"} for f in missed] == [frame]


async def test_events_committed_during_a_resume_arrive_exactly_once(server, make_user, connect, create_chat):
    """bob's phone keeps sending while his laptop reconnects from an old cursor, again and
    again: each message reaches each new laptop socket once, through the resume or live,
    never both and never neither. (His own messages are in no unread list, so nothing but the
    resume's own care keeps a message committed during the resume from coming twice.)"""
    alice, bob = await make_user(), await make_user()
    phone, laptop = await connect(bob), await connect(bob)
    chat = await create_chat(phone, [alice], kind="private")
    cursor = (await laptop.recv_action("chat_created"))["cursor"]
    await laptop.close()
    sockets, stop = [], asyncio.Event()

    async def keep_sending():
        sent = []
        while not stop.is_set():
            reply = await phone.command({"action": "send_message", "chat_id": chat["id"], "text": f"m{len(sent)}"})
            sent.append(reply["data"]["id"])
        return sent

    sending = asyncio.create_task(keep_sending())
    for _ in range(8):  # with the phone: under MAX_SOCKETS_PER_USER
        await asyncio.sleep(0.03)
        sockets.append(await _reconnect(server.ws_url, bob, cursor))
    await asyncio.sleep(0.1)
    stop.set()
    sent = await sending
    for sock in sockets:
        told = [f["data"]["id"] for f in await _frames(sock) if f["action"] == "new_message"]
        assert sorted(told) == sent, "each message exactly once on each socket"
        await sock.close()


async def test_resume_on_another_process(two_servers, make_user, create_chat):
    """Away from process one, back on process two."""
    one, two = two_servers
    alice, bob = await make_user(), await make_user()
    a = await open_socket(one.ws_url, alice.headers)
    b = await open_socket(one.ws_url, bob.headers)
    chat = await create_chat(a, [bob], kind="private")
    cursor = (await b.recv_action("chat_created"))["cursor"]
    await b.close()
    sent = (await a.command({"action": "send_message", "chat_id": chat["id"], "text": "hi"}))["data"]
    edited = (await a.command({"action": "edit_message", "message_id": sent["id"], "text": "hello"}))["data"]
    back = await _reconnect(two.ws_url, bob, cursor)
    assert back.first["resumed"] is True
    missed = await _frames(back)
    assert [(f["action"], f["data"]["id"]) for f in missed] == [
        ("new_message", sent["id"]),
        ("message_edited", sent["id"]),
    ]
    assert missed[1]["data"] == edited
    await a.close()
    await back.close()


async def test_old_events_are_pruned_and_their_cursors_not_resumed(fresh_database, tmp_path):
    """EVENT_RETENTION_HOURS: older events are deleted, and a cursor from before them is not resumed."""
    env = {"DATABASE_URL": fresh_database, "JWT_SECRET": JWT_SECRET, **LIMITS}
    env.update(EVENT_RETENTION_HOURS=str(1 / 3600), HEARTBEAT_SECONDS="0.3")  # one second, pruned often
    with running_server(tmp_path / "server.log", **env) as short:
        async with httpx.AsyncClient(base_url=short.url) as http:
            alice, bob = [SimpleNamespace(uuid=u, headers=h) for u, h in [await register_and_login(http) for _ in "ab"]]
        a = await open_socket(short.ws_url, alice.headers)
        b = await open_socket(short.ws_url, bob.headers)
        reply = await a.command({"action": "create_chat", "type": "private", "user_ids": [bob.uuid]})
        cursor = (await b.recv_action("chat_created"))["cursor"]
        await b.close()
        await a.command({"action": "send_message", "chat_id": reply["chat"]["id"], "text": "soon forgotten"})
        fresh = await _reconnect(short.ws_url, bob, cursor)
        assert fresh.first["resumed"] is True  # not yet pruned
        conn = await asyncpg.connect(fresh_database)
        try:
            for _ in range(100):
                await asyncio.sleep(0.1)
                if not await conn.fetchval("select count(*) from events where frame ->> 'action' <> 'presence'"):
                    break
            else:
                pytest.fail("nothing was pruned")
        finally:
            await conn.close()
        late = await _reconnect(short.ws_url, bob, cursor)
        assert late.first["resumed"] is False and len(late.unread) == 1
        for sock in (a, fresh, late):
            await sock.close()


@pytest.mark.parametrize("plan", ["force_custom_plan", "force_generic_plan"])
async def test_a_resume_reads_only_the_users_own_events(fresh_database, plan):
    """The resume query finds one user's events through the GIN index on user_ids, whatever the
    statistics say and whatever the plan (a pooled connection runs PostgreSQL's generic plan
    after five runs): here the statistics were taken while the table was empty, and 200,000
    events of other people came after. Not one of theirs is read."""
    import chat

    conn = await asyncpg.connect(fresh_database)
    try:
        await conn.execute("analyze events")  # empty: the statistics are stale from here on
        me = uuid.uuid4()
        await conn.execute(
            """
            insert into events (user_ids, frame)
            select case when i % 2000 = 0 then array[$1::uuid, gen_random_uuid()]
                        else array[gen_random_uuid(), gen_random_uuid(), gen_random_uuid()] end,
                   '{"action": "chat_updated", "chat": {}}'
            from generate_series(1, 200000) i
            """,
            me,
        )
        mine = await conn.fetchval("select count(*) from events where user_ids @> array[$1::uuid]", me)
        await conn.execute(f"set plan_cache_mode = {plan}")
        await conn.execute(f"prepare resume (uuid, bigint, bigint, int) as {chat.SQL.list_user_events}")
        explained = await conn.fetchval(f"explain (analyze, buffers, format json) execute resume('{me}', 0, 0, 5000)")
    finally:
        await conn.close()
    top = orjson.loads(explained)[0]["Plan"]
    on_events = [node for node in plan_nodes(explained) if node.get("Relation Name") == "events"]
    assert [node["Node Type"] for node in on_events] == ["Bitmap Heap Scan"], on_events
    assert "events_user_ids" in orjson.dumps(top).decode()
    removed = sum(
        node.get("Rows Removed by Filter", 0) + node.get("Rows Removed by Index Recheck", 0) for node in on_events
    )
    assert (mine, on_events[0]["Actual Rows"], removed, top["Actual Rows"]) == (100, 100, 0, 100)
