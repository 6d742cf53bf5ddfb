"""Bad frames get an error frame with a code, and the socket keeps working."""

import pytest


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "invalid_json"),
        (b"\xff\xfe binary garbage", "invalid_json"),
        ("[1, 2, 3]", "invalid_json"),
        ('"just a string"', "invalid_json"),
        ("", "invalid_json"),
        ({"no": "action"}, "unknown_action"),
        ({"action": "fly"}, "unknown_action"),
        ({"action": ["send_message"]}, "unknown_action"),
        ({"action": "send_message", "chat_id": "x"}, "invalid_request"),
        ({"action": "send_message", "chat_id": 2**31 - 1, "text": "x"}, "not_found"),
    ],
)
async def test_error_frame_then_the_socket_still_works(make_user, connect, create_chat, frame, code):
    alice, bob = await make_user(), await make_user()
    a = await connect(alice)
    await a.send(frame)
    error = await a.recv_action("error")
    assert error["error"] == code and error["detail"]
    chat = await create_chat(a, [bob])
    reply = await a.command({"action": "send_message", "chat_id": chat["id"], "text": "still here"})
    assert reply["action"] == "message_sent"


async def test_forbidden_for_a_chat_of_others(make_user, connect, create_chat):
    alice, bob, mallory = await make_user(), await make_user(), await make_user()
    chat = await create_chat(await connect(alice), [bob])
    m = await connect(mallory)
    assert (await m.command({"action": "send_message", "chat_id": chat["id"], "text": "x"}))["error"] == "forbidden"
    assert (await m.command({"action": "create_chat", "type": "private", "user_ids": [bob.uuid]}))["action"] == (
        "chat_created"
    )


@pytest.mark.parametrize("request_id", ["abc-1", 17, 2.5])
async def test_request_id_is_echoed_on_replies_and_errors(make_user, connect, request_id):
    sock = await connect(await make_user())
    await sock.send({"action": "mark_read", "message_ids": [1], "request_id": request_id})
    assert (await sock.recv_action("marked_read"))["request_id"] == request_id
    await sock.send({"action": "nope", "request_id": request_id})
    assert (await sock.recv_action("error"))["request_id"] == request_id


async def test_frames_over_64_kib_close_the_socket_with_1009(make_user, connect):
    sock = await connect(await make_user())
    await sock.send("x" * (65 * 1024))
    await sock.ws.wait_closed()
    assert sock.ws.close_code == 1009
