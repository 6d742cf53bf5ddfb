"""GET /history/{chat_id}: newest first, paged, members only, and it marks nothing read (in-process)."""

import uuid

import pytest

from conftest import seed_chat


@pytest.fixture
def chat_with_messages(sql, new_user):
    """alice and bob in a private chat with 7 messages from alice (m0..m6), unread for bob."""
    alice, bob = new_user(), new_user()
    chat_id, sent = seed_chat(sql, [alice, bob], [f"m{i}" for i in range(7)], kind="private", name=None)
    return chat_id, sent, alice, bob


def test_history_is_newest_first_and_paged(client, chat_with_messages):
    chat_id, sent, alice, bob = chat_with_messages
    newest_first = sent[::-1]
    _, response = client.get(f"/history/{chat_id}", headers=bob.headers)
    assert response.status == 200
    assert response.json == {"messages": newest_first}
    pages = []
    for page in (1, 2, 3, 4):
        _, response = client.get(f"/history/{chat_id}?page={page}&page_size=3", headers=alice.headers)
        pages.append(response.json["messages"])
    assert pages == [newest_first[0:3], newest_first[3:6], newest_first[6:7], []]


def test_before_id_pages_by_keyset(client, chat_with_messages):
    chat_id, sent, alice, bob = chat_with_messages
    newest_first = sent[::-1]
    _, response = client.get(f"/history/{chat_id}?before_id={sent[4]['id']}&page_size=3", headers=bob.headers)
    assert response.json["messages"] == newest_first[3:6]
    _, response = client.get(f"/history/{chat_id}?before_id={sent[0]['id']}", headers=bob.headers)
    assert response.json["messages"] == []
    _, response = client.get(f"/history/{chat_id}&before_id={sent[2]['id']}", headers=bob.headers)
    assert response.json["messages"] == newest_first[5:7]


def test_the_literal_ampersand_form_of_the_original_spec(client, chat_with_messages):
    chat_id, sent, alice, bob = chat_with_messages
    _, response = client.get(f"/history/{chat_id}&page=2&page_size=2", headers=alice.headers)
    assert response.status == 200
    assert response.json["messages"] == sent[::-1][2:4]


def test_reading_history_marks_nothing_read(client, sql, chat_with_messages):
    chat_id, sent, alice, bob = chat_with_messages
    client.get(f"/history/{chat_id}", headers=bob.headers)
    unread = sql.fetch("select message_id from unread where user_id = $1 order by message_id", uuid.UUID(bob.uuid))
    assert [row["message_id"] for row in unread] == [message["id"] for message in sent]
    assert sql.fetchval("select bool_or(is_read) from messages where chat_id = $1", chat_id) is False


@pytest.mark.parametrize(
    "query",
    [
        "page=0",
        "page=-1",
        "page=abc",
        "page=1.5",
        "page_size=0",
        "page_size=101",
        "page_size=x",
        "page=99999999999",
        "page=²",
        "page=" + "9" * 5000,
        "before_id=0",
        "before_id=x",
        "before_id=5&page=1",
    ],
)
def test_out_of_range_paging_is_400(client, chat_with_messages, query):
    chat_id, sent, alice, bob = chat_with_messages
    _, response = client.get(f"/history/{chat_id}?{query}", headers=alice.headers)
    assert response.status == 400
    assert response.json["error"] == "invalid_request"


def test_unknown_chat_404_non_member_403_no_token_401(client, new_user, chat_with_messages):
    chat_id, sent, alice, bob = chat_with_messages
    outsider = new_user()
    _, response = client.get("/history/2147483647", headers=alice.headers)
    assert response.status == 404
    _, response = client.get(f"/history/{chat_id}", headers=outsider.headers)
    assert response.status == 403
    assert response.json == {"error": "forbidden", "detail": "you are not a member of this chat"}
    _, response = client.get(f"/history/{chat_id}")
    assert response.status == 401
    _, response = client.get("/history/abc", headers=alice.headers)
    assert response.status == 400
