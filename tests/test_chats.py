"""create_chat: private chats made once per pair, groups, and who is told."""

import asyncio
import uuid

import pytest

from conftest import seed_chat


async def test_private_chat_is_created_once_from_either_side(db, make_user, connect, create_chat):
    alice, bob = await make_user(), await make_user()
    a, b = await connect(alice), await connect(bob)
    chat = await create_chat(a, [bob], kind="private")
    assert chat["type"] == "private"
    assert sorted(chat["members"]) == sorted([alice.uuid, bob.uuid])
    assert (await b.recv_action("chat_created"))["chat"] == chat
    again = await create_chat(a, [bob], kind="private")
    from_bob = await create_chat(b, [alice], kind="private")
    assert again["id"] == from_bob["id"] == chat["id"]
    rows = await db.fetch(
        "select chat_id from chat_members where user_id = $1 and chat_id in "
        "(select chat_id from chat_members where user_id = $2)",
        uuid.UUID(alice.uuid),
        uuid.UUID(bob.uuid),
    )
    assert [row["chat_id"] for row in rows] == [chat["id"]]


async def test_private_chat_created_from_both_sides_at_once_is_one_chat(make_user, connect, create_chat):
    alice, bob = await make_user(), await make_user()
    a, b = await connect(alice), await connect(bob)
    chats = await asyncio.gather(create_chat(a, [bob], kind="private"), create_chat(b, [alice], kind="private"))
    assert chats[0]["id"] == chats[1]["id"]


async def test_group_ignores_duplicates_and_the_creator_and_tells_online_members(db, make_user, connect, create_chat):
    alice, bob, carol, outsider = [await make_user() for _ in range(4)]
    a, b, c, o = [await connect(user) for user in (alice, bob, carol, outsider)]
    a2 = await connect(alice)
    chat = await create_chat(a, [bob, carol, bob, alice], name="  Launch  ")
    assert chat["type"] == "group" and chat["name"] == "Launch"
    assert sorted(chat["members"]) == sorted([alice.uuid, bob.uuid, carol.uuid])
    for sock in (b, c, a2):
        assert (await sock.recv_action("chat_created"))["chat"] == chat
    await o.assert_silent()
    members = await db.fetch("select user_id from chat_members where chat_id = $1", chat["id"])
    assert sorted(str(row["user_id"]) for row in members) == sorted(chat["members"])


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "group", "name": "g", "user_ids": []}, "invalid_request"),
        ({"type": "group", "name": "g", "user_ids": ["SELF"]}, "invalid_request"),
        ({"type": "group", "name": "", "user_ids": ["OTHER"]}, "invalid_request"),
        ({"type": "group", "name": "   ", "user_ids": ["OTHER"]}, "invalid_request"),
        ({"type": "group", "name": "x" * 101, "user_ids": ["OTHER"]}, "invalid_request"),
        ({"type": "group", "name": "right\u202eleft", "user_ids": ["OTHER"]}, "invalid_request"),
        ({"type": "group", "name": "new\nline", "user_ids": ["OTHER"]}, "invalid_request"),
        ({"type": "group", "user_ids": ["OTHER"]}, "invalid_request"),
        ({"type": "group", "name": "g", "user_ids": "OTHER"}, "invalid_request"),
        ({"type": "group", "name": "g", "user_ids": ["not-a-uuid"]}, "invalid_request"),
        ({"type": "group", "name": "g", "user_ids": [42]}, "invalid_request"),
        ({"type": "group", "name": "g", "user_ids": ["OTHER", "UNKNOWN"]}, "not_found"),
        ({"type": "private", "user_ids": []}, "invalid_request"),
        ({"type": "private", "user_ids": ["SELF"]}, "invalid_request"),
        ({"type": "private", "user_ids": ["OTHER", "THIRD"]}, "invalid_request"),
        ({"type": "private", "user_ids": ["UNKNOWN"]}, "not_found"),
        ({"type": "channel", "name": "g", "user_ids": ["OTHER"]}, "invalid_request"),
        ({"name": "g", "user_ids": ["OTHER"]}, "invalid_request"),
    ],
)
async def test_invalid_create_chat_is_refused_and_creates_nothing(db, make_user, connect, frame, code):
    me, other, third = await make_user(), await make_user(), await make_user()
    ids = {"SELF": me.uuid, "OTHER": other.uuid, "THIRD": third.uuid, "UNKNOWN": str(uuid.uuid4())}
    if isinstance(frame["user_ids"], list):
        frame = {**frame, "user_ids": [ids.get(item, item) for item in frame["user_ids"]]}
    else:
        frame = {**frame, "user_ids": ids.get(frame["user_ids"], frame["user_ids"])}
    sock = await connect(me)
    reply = await sock.command({"action": "create_chat", **frame})
    assert reply["action"] == "error" and reply["error"] == code, reply
    assert await db.fetchval("select count(*) from chat_members where user_id = $1", uuid.UUID(me.uuid)) == 0


def test_chat_list_has_members_unread_and_last_message_by_latest_activity(client, sql, new_user):
    """GET /chats, in-process, on chats seeded straight into the database."""
    alice, bob, carol = new_user("alice"), new_user("bob"), new_user("carol")
    quiet, _ = seed_chat(sql, [alice, carol], name="quiet")
    private, _ = seed_chat(sql, [alice, bob], ["one", "two"], kind="private", name=None)
    group, (last,) = seed_chat(sql, [alice, bob, carol], ["latest"], name="trio")

    _, response = client.get("/chats", headers=bob.headers)
    assert response.status == 200
    chats = response.json["chats"]
    assert [c["id"] for c in chats] == [group, private]  # bob is not in "quiet"
    assert chats[0] == {
        "id": group,
        "type": "group",
        "name": "trio",
        "members": [
            {"user_uuid": alice.uuid, "name": "alice"},
            {"user_uuid": bob.uuid, "name": "bob"},
            {"user_uuid": carol.uuid, "name": "carol"},
        ],
        "unread": 1,
        "last_message": last,
        "owner": alice.uuid,
    }
    assert chats[1]["unread"] == 2 and chats[1]["last_message"]["text"] == "two"
    _, response = client.get("/chats", headers=alice.headers)
    mine = response.json["chats"]
    assert [c["id"] for c in mine] == [group, private, quiet]
    assert mine[0]["unread"] == 0 and mine[2]["last_message"] is None
    _, response = client.get("/chats")
    assert response.status == 401
