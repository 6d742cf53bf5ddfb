"""GET /metrics for Prometheus: off without METRICS_TOKEN, an unknown URL without the right
bearer token, figures that move with traffic, and with several workers one sum of them all."""

import asyncio
import os
import signal
import socket
import time
import uuid
from urllib.parse import urlsplit

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from conftest import (
    JWT_SECRET,
    LIMITS,
    PASSWORD,
    Socket,
    open_socket,
    open_sockets_on_every_worker,
    register_and_login,
    running_server,
)

TOKEN = "metrics-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def metrics_server(database_url, tmp_path_factory):
    """`python chat.py` with METRICS_TOKEN set: one process, its figures in memory."""
    log_path = tmp_path_factory.mktemp("metrics") / "server.log"
    env = {"DATABASE_URL": database_url, "JWT_SECRET": JWT_SECRET, "METRICS_TOKEN": TOKEN, **LIMITS}
    with running_server(log_path, **env) as server:
        yield server
    assert "Traceback" not in log_path.read_text()


@pytest.fixture
async def http(metrics_server):
    async with httpx.AsyncClient(base_url=metrics_server.url) as client:
        yield client


class Figures:
    """One scrape, parsed by prometheus_client's own parser: figures("name", label=value...)."""

    def __init__(self, text):
        self.samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def __call__(self, name, **labels):
        return self.samples.get((name, tuple(sorted(labels.items()))), 0)


async def scrape(http, token=TOKEN):
    response = await http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return Figures(response.text)


