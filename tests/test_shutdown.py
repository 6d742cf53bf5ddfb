"""Stopping the server: commands in flight finish, sockets close with 1001, the process exits in seconds."""

import asyncio
import signal
import time

import pytest

from conftest import JWT_SECRET, open_socket, running_server


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
async def test_stop_finishes_commands_in_flight_then_closes_with_1001(
    stop_signal, database_url, tmp_path, make_user, db
):
    env = {"DATABASE_URL": database_url, "JWT_SECRET": JWT_SECRET, "RATE_BURST": "100000"}
    with running_server(tmp_path / "server.log", **env) as server:
        alice, bob = await make_user(), await make_user()
        senders = [await open_socket(server.ws_url, alice.headers) for _ in range(5)]
        b = await open_socket(server.ws_url, bob.headers)
        reply = await senders[0].command({"action": "create_chat", "type": "private", "user_ids": [bob.uuid]})
        chat_id = reply["chat"]["id"]
        await b.recv_action("chat_created")

        for n in range(20):  # some of them in flight when the signal lands, the rest refused
            for i, sock in enumerate(senders):
                await sock.send({"action": "send_message", "chat_id": chat_id, "text": f"last words {i}.{n}"})
        acked = [(await senders[0].recv_action("message_sent"))["data"]["text"]]  # the server is at work
        server.process.send_signal(stop_signal)
        started = time.monotonic()

        for sock in senders:
            while True:  # replies (and own-message pushes) until the close
                try:
                    frame = await sock.recv()
                except Exception:  # the close: ConnectionClosedOK with 1001
                    break
                if frame["action"] == "message_sent":
                    acked.append(frame["data"]["text"])
                else:
                    assert frame["action"] in ("chat_created", "new_message", "error"), frame
                    assert frame["action"] != "error" or frame["error"] == "unavailable", frame
            assert sock.ws.close_code == 1001
        await asyncio.wait_for(b.ws.wait_closed(), 5)
        assert b.ws.close_code == 1001
        assert await asyncio.to_thread(server.process.wait, 10) == 0
        assert time.monotonic() - started < 5, "took too long to stop"

        stored = {row["text"] for row in await db.fetch("select text from messages where chat_id = $1", chat_id)}
        assert set(acked) <= stored  # an acknowledged message is never lost
        assert len(acked) > 1, "no command in flight got to finish"
        log = server.log_path.read_text()
        assert "Traceback" not in log, log
