"""PostgreSQL going away: 503 and `unavailable` meanwhile, no restart needed after, nothing
acknowledged lost. These tests stop and start a PostgreSQL of their own."""

import asyncio
import time

import asyncpg
import httpx
import pytest
import websockets

from conftest import JWT_SECRET, PASSWORD, open_socket, register_and_login, running_server


@pytest.fixture
def outage_server(own_database, tmp_path):
    env = {"DATABASE_URL": own_database.get_uri(), "JWT_SECRET": JWT_SECRET, "RATE_BURST": "100000"}
    with running_server(tmp_path / "server.log", **env) as server:
        yield server
        assert server.process.poll() is None, "the server died"
    # asyncpg warns (with a traceback) while it retries; an error of ours would be logged as ERROR.
    assert "ERROR" not in server.log_path.read_text()


async def test_outage_answers_unavailable_and_heals_without_a_restart(own_database, outage_server):
    async with httpx.AsyncClient(base_url=outage_server.url) as http:
        (_, alice_headers), (bob, bob_headers) = await register_and_login(http), await register_and_login(http)
        a = await open_socket(outage_server.ws_url, alice_headers)
        b = await open_socket(outage_server.ws_url, bob_headers)
        chat = (await a.command({"action": "create_chat", "type": "private", "user_ids": [bob]}))["chat"]
        await b.recv_action("chat_created")

        own_database.stop()
        response = await http.get("/users_list", headers=alice_headers)
        assert response.status_code == 503
        assert response.json()["error"] == "unavailable"
        assert (await http.post("/login", json={"email": "x@example.com", "password": PASSWORD})).status_code == 503
        reply = await a.command({"action": "send_message", "chat_id": chat["id"], "text": "into the void"})
        assert (reply["action"], reply["error"]) == ("error", "unavailable")
        with pytest.raises(websockets.InvalidStatus) as caught:
            await websockets.connect(outage_server.ws_url, additional_headers=alice_headers)
        assert caught.value.response.status_code == 503

        own_database.start()
        deadline = time.monotonic() + 15
        while (await http.get("/users_list", headers=alice_headers)).status_code != 200:
            assert time.monotonic() < deadline, "the server did not recover"
            await asyncio.sleep(0.2)
        reply = await a.command({"action": "send_message", "chat_id": chat["id"], "text": "back again"})
        assert reply["action"] == "message_sent"
        assert (await b.recv_action("new_message"))["data"]["text"] == "back again"
        assert [m["text"] for m in (await open_socket(outage_server.ws_url, bob_headers)).unread] == ["back again"]


async def test_every_acknowledged_message_survives_an_outage_mid_send(own_database, outage_server):
    async with httpx.AsyncClient(base_url=outage_server.url) as http:
        (_, headers), (bob, _) = await register_and_login(http), await register_and_login(http)
        senders = [await open_socket(outage_server.ws_url, headers) for _ in range(4)]
        chat = (await senders[0].command({"action": "create_chat", "type": "private", "user_ids": [bob]}))["chat"]
        outcomes = {}  # text -> the reply it got

        async def send_all(n, sock):
            for i in range(120):
                text = f"{n}-{i}"
                await sock.send({"action": "send_message", "chat_id": chat["id"], "text": text, "request_id": text})
                while True:  # skip the other tabs' new_message pushes
                    reply = await sock.recv(timeout=15)
                    if reply.get("request_id") == text:
                        outcomes[text] = reply
                        break
                # A refused send waits a little before the next, as a client would: the
                # refusals then spread over the outage instead of using up all 120 at once.
                await asyncio.sleep(0.05 if reply["action"] == "error" else 0.005)

        async def outage():
            await asyncio.sleep(0.3)
            await asyncio.to_thread(own_database.stop)
            await asyncio.sleep(1)
            await asyncio.to_thread(own_database.start)

        await asyncio.gather(outage(), *(send_all(n, sock) for n, sock in enumerate(senders)))

    acked = {text: r["data"]["id"] for text, r in outcomes.items() if r["action"] == "message_sent"}
    failed = [r for r in outcomes.values() if r["action"] == "error"]
    assert len(outcomes) == 480
    assert failed, "the outage should have refused some sends"
    assert {r["error"] for r in failed} == {"unavailable"}
    assert len(acked) > 100
    conn = await asyncpg.connect(own_database.get_uri())
    rows = await conn.fetch("select id, text from messages where chat_id = $1", chat["id"])
    await conn.close()
    stored = {row["text"]: row["id"] for row in rows}
    assert {text: stored.get(text) for text in acked} == acked
