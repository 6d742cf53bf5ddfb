"""/users_list is read once for everyone who asks at the same moment (after a restart, every
client does), yet shows a newcomer or a change of presence as soon as this process hears of
it, and anything else within a second (live server)."""

import asyncio
import time
import uuid

from conftest import PASSWORD


async def _listed(http, user):
    response = await http.get("/users_list", headers=user.headers)
    assert response.status_code == 200
    return {entry["user_uuid"]: entry for entry in response.json()["users"]}


async def test_everyone_asking_at_once_sees_everyone_else(http, make_user):
    users = [await make_user(f"dir-{n:02d}") for n in range(40)]
    lists = await asyncio.gather(*(_listed(http, user) for user in users))
    for user, listed in zip(users, lists, strict=True):
        assert user.uuid not in listed
        assert {u.uuid: u.name for u in users if u is not user}.items() <= {
            uid: entry["name"] for uid, entry in listed.items()
        }.items()


async def test_a_newcomer_here_is_listed_at_once_one_elsewhere_within_a_second(http, make_user, db):
    alice = await make_user()
    await _listed(http, alice)  # the list is now fresh
    bob = await make_user()  # registered on this process
    assert bob.uuid in await _listed(http, alice)
    # Registered by another process: nothing here hears of it.
    carol = await db.fetchval(
        "insert into users (name, email, password_hash) values ('carol', $1, $2) returning id::text",
        f"{uuid.uuid4().hex}@example.com",
        PASSWORD,
    )
    deadline = time.monotonic() + 3
    while carol not in await _listed(http, alice):
        assert time.monotonic() < deadline, "a user added elsewhere was never listed"
        await asyncio.sleep(0.1)


async def test_who_comes_online_is_listed_as_online_at_once(http, make_user, connect):
    alice, bob = await make_user(), await make_user()
    a = await connect(alice)
    await a.command({"action": "create_chat", "type": "private", "user_ids": [bob.uuid]})
    assert (await _listed(http, alice))[bob.uuid]["online"] is False  # the list is now fresh
    b = await connect(bob)
    assert await a.recv_presence() == {"user_uuid": bob.uuid, "online": True}
    assert (await _listed(http, alice))[bob.uuid]["online"] is True  # no waiting for the list to age
    await b.close()
    assert await a.recv_presence() == {"user_uuid": bob.uuid, "online": False}
    assert (await _listed(http, alice))[bob.uuid]["online"] is False
