"""The whole process: `make run`'s embedded database, the stored secret, bcrypt off the event loop."""

import asyncio
import stat
import uuid

import httpx

from conftest import PASSWORD, running_server


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
    with running_server(tmp_path / "second.log", **env) as server, httpx.Client(base_url=server.url) as http:
        assert http.get("/users_list", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert http.post("/login", json={"email": email, "password": PASSWORD}).status_code == 200


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
