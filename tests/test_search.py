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


@pytest.mark.parametrize("statistics", ["stale", "fresh"])
async def test_the_search_reads_the_index(fresh_database, statistics):
    """The server's search query, with the server's custom plans, finds a rare word through
    messages_search, with statistics taken while the table was empty or after it filled:
    100 matches among 200,000 messages, and not one other message read."""
    import chat

    conn = await asyncpg.connect(fresh_database)
    try:
        if statistics == "stale":
            await conn.execute("analyze messages")
        me, other = uuid.uuid4(), uuid.uuid4()
        await conn.execute(
            "insert into users (id, name, email, password_hash) values ($1, 'me', $3, 'x'), ($2, 'o', $4, 'x')",
            me,
            other,
            f"{me}@example.com",
            f"{other}@example.com",
        )
        await conn.execute("insert into chats (type, name) select 'group', 'g' || i from generate_series(1, 20) i")
        await conn.execute("insert into chat_members (chat_id, user_id) select id, $1 from chats", me)
        await conn.execute(
            """
            insert into messages (chat_id, sender_id, text)
            select 1 + i % 20, $1,
                   case when i % 2000 = 0 then 'the Миграция is done' else 'nothing to see here, move along ' || i end
            from generate_series(1, 200000) i
            """,
            other,
        )
        if statistics == "fresh":
            await conn.execute("analyze messages")
        words = await conn.fetchval(chat.SQL.make_search_query, "МИГРА")
        assert words == "'мигра':*"
        await conn.execute("set plan_cache_mode = force_custom_plan")  # as the server runs it
        explained = await conn.fetchval(
            f"explain (analyze, format json) {chat.SQL.search_messages}", me, words, None, None, 200
        )
    finally:
        await conn.close()
    top = orjson.loads(explained)[0]["Plan"]

    def nodes(node):
        yield node
        for child in node.get("Plans", ()):
            yield from nodes(child)

    index_scans = [node for node in nodes(top) if node.get("Index Name") == "messages_search"]
    assert index_scans and index_scans[0]["Actual Rows"] == 100, orjson.dumps(top).decode()
    on_messages = [node for node in nodes(top) if node.get("Relation Name") == "messages"]
    removed = sum(
        node.get("Rows Removed by Filter", 0) + node.get("Rows Removed by Index Recheck", 0) for node in on_messages
    )
    assert (removed, top["Actual Rows"]) == (0, 100)