async def eventually(http, check, seconds=5):
    """A scrape for which check(figures) holds, or the last one tried after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        figures = await scrape(http)
        if check(figures) or time.monotonic() > deadline:
            return figures
        await asyncio.sleep(0.1)


async def test_without_a_token_set_there_is_no_metrics_route(server):
    async with httpx.AsyncClient(base_url=server.url) as http:
        unknown = await http.get("/no-such-route")
        for headers in ({}, {"Authorization": "Bearer anything"}):
            response = await http.get("/metrics", headers=headers)
            assert response.status_code == 404
            assert response.json() == {**unknown.json(), "detail": "Requested URL /metrics not found"}
        assert (await http.post("/metrics", json={})).status_code == 404  # no route for any method


async def test_only_the_right_bearer_token_gets_the_figures(server, metrics_server, http):
    async with httpx.AsyncClient(base_url=server.url) as off:
        absent = await off.get("/metrics")  # a server without the route at all
    wrong = [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ]
    for headers in wrong:
        response = await http.get("/metrics", headers=headers)
        assert (response.status_code, response.json()) == (404, absent.json()), headers
        assert response.headers["content-type"] == absent.headers["content-type"]
    # Not in the query string, where a token ends up in access logs.
    assert (await http.get(f"/metrics?access_token={TOKEN}")).status_code == 404

    response = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    figures = Figures(response.text)
    assert figures("chat_db_pool_max") == 10
    assert figures("chat_db_pool_connections") >= 1
    # A scraper that asks for OpenMetrics gets it.
    accept = {"Accept": "application/openmetrics-text; version=1.0.0"}
    response = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}", **accept})
    assert response.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert response.text.endswith("# EOF\n")
    # And the API docs do not show it.
    assert "/metrics" not in (await http.get("/docs/openapi.json")).text


async def test_figures_move_with_traffic(metrics_server, http):
    before = await scrape(http)
    (alice, alice_headers), (bob, bob_headers) = [await register_and_login(http) for _ in range(2)]
    assert (await http.get("/chats")).status_code == 401
    a = await open_socket(metrics_server.ws_url, alice_headers)
    b = await open_socket(metrics_server.ws_url, bob_headers)

    opened = await scrape(http)
    assert opened("chat_open_sockets") == before("chat_open_sockets") + 2
    assert opened("chat_connected_users") == before("chat_connected_users") + 2

    def moved(name, **labels):
        return after(name, **labels) - before(name, **labels)

    chat = await a.command({"action": "create_chat", "type": "private", "user_ids": [bob]})
    await b.recv_action("chat_created")
    sent = 5
    for n in range(sent):
        reply = await a.command({"action": "send_message", "chat_id": chat["chat"]["id"], "text": f"m{n}"})
        assert reply["action"] == "message_sent"
        await b.recv_action("new_message")
    after = await scrape(http)
    assert moved("chat_messages_stored_total") == sent
    assert moved("chat_frames_delivered_total") >= 1 + sent  # what bob's socket was told, at least
    assert moved("chat_command_seconds_count", action="send_message") == sent
    assert moved("chat_command_seconds_count", action="create_chat") == 1
    assert moved("chat_command_seconds_bucket", action="send_message", le="+Inf") == sent
    assert moved("chat_http_requests_total", route="/register", status="201") == 2
    assert moved("chat_http_requests_total", route="/login", status="200") == 2
    assert moved("chat_http_requests_total", route="/chats", status="401") == 1
    assert moved("chat_http_requests_total", route="/connect", status="101") == 2

    await a.close()
    await b.close()
    after = await eventually(http, lambda f: f("chat_open_sockets") == before("chat_open_sockets"))
    assert after("chat_open_sockets") == before("chat_open_sockets")
    assert after("chat_connected_users") == before("chat_connected_users")
    assert moved("chat_sockets_closed_total", reason="client") == 2
    await http.get("/no-such-route")
    after = await scrape(http)
    assert moved("chat_http_requests_total", route="unmatched", status="404") == 1


async def test_sockets_closed_by_a_password_change_are_counted(metrics_server, http):
    before = await scrape(http)
    _, headers = await register_and_login(http)
    socks = [await open_socket(metrics_server.ws_url, headers) for _ in range(2)]
    body = {"old_password": PASSWORD, "new_password": "battery staple"}
    assert (await http.post("/change_password", json=body, headers=headers)).status_code == 204
    for sock in socks:
        await asyncio.wait_for(sock.ws.wait_closed(), 5)
        assert sock.ws.close_code == 1008
    after = await eventually(http, lambda f: f("chat_open_sockets") == before("chat_open_sockets"))
    closed = after("chat_sockets_closed_total", reason="password_changed")
    assert closed - before("chat_sockets_closed_total", reason="password_changed") == 2
    assert after("chat_open_sockets") == before("chat_open_sockets")


async def _stalled_socket(ws_url, headers):
    """A socket with a small receive buffer that soon stops reading (as in test_slow_consumer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    url = urlsplit(ws_url)
    sock.connect((url.hostname, url.port))
    stalled = Socket(await websockets.connect(ws_url, sock=sock, additional_headers=headers, max_size=None))
    await stalled.recv_action("unread_messages")
    return stalled


async def test_a_slow_reader_dropped_is_counted(metrics_server, http):
    before = await scrape(http)
    (_, alice_headers), (carol, carol_headers) = [await register_and_login(http) for _ in range(2)]
    a = await open_socket(metrics_server.ws_url, alice_headers)
    slow = await _stalled_socket(metrics_server.ws_url, carol_headers)
    chat = (await a.command({"action": "create_chat", "type": "private", "user_ids": [carol]}))["chat"]
    slow.ws.transport.pause_reading()
    count = 3000  # 12 MB for a reader that takes none of it: past its 4 MiB and the kernel's buffers
    for i in range(count):
        await a.send({"action": "send_message", "chat_id": chat["id"], "text": f"{i:08d}" + "x" * 3990})
    for _ in range(count):
        await a.recv_action("message_sent", timeout=30)
    slow.ws.transport.resume_reading()  # the server waits for its close frame to be read
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await slow.recv(timeout=30)
    assert slow.ws.close_code == 1013
    after = await eventually(http, lambda f: f("chat_open_sockets") == before("chat_open_sockets") + 1)
    assert after("chat_messages_stored_total") - before("chat_messages_stored_total") == count
    reason = {"reason": "slow_reader"}
    assert after("chat_sockets_closed_total", **reason) - before("chat_sockets_closed_total", **reason) == 1
    await a.close()


async def test_a_socket_that_answers_no_ping_is_counted(database_url, tmp_path):
    env = {"DATABASE_URL": database_url, "JWT_SECRET": JWT_SECRET, "METRICS_TOKEN": TOKEN, **LIMITS}
    with running_server(tmp_path / "ping.log", WS_PING_SECONDS="0.3", **env) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            _, headers = await register_and_login(http)
            sock = await open_socket(server.ws_url, headers)
            sock.ws.transport.pause_reading()  # pings unread, so never answered
            await asyncio.sleep(1.5)  # a ping, its timeout, and some
            sock.ws.transport.resume_reading()  # the server waits for its close frame to be read
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await sock.recv()
            assert sock.ws.close_code == 1011
            figures = await eventually(http, lambda f: f("chat_sockets_closed_total", reason="ping_timeout") == 1)
            assert figures("chat_sockets_closed_total", reason="ping_timeout") == 1
            assert figures("chat_open_sockets") == 0
    assert "Traceback" not in (tmp_path / "ping.log").read_text()


async def test_the_figures_of_several_workers_add_up(database_url, tmp_path):
    """Every scrape, whichever worker answers it, shows the sum of both workers' figures; a
    worker killed outright leaves the gauges' sums, not the counters'; and the directory they
    share is gone when the server stops."""
    env = {"DATABASE_URL": database_url, "JWT_SECRET": JWT_SECRET, "METRICS_TOKEN": TOKEN, **LIMITS}
    env["TMPDIR"] = str(tmp_path)  # where the server makes the workers' directory
    with running_server(tmp_path / "workers.log", "--workers", "2", **env) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            partner, _ = await register_and_login(http)
            users, socks, holder = await open_sockets_on_every_worker(
                server, database_url, lambda: register_and_login(http), minimum=4
            )

            per_socket = 3
            for sock in socks:  # each stored by the worker that holds the socket
                chat = (await sock.command({"action": "create_chat", "type": "private", "user_ids": [partner]}))["chat"]
                for n in range(per_socket):
                    reply = await sock.command({"action": "send_message", "chat_id": chat["id"], "text": f"m{n}"})
                    assert reply["action"] == "message_sent"
            stored = per_socket * len(socks)

            async def scrape_anew():
                """A scrape on a new connection: it may reach either worker."""
                async with httpx.AsyncClient(base_url=server.url) as fresh:
                    return await scrape(fresh)

            async def eventually_everywhere(check):
                """Ten scrapes in a row, on new connections, for which check holds (gauges are up to 1 s old)."""
                deadline, good = time.monotonic() + 10, 0
                while good < 10:
                    figures = await scrape_anew()
                    good = good + 1 if check(figures) else 0
                    assert time.monotonic() < deadline, figures.samples
                return figures

            def all_there(f):
                return (
                    f("chat_open_sockets") == len(socks)
                    and f("chat_connected_users") == len(socks)
                    and f("chat_db_pool_max") == 20
                    and f("chat_messages_stored_total") == stored
                    and f("chat_command_seconds_count", action="send_message") == stored
                    and f("chat_http_requests_total", route="/connect", status="101") == len(socks)
                )

            await eventually_everywhere(all_there)

            # A worker killed outright: its gauges leave the sums, its counters stay in them.
            victim = sorted(set(holder.values()))[0]  # process_id: "chat <pid> <random>"
            os.kill(int(victim.split()[1]), signal.SIGKILL)
            survivors = [sock for sock, user in zip(socks, users, strict=True) if holder[user] != victim]
            figures = await eventually_everywhere(lambda f: f("chat_open_sockets") == len(survivors))
            assert figures("chat_connected_users") == len(survivors)
            assert figures("chat_db_pool_max") == 10
            assert figures("chat_messages_stored_total") == stored
            assert figures("chat_command_seconds_count", action="send_message") == stored

            for sock in survivors:
                await sock.close()
            figures = await eventually_everywhere(lambda f: f("chat_open_sockets") == 0)
            assert figures("chat_sockets_closed_total", reason="client") == len(survivors)
            assert figures("chat_messages_stored_total") == stored
            for sock in socks:
                sock.ws.transport.abort()  # those of the killed worker
        assert list(tmp_path.glob("chat-metrics-*")) != []
    assert list(tmp_path.glob("chat-metrics-*")) == []  # removed with the server
    assert "Traceback" not in (tmp_path / "workers.log").read_text()
