"""Property-based: whatever arrives as a frame or a body, the answer is a clean refusal,
the socket stays usable, and nothing is stored."""

import json

import httpx
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
# Frames shaped like commands, so the fuzz gets past the dispatcher into each command's checks.
COMMANDS = st.fixed_dictionaries(
    {"action": st.sampled_from(["create_chat", "send_message", "mark_read"])},
    optional={
        key: JSON | st.integers(min_value=-(2**70), max_value=2**70)
        for key in ("type", "name", "user_ids", "chat_id", "text", "message_ids", "client_msg_id", "request_id")
    },
)
FRAMES = st.binary(max_size=200) | st.text(max_size=200) | JSON.map(json.dumps) | COMMANDS.map(json.dumps)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_socket_survives_any_frame(server, make_user_sync):
    user = make_user_sync
    headers = {"Authorization": f"Bearer {user['access_token']}"}
    with connect(server.ws_url, additional_headers=headers) as ws:
        assert orjson.loads(ws.recv(timeout=5))["action"] == "unread_messages"

        @FUZZ
        @given(frame=FRAMES)
        def check(frame):
            ws.send(frame)
            reply = orjson.loads(ws.recv(timeout=5))
            if reply["action"] == "error":
                assert reply["error"] in {"invalid_json", "unknown_action", "invalid_request", "not_found"}, reply
                assert reply["detail"]
            else:  # mark_read of ids that are nobody's unread
                assert reply["action"] == "marked_read" and reply["message_ids"] == [], reply

        check()
        ws.send(orjson.dumps({"action": "mark_read", "message_ids": [1], "request_id": "still-there"}).decode())
        assert orjson.loads(ws.recv(timeout=5))["request_id"] == "still-there"
    with httpx.Client(base_url=server.url) as http:
        assert http.get(f"/history/1?access_token={user['access_token']}").status_code in (403, 404)


BODIES = st.binary(max_size=300) | JSON.map(lambda value: json.dumps(value).encode())
ROUTES = st.sampled_from(["/register", "/login", "/change_password", "/users_list", "/history/1", "/history/x&page=y"])


def test_http_never_answers_500_to_any_body(client, new_user):
    """In-process: hypothesis drives chat.app through sanic-testing."""
    headers = new_user().headers

    @FUZZ
    @given(route=ROUTES, method=st.sampled_from(["GET", "POST", "PUT"]), body=BODIES, auth=st.booleans())
    def check(route, method, body, auth):
        _, response = client.request(route, http_method=method, content=body, headers=headers if auth else {})
        assert response.status < 500, response.text
        if response.status >= 400:
            assert set(response.json) == {"error", "detail"}
        assert response.status != 201, "a fuzzed body registered somebody"

    check()


def test_history_query_strings(client, new_user):
    headers = new_user().headers

    @FUZZ
    @given(query=st.dictionaries(st.sampled_from(["page", "page_size", "x"]), st.text(max_size=30), max_size=3))
    def check(query):
        _, response = client.get("/history/1", params=query, headers=headers)
        assert response.status in (400, 403, 404), response.text

    check()
