"""GET /history/{chat_id}: newest first, paged, members only, and it marks nothing read."""

import pytest


@pytest.fixture
async def chat_with_messages(make_user, connect, create_chat):
    """alice and bob in a private chat with 7 messages from alice (m0..m6)."""
    alice, bob = await make_user(), await make_user()
    a = await connect(alice)
    chat = await create_chat(a, [bob], kind="private")
    sent = []
    for i in range(7):
        sent.append((await a.command({"action": "send_message", "chat_id": chat["id"], "text": f"m{i}"}))["data"])
    return chat, sent, alice, bob


async def test_history_is_newest_first_and_paged(http, chat_with_messages):
    chat, sent, alice, bob = chat_with_messages
    newest_first = sent[::-1]
    response = await http.get(f"/history/{chat['id']}", headers=bob.headers)
    assert response.status_code == 200
    assert response.json() == {"messages": newest_first}
    pages = []
    for page in (1, 2, 3, 4):
        response = await http.get(f"/history/{chat['id']}?page={page}&page_size=3", headers=alice.headers)
        pages.append(response.json()["messages"])
    assert pages == [newest_first[0:3], newest_first[3:6], newest_first[6:7], []]


async def test_before_id_pages_by_keyset(http, chat_with_messages):
    chat, sent, alice, bob = chat_with_messages
    newest_first = sent[::-1]
    response = await http.get(f"/history/{chat['id']}?before_id={sent[4]['id']}&page_size=3", headers=bob.headers)
    assert response.json()["messages"] == newest_first[3:6]
    response = await http.get(f"/history/{chat['id']}?before_id={sent[0]['id']}", headers=bob.headers)
    assert response.json()["messages"] == []
    response = await http.get(f"/history/{chat['id']}&before_id={sent[2]['id']}", headers=bob.headers)
    assert response.json()["messages"] == newest_first[5:7]


async def test_the_literal_ampersand_form_of_the_original_spec(http, chat_with_messages):
    chat, sent, alice, bob = chat_with_messages
    response = await http.get(f"/history/{chat['id']}&page=2&page_size=2", headers=alice.headers)
    assert response.status_code == 200
    assert response.json()["messages"] == sent[::-1][2:4]


async def test_reading_history_marks_nothing_read(http, connect, chat_with_messages):
    chat, sent, alice, bob = chat_with_messages
    await http.get(f"/history/{chat['id']}", headers=bob.headers)
    assert (await connect(bob)).unread == sent


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
async def test_out_of_range_paging_is_400(http, chat_with_messages, query):
    chat, sent, alice, bob = chat_with_messages
    response = await http.get(f"/history/{chat['id']}?{query}", headers=alice.headers)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_unknown_chat_404_non_member_403_no_token_401(http, make_user, chat_with_messages):
    chat, sent, alice, bob = chat_with_messages
    outsider = await make_user()
    assert (await http.get("/history/2147483647", headers=alice.headers)).status_code == 404
    response = await http.get(f"/history/{chat['id']}", headers=outsider.headers)
    assert response.status_code == 403
    assert response.json() == {"error": "forbidden", "detail": "you are not a member of this chat"}
    assert (await http.get(f"/history/{chat['id']}")).status_code == 401
    assert (await http.get("/history/abc", headers=alice.headers)).status_code == 400
