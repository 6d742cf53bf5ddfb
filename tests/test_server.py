"""The whole process: `make run`'s embedded database, the stored secret, bcrypt off the event loop."""

import asyncio
import os
import stat
import subprocess
import sys
import uuid

import httpx
import pytest

from conftest import PASSWORD, ROOT, running_server


def test_embedded_database_and_generated_secret_survive_a_restart(tmp_path):
    """No DATABASE_URL and no JWT_SECRET, as in `make run`: data and tokens outlive the process."""
    data_dir = tmp_path / "data"
    env = {"DATABASE_URL": None, "JWT_SECRET": None, "CHAT_DATA_DIR": str(data_dir)}
    email = f"{uuid.uuid4().hex}@example.com"
    with running_server(tmp_path / "first.log", **env) as server, httpx.Client(base_url=server.url) as http:
        assert http.post("/register", json={"name": "Ada", "email": email, "password": PASSWORD}).status_code == 201
        token = http.post("/login", json={"email": email, "password": PASSWORD}).json()["access_token"]
    secret = data_dir / "jwt_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert len(bytes.fromhex(secret.read_text())) >= 32
    assert sorted(p.name for p in data_dir.iterdir()) == ["jwt_secret", "pgdata"], "a draft of the secret was left"
    with running_server(tmp_path / "second.log", **env) as server, httpx.Client(base_url=server.url) as http:
        assert http.get("/users_list", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert http.post("/login", json={"email": email, "password": PASSWORD}).status_code == 200


@pytest.mark.parametrize(
    ("file", "env"),
    [("", None), ("0123456789abcdef", None), (None, "s" * 31)],
    ids=["empty-file", "short-file", "short-env"],
)
def test_a_short_jwt_secret_stops_the_server_at_once(database_url, tmp_path, file, env):
    """An empty secret file (a crash while it was written) or a short key: a clear message and exit 1."""
    if file is not None:
        (tmp_path / "jwt_secret").write_text(file)
    environment = {**os.environ, "DATABASE_URL": database_url, "CHAT_DATA_DIR": str(tmp_path), "PORT": "1"}
    environment.pop("JWT_SECRET", None)
    if env is not None:
        environment["JWT_SECRET"] = env
    result = subprocess.run([sys.executable, "chat.py"], cwd=ROOT, env=environment, capture_output=True, timeout=60)
    assert result.returncode == 1
    message = result.stderr.decode()
    assert "JWT secret" in message and "needs 32" in message, message
    assert "Traceback" not in message, message
    if file is not None:
        assert (tmp_path / "jwt_secret").read_text() == file, "the server overwrote the operator's file"


async def test_logins_do_not_stall_other_requests(database_url, tmp_path):
    """bcrypt at cost 14 takes about a second; it runs in threads, so a cheap request is not held up."""
    env = {"DATABASE_URL": database_url, "JWT_SECRET": "s" * 64, "BCRYPT_ROUNDS": "14"}
    with running_server(tmp_path / "server.log", **env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            body = {"email": "nobody@example.com", "password": PASSWORD}
            logins = [asyncio.create_task(http.post("/login", json=body)) for _ in range(2)]
            await asyncio.sleep(0.1)  # both logins are hashing now
            cheap = await http.get("/users_list")
            assert cheap.status_code == 401
            assert not any(login.done() for login in logins), "a cheap request waited for bcrypt"
            assert [(await login).status_code for login in logins] == [401, 401]
