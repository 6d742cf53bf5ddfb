"""Backups: `make backup` and `make restore` (backup.py, run here as `make` runs it), on the
embedded PostgreSQL of a data directory and on a database named by DATABASE_URL."""

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import asyncpg
import bcrypt
import httpx
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from test_restarts import gone, kill9_postgres, postmasters

from backup import BIN as PG_BIN
from conftest import JWT_SECRET, LIMITS, PASSWORD, ROOT, _run_sync, open_socket, run_alembic, running_server

HEAD = ScriptDirectory.from_config(Config(ROOT / "alembic.ini")).get_current_head()


def backup_py(*args, **env):
    """`python backup.py *args` with this environment (None: unset), as `make backup` and `make restore` run it."""
    env = {key: value for key, value in {**os.environ, **env}.items() if value is not None}
    argv = [sys.executable, "backup.py", *args]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def backed_up(**env):
    """Back up; the path of the new dump."""
    result = backup_py("backup", **env)
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip())


def dumped_sql(dump):
    """A dump as SQL, by the embedded PostgreSQL's pg_restore."""
    return subprocess.run([PG_BIN / "pg_restore", "--file=-", dump], capture_output=True, check=True).stdout.decode()


async def sign_up(http, name):
    """Register and log in: the user's uuid, email and auth headers."""
    email = f"{name.lower()}@example.com"
    response = await http.post("/register", json={"name": name, "email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return await log_in(http, email)


async def log_in(http, email):
    response = await http.post("/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
    return SimpleNamespace(uuid=response.json()["user_uuid"], email=email, headers=headers)


@pytest.fixture
def data_dirs(tmp_path):
    """`make run`'s environment on two data directories of the test's own, old and new, with
    backups in a directory of the test's own too; their PostgreSQL is killed afterwards, pass or fail."""
    common = {"DATABASE_URL": None, "JWT_SECRET": None, "BACKUP_DIR": str(tmp_path / "backups"), **LIMITS}
    dirs = SimpleNamespace(
        old={**common, "CHAT_DATA_DIR": str(tmp_path / "old")},
        new={**common, "CHAT_DATA_DIR": str(tmp_path / "new")},
        old_pgdata=tmp_path.resolve() / "old" / "pgdata",
        new_pgdata=tmp_path.resolve() / "new" / "pgdata",
    )
    yield dirs
    kill9_postgres(dirs.old_pgdata)
    kill9_postgres(dirs.new_pgdata)


async def test_a_backup_restored_into_a_fresh_data_dir_has_the_accounts_history_and_unread(
    data_dirs, tmp_path, create_chat
):
    """Backed up while the server runs (its PostgreSQL left running) and while it does not (the
    PostgreSQL started for it and stopped again); restored into a fresh data directory, where
    the old password logs in, and history and the unread frame are what they were."""
    with running_server(tmp_path / "old.log", **data_dirs.old) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            alice, bob = await sign_up(http, "Alice"), await sign_up(http, "Bob")
        a, b = await open_socket(server.ws_url, alice.headers), await open_socket(server.ws_url, bob.headers)
        chat = await create_chat(a, [bob], kind="private")
        sent = []
        for text in ("one", "two", "three"):
            sent.append((await a.command({"action": "send_message", "chat_id": chat["id"], "text": text}))["data"])
        await b.command({"action": "mark_read", "message_ids": [sent[0]["id"]]})
        [postmaster] = postmasters(data_dirs.old_pgdata)

        online = backed_up(**data_dirs.old)
        assert postmasters(data_dirs.old_pgdata) == [postmaster], "the server's PostgreSQL was stopped"
        reply = await a.command({"action": "send_message", "chat_id": chat["id"], "text": "after the backup"})
        assert reply["action"] == "message_sent", reply
        await a.close()
        await b.close()
    assert gone(data_dirs.old_pgdata)

    offline = backed_up(**data_dirs.old)
    assert not postmasters(data_dirs.old_pgdata), "the PostgreSQL started for the backup still runs"
    assert sorted(online.parent.glob("*")) == sorted([online, offline])  # no draft left behind
    assert re.fullmatch(r"chat-\d{8}T\d{6}Z\.dump", online.name), online.name
    assert "after the backup" in dumped_sql(offline) and "after the backup" not in dumped_sql(online)

    result = backup_py("restore", str(online), **data_dirs.new)
    assert result.returncode == 0, result.stderr
    assert f"2 users, alembic revision {HEAD}" in result.stdout
    assert not postmasters(data_dirs.new_pgdata), "the PostgreSQL started for the restore still runs"

    with running_server(tmp_path / "new.log", **data_dirs.new) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            # The JWT secret lives in the data directory, not in the database: old tokens are void.
            assert (await http.get("/chats", headers=bob.headers)).status_code == 401
            alice_again, bob_again = await log_in(http, alice.email), await log_in(http, bob.email)
            assert (alice_again.uuid, bob_again.uuid) == (alice.uuid, bob.uuid)
            response = await http.get(f"/history/{chat['id']}", headers=bob_again.headers)
            assert response.status_code == 200, response.text
            history = response.json()["messages"]
        assert [(m["id"], m["text"]) for m in history] == [(m["id"], m["text"]) for m in reversed(sent)]
        assert [m["read_status"] for m in history] == ["unread", "unread", "read"]
        b = await open_socket(server.ws_url, bob_again.headers)
        assert b.unread == sent[1:]
        await b.close()


@pytest.fixture
def databases(postgres):
    """make(migrate=True): a new database on the session's PostgreSQL, its URL; all dropped after the test."""
    made = []

    def make(migrate=True):
        made.append(postgres.create_database("chat_backup", migrate=migrate))
        return made[-1]

    yield make
    for url in made:
        postgres.drop_database(url)


def sql(url, query, *args):
    """The rows of one query, on a connection of its own."""

    async def fetch():
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    return _run_sync(fetch())


def add_user(url, name):
    password_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    query = "insert into users (name, email, password_hash) values ($1, $2, $3)"
    sql(url, query, name, f"{name.lower()}@example.com", password_hash)


def names(url):
    return [row["name"] for row in sql(url, "select name from users order by name")]


def epoch(url):
    return (sql(url, "select epoch from stream"))[0]["epoch"]


def test_a_restore_over_users_is_refused_and_changes_nothing_unless_forced(databases, tmp_path):
    source, target = databases(), databases()
    add_user(source, "Ada")
    add_user(target, "Bob")
    backups = tmp_path / "backups"
    dump = backed_up(DATABASE_URL=source, BACKUP_DIR=str(backups))

    result = backup_py("restore", str(dump), DATABASE_URL=target, BACKUP_DIR=str(backups))
    assert result.returncode == 1
    assert "not restored: the database has users (1); FORCE=1 replaces them" in result.stderr
    assert names(target) == ["Bob"]
    assert list(backups.iterdir()) == [dump]

    result = backup_py("restore", str(dump), "--force", DATABASE_URL=target, BACKUP_DIR=str(backups))
    assert result.returncode == 0, result.stderr
    assert names(target) == ["Ada"]
    assert [row["version_num"] for row in sql(target, "select version_num from alembic_version")] == [HEAD]
    # A restored event stream is a new one: no client resumes into it from a cursor of the old.
    assert epoch(target) != epoch(source)
    # What was replaced was backed up first.
    [saved] = [path for path in backups.iterdir() if path != dump]
    assert f"what was there is saved in {saved}" in result.stdout
    result = backup_py("restore", str(saved), "--force", DATABASE_URL=target, BACKUP_DIR=str(backups))
    assert result.returncode == 0, result.stderr
    assert names(target) == ["Bob"]


def test_a_restore_that_fails_midway_changes_nothing(databases, tmp_path):
    target = databases()
    add_user(target, "Bob")
    # Rows enough that a cut, past the table of contents, falls in the data.
    sql(target, "insert into users (name, email, password_hash) select 'x', n::text, '' from generate_series(1, 500) n")
    dump = backed_up(DATABASE_URL=target, BACKUP_DIR=str(tmp_path))
    cut = tmp_path / "cut.dump"
    cut.write_bytes(dump.read_bytes()[: dump.stat().st_size * 3 // 4])  # the table of contents whole, the data not
    sql(target, "delete from users where name = 'x'")

    result = backup_py("restore", str(cut), "--force", DATABASE_URL=target, BACKUP_DIR=str(tmp_path / "saved"))
    assert result.returncode == 1
    assert "not restored: nothing changed" in result.stderr
    assert names(target) == ["Bob"]


def test_a_restore_under_a_running_server_is_refused(databases, tmp_path):
    target = databases()
    add_user(target, "Bob")
    dump = backed_up(DATABASE_URL=target, BACKUP_DIR=str(tmp_path))
    sql(target, "insert into processes (id, expires_at) values (gen_random_uuid(), now() + interval '15 s')")
    sql(target, "delete from users")

    result = backup_py("restore", str(dump), "--force", DATABASE_URL=target, BACKUP_DIR=str(tmp_path))
    assert result.returncode == 1
    assert "a chat server is running on this database" in result.stderr
    assert names(target) == []


def test_a_dump_of_an_older_revision_is_restored_as_it_is_and_migrated_by_the_next_start(databases, tmp_path):
    source, target = databases(migrate=False), databases(migrate=False)
    run_alembic(source, "upgrade", "0008")
    add_user(source, "Ada")
    dump = backed_up(DATABASE_URL=source, BACKUP_DIR=str(tmp_path))

    result = backup_py("restore", str(dump), DATABASE_URL=target, BACKUP_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "1 users, alembic revision 0008" in result.stdout

    env = {"DATABASE_URL": target, "JWT_SECRET": JWT_SECRET, **LIMITS}
    with running_server(tmp_path / "server.log", **env) as server:
        response = httpx.post(f"{server.url}/login", json={"email": "ada@example.com", "password": PASSWORD})
        assert response.status_code == 200, response.text
    assert [row["version_num"] for row in sql(target, "select version_num from alembic_version")] == [HEAD]
