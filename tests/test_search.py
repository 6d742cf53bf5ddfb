"""GET /search: every word as a prefix, any case, English and Russian, only in the caller's
chats now, paged by before_id; and the GIN index really used (in-process, and a seeded table)."""

import uuid

import asyncpg
import orjson
import pytest

from conftest import seed_chat

TEXTS = [
    "Deployed the staging server",
    "Staging password policy: agreed, 12 characters",
    "Миграция базы завтра в 10",
    "привет всем",
    "ПРИВЕТ, команда!",
    "see staging.example.com/docs",
    "select * from users where a or 1=1",
]


@pytest.fixture
def team(sql, new_user):
    """alice and bob in a group with TEXTS from alice, oldest first."""
    alice, bob = new_user(), new_user()
    chat_id, sent = seed_chat(sql, [alice, bob], TEXTS)
    return chat_id, sent, alice, bob


def _search(client, user, **params):
    _, response = client.get("/search", params=params, headers=user.headers)
    return response


@pytest.mark.parametrize(
    ("q", "found"),
    [
        ("staging", [5, 1, 0]),  # newest first; punctuation separates words: "staging.example.com"
        ("deplo", [0]),  # a prefix
        ("STAGING policy", [1]),  # every word, in any case
        ("policy deployed", []),
        ("example", [5]),
        ("мигра", [2]),  # Russian prefixes
        ("ПРИВЕТ", [4, 3]),  # and Russian case
        ("привет команда", [4]),
        ("a' or 1=1 --", [6]),  # just the words a, or, 1, 1
        ("'; drop table messages; --", []),
        ("%_\\", []),  # no word at all
        ("12 char", [1]),
    ],
)
def test_every_word_of_q_begins_a_word_of_the_text(client, team, q, found):
    chat_id, sent, alice, bob = team
    response = _search(client, bob, q=q)
    assert response.status == 200, response.text
    assert response.json == {"messages": [sent[i] for i in found]}


def test_only_the_chats_one_is_in_now(client, sql, new_user, team):
    chat_id, sent, alice, bob = team
    carol = new_user()
    assert _search(client, carol, q="staging").json == {"messages": []}
    other_chat, other = seed_chat(sql, [carol, bob], ["staging in another chat"])
    assert [m["id"] for m in _search(client, bob, q="staging").json["messages"]] == [
        other[0]["id"],
        sent[5]["id"],
        sent[1]["id"],
        sent[0]["id"],
    ]
    response = _search(client, bob, q="staging", chat_id=other_chat)
    assert response.json == {"messages": other}
    sql.execute("delete from chat_members where chat_id = $1 and user_id = $2", chat_id, uuid.UUID(bob.uuid))
    assert _search(client, bob, q="staging").json == {"messages": other}  # the chat bob left is not searched
    assert _search(client, bob, q="staging", chat_id=chat_id).status == 403


@pytest.mark.parametrize(("chat_id", "status"), [("MINE", 403), (2**31 - 1, 404)])
def test_a_chat_one_is_not_in(client, new_user, team, chat_id, status):
    carol = new_user()
    response = _search(client, carol, q="staging", chat_id=team[0] if chat_id == "MINE" else chat_id)
    assert response.status == status
    assert response.json["error"] == {403: "forbidden", 404: "not_found"}[status]


def test_before_id_pages_backwards(client, sql, new_user):
    alice, bob = new_user(), new_user()
    _, sent = seed_chat(sql, [alice, bob], [f"release {i}" for i in range(5)] + ["unrelated"])
    pages, before = [], None
    while True:
        params = {"q": "release", "limit": 2} | ({"before_id": before} if before else {})
        page = _search(client, bob, **params).json["messages"]
        if not page:
            break
        pages.append([m["text"] for m in page])
        before = page[-1]["id"]
    assert pages == [["release 4", "release 3"], ["release 2", "release 1"], ["release 0"]]


@pytest.mark.parametrize("elsewhere", [0, 5001])
def test_a_rare_and_a_common_word_are_found_alike(client, sql, new_user, elsewhere):
    """A word with more than 5,000 matches in all is found chat by chat, not through the index:
    the same messages, in the same order, paged the same."""
    alice, bob, carol = new_user(), new_user(), new_user()
    others, _ = seed_chat(sql, [carol, alice])
    sql.execute(
        "insert into messages (chat_id, sender_id, text) select $1, $2, 'release ' || i from generate_series(1, $3) i",
        others,
        uuid.UUID(carol.uuid),
        elsewhere,
    )
    sent = [seed_chat(sql, [alice, bob], [f"release {n}", "unrelated"])[1][0] for n in range(12)]
    newest_first = sent[::-1]
    assert _search(client, bob, q="RELEASE").json["messages"] == newest_first
    page = _search(client, bob, q="release", before_id=newest_first[2]["id"], limit=3).json["messages"]
    assert page == newest_first[3:6]
    assert _search(client, bob, q="release 1", chat_id=sent[1]["chat_id"]).json["messages"] == [sent[1]]
    sql.execute("delete from messages where chat_id = $1", others)  # not in the way of the other tests


