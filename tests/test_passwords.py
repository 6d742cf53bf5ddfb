"""change_password retires older tokens and sockets; logins cost one bcrypt check either way;
secrets stay out of the log."""

import os
import sys

import pytest
import websockets

from conftest import JWT_SECRET, PASSWORD

NEW_PASSWORD = "battery staple"


async def test_change_password_retires_older_tokens_and_sockets(http, make_user, connect):
    user = await make_user()
    sock = await connect(user)
    change = {"old_password": PASSWORD, "new_password": NEW_PASSWORD}
    response = await http.post("/change_password", json=change, headers=user.headers)
    assert response.status_code == 204
    await sock.ws.wait_closed()
    assert sock.ws.close_code == 1008
    assert (await http.get("/users_list", headers=user.headers)).status_code == 401
    old_login = await http.post("/login", json={"email": user.email, "password": PASSWORD})
    assert old_login.status_code == 401
    login = await http.post("/login", json={"email": user.email, "password": NEW_PASSWORD})
    assert login.status_code == 200
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    assert (await http.get("/users_list", headers=headers)).status_code == 200


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"old_password": "wrong password", "new_password": NEW_PASSWORD}, 403, "invalid_credentials"),
        ({"old_password": PASSWORD, "new_password": "short"}, 400, "invalid_request"),
        ({"old_password": PASSWORD, "new_password": "é" * 37}, 400, "invalid_request"),
        ({"old_password": PASSWORD}, 400, "invalid_request"),
    ],
)
def test_bad_password_change_changes_nothing(client, sql, new_user, change, status, code):
    user = new_user()
    stored = sql.fetchval("select password_hash from users where email = $1", user.email)
    _, response = client.post("/change_password", json=change, headers=user.headers)
    assert (response.status, response.json["error"]) == (status, code)
    assert sql.fetchval("select password_hash from users where email = $1", user.email) == stored
    _, response = client.get("/users_list", headers=user.headers)
    assert response.status == 200


def test_change_password_needs_a_token(client):
    _, response = client.post("/change_password", json={"old_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert response.status == 401


def test_unknown_email_costs_the_same_bcrypt_check(monkeypatch):
    """The code path, not the stopwatch: every login runs bcrypt.checkpw exactly once."""
    import chat

    real_checkpw, checked = chat.bcrypt.checkpw, []

    def counting_checkpw(password, hashed):
        checked.append(hashed)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(chat.bcrypt, "checkpw", counting_checkpw)
    known = chat.bcrypt.hashpw(PASSWORD.encode(), chat.bcrypt.gensalt(4))
    assert chat._check_password(PASSWORD.encode(), known) is True
    assert chat._check_password(b"wrong password", known) is False
    assert chat._check_password(PASSWORD.encode(), None) is False  # unknown email
    assert chat._check_password(b"a" * 73, known) is False  # too long for bcrypt
    assert checked == [known, known, chat._dummy_hash(), chat._dummy_hash()]
    # The dummy hash costs what a real one costs.
    assert chat._dummy_hash()[:7] == f"$2b${chat.BCRYPT_ROUNDS:02d}$".encode()


@pytest.mark.skipif(sys.platform != "linux", reason="SCHED_IDLE is Linux's")
async def test_bcrypt_runs_on_idle_cpu_only_in_as_many_threads_as_cores():
    """A login storm may take the cores delivery leaves idle, never delivery's share."""
    import chat

    assert await chat.BCRYPT.run(os.sched_getscheduler, 0) == os.SCHED_IDLE  # 0: the calling thread
    assert chat.BCRYPT.threads == (int(os.environ.get("BCRYPT_THREADS", "0")) or os.cpu_count())


async def test_secrets_never_reach_the_log(server, http, make_user, connect):
    user = await make_user()
    await connect(user)
    await http.post("/login", json={"email": user.email, "password": "a wrong password"})
    await http.get("/users_list", params={"access_token": user.token})
    with pytest.raises(websockets.InvalidStatus):
        await websockets.connect(f"{server.ws_url}?access_token=forged.{user.token}")
    log = server.log_path.read_text()
    for secret in (PASSWORD, "a wrong password", user.token, JWT_SECRET):
        assert secret not in log
