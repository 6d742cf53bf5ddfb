"""/healthz and /readyz: what a load balancer asks, answered during a PostgreSQL outage and
during shutdown (live servers), with no token and no rate limit."""

import asyncio
import signal
import time

import httpx
import pytest

from conftest import JWT_SECRET, LIMITS, open_socket, register_and_login, running_server


def test_a_running_process_is_alive_and_ready(client):
    _, response = client.get("/healthz")
    assert (response.status, response.json) == (200, {"status": "ok"})
    _, response = client.get("/readyz")
    assert (response.status, response.json) == (200, {"status": "ready"})


def test_probes_are_not_rate_limited(client):
    """A balancer calls them every second from one address; the login limit is 60 a minute here too."""
    statuses = {client.get(path)[1].status for path in ("/healthz", "/readyz") * 100}
    assert statuses == {200}


async def _until(condition, seconds=10):
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.1)


async def test_not_ready_while_postgresql_is_away(own_database, tmp_path):
    env = {"DATABASE_URL": own_database.get_uri(), "JWT_SECRET": JWT_SECRET, **LIMITS}
    with running_server(tmp_path / "server.log", **env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
            assert (await http.get("/readyz")).json() == {"status": "ready"}
            own_database.stop()  # PostgreSQL goes away under the running server

            async def unready():
                started = time.monotonic()
                response = await http.get("/readyz")
                assert time.monotonic() - started < 2, "a probe must answer quickly"
                return response.status_code == 503

            await _until(unready)
            assert (await http.get("/readyz")).json()["error"] == "unavailable"
            assert (await http.get("/healthz")).json() == {"status": "ok"}  # alive all the same

            own_database.start()

            async def ready():
                return (await http.get("/readyz")).status_code == 200

            await _until(ready, 30)


@pytest.mark.parametrize("probe", ["/readyz", "/healthz"])
async def test_a_stopping_process_is_unready_before_its_sockets_close(database_url, db, tmp_path, probe):
    """SIGTERM with a send in flight: /readyz says 503 while the socket is still open (and
    /healthz still 200), then the send finishes and the socket closes with 1001."""
    env = {"DATABASE_URL": database_url, "JWT_SECRET": JWT_SECRET, "SHUTDOWN_GRACE_SECONDS": "5", **LIMITS}
    with running_server(tmp_path / "server.log", **env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
            (_, alice_headers), (bob, _) = await register_and_login(http), await register_and_login(http)
            a = await open_socket(server.ws_url, alice_headers)
            chat = (await a.command({"action": "create_chat", "type": "private", "user_ids": [bob]}))["chat"]
            async with db.transaction():
                await db.execute("lock table messages in exclusive mode")  # the send waits on this
                await a.send({"action": "send_message", "chat_id": chat["id"], "text": "in flight"})
                await asyncio.sleep(0.3)
                server.process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.3)
                response = await http.get(probe)
                if probe == "/readyz":
                    assert (response.status_code, response.json()["error"]) == (503, "unavailable")
                else:
                    assert (response.status_code, response.json()) == (200, {"status": "ok"})
                assert a.ws.close_code is None, "the socket closed before a balancer could know"
            assert (await a.recv_action("message_sent"))["data"]["text"] == "in flight"
            await asyncio.wait_for(a.ws.wait_closed(), 10)
            assert a.ws.close_code == 1001