def test_deleted_messages_are_not_found_and_edited_ones_by_their_new_text(client, sql, team):
    chat_id, sent, alice, bob = team
    # What edit_message and delete_message do to the row (tested over sockets in test_edit_delete).
    sql.execute("update messages set text = 'Rolled back the canary', edited_at = now() where id = $1", sent[0]["id"])
    sql.execute("update messages set text = '', deleted_at = now() where id = $1", sent[1]["id"])
    assert _search(client, bob, q="staging").json["messages"] == [sent[5]]
    assert _search(client, bob, q="deployed").json["messages"] == []
    (edited,) = _search(client, bob, q="canary").json["messages"]
    assert edited["id"] == sent[0]["id"] and edited["text"] == "Rolled back the canary"


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"q": ""},
        {"q": "   "},
        {"q": "x" * 201},
        {"q": "x", "limit": 0},
        {"q": "x", "limit": 101},
        {"q": "x", "limit": "ten"},
        {"q": "x", "before_id": 0},
        {"q": "x", "chat_id": "seven"},
    ],
)
def test_bad_parameters_are_refused(client, team, params):
    response = _search(client, team[3], **params)
    assert response.status == 400
    assert response.json["error"] == "invalid_request" and response.json["detail"]


def test_the_longest_q_and_limit_are_fine(client, team):
    assert _search(client, team[3], q="staging " + "x" * 192, limit=100).status == 200
    assert _search(client, team[3], q="s", limit=1).json["messages"] == [team[1][6]]  # "select …"


def test_search_needs_a_token(client):
    _, response = client.get("/search", params={"q": "x"})
    assert response.status == 401


def _nodes(node):
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


async def _seed(conn, me, other, chats, text_sql, messages=200_000, mine=None):
    """Users me and other, `chats` groups with me in `mine` of them (all), and messages from other."""
    await conn.execute(
        "insert into users (id, name, email, password_hash) values ($1, 'me', $3, 'x'), ($2, 'o', $4, 'x')",
        me,
        other,
        f"{me}@example.com",
        f"{other}@example.com",
    )
    await conn.execute("insert into chats (type, name) select 'group', 'g' || i from generate_series(1, $1) i", chats)
    await conn.execute(
        "insert into chat_members (chat_id, user_id) select id, $1 from chats where id <= $2", me, mine or chats
    )
    await conn.execute(
        f"insert into messages (chat_id, sender_id, text) select {text_sql} from generate_series(1, $2) i",
        other,
        messages,
    )


async def _explain(conn, me, q, statistics):
    import chat

    if statistics == "fresh":
        await conn.execute("analyze")
    words = await conn.fetchval(chat.SQL.make_search_query, q)
    await conn.execute("set plan_cache_mode = force_custom_plan")  # as the server runs it
    explained = await conn.fetchval(
        f"explain (analyze, format json) {chat.SQL.search_messages}", me, words, None, None, 20
    )
    return orjson.loads(explained)[0]["Plan"]


def _tree(node, depth=0):
    """A plan as short lines: node, relation or index, rows x loops."""
    name = node.get("Index Name") or node.get("Relation Name") or ""
    line = f"{'  ' * depth}{node['Node Type']} {name} {node['Actual Rows']}x{node['Actual Loops']}"
    return "\n".join([line, *(_tree(child, depth + 1) for child in node.get("Plans", ()))])


def _read(top):
    """Rows of messages read: by the index or by walking."""
    return sum(
        node["Actual Rows"] * node.get("Actual Loops", 1)
        for node in _nodes(top)
        if node.get("Relation Name") == "messages"
    )


@pytest.mark.parametrize("statistics", ["stale", "fresh"])
async def test_the_search_reads_the_index(fresh_database, statistics):
    """The server's search query, with the server's custom plans, finds a rare word through
    messages_search, with statistics taken while the table was empty or after it filled:
    100 matches among 200,000 messages in 200 chats, 19 of them in the user's 20 chats."""
    import chat

    conn = await asyncpg.connect(fresh_database)
    try:
        await conn.execute("analyze")  # empty: stale from here on, unless analyzed again
        me = uuid.uuid4()
        text = "case when i % 2000 = 0 then 'the Миграция is done' else 'nothing to see here, move along ' || i end"
        await _seed(conn, me, uuid.uuid4(), 200, f"1 + (i / 2000) % 200, $1, {text}", mine=20)
        assert await conn.fetchval(chat.SQL.make_search_query, "МИГРА") == "'мигра':*"
        top = await _explain(conn, me, "МИГРА", statistics)
    finally:
        await conn.close()
    index_scans = [node for node in _nodes(top) if node.get("Index Name") == "messages_search"]
    assert index_scans and index_scans[0]["Actual Rows"] == 100, _tree(top)
    assert top["Actual Rows"] == 19
    assert _read(top) <= 200, _tree(top)  # 100 by the index, 19 of them read again: no walk through all


@pytest.mark.parametrize("statistics", ["stale", "fresh"])
async def test_a_common_word_in_a_quiet_chat_reads_that_chat_only(fresh_database, statistics):
    """Someone in one chat, quiet for a while, searches for a word in most messages: the search
    reads 5,001 matches to see that the word is common, then that chat's 1,000 messages at most,
    never the 200,000 newer messages of others (a walk back through all messages, which
    PostgreSQL picks for such a word, read them all)."""
    conn = await asyncpg.connect(fresh_database)
    try:
        await conn.execute("analyze")
        me, other = uuid.uuid4(), uuid.uuid4()
        await _seed(conn, me, other, 1, "1, $1, 'old news ' || i", messages=1000)
        busy = await conn.fetchval("insert into chats (type, name) values ('group', 'busy') returning id")
        newer = "select $1, $2, 'news ' || i from generate_series(1, $3) i"
        await conn.execute(f"insert into messages (chat_id, sender_id, text) {newer}", busy, other, 200_000)
        top = await _explain(conn, me, "news", statistics)
    finally:
        await conn.close()
    assert top["Actual Rows"] == 20
    assert _read(top) <= 5001 + 1000 + 20, _tree(top)
