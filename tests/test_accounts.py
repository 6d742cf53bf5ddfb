"""Registration, login, tokens and the users list (chat.app in this process, through sanic-testing)."""

import base64
import hashlib
import time
import uuid

import jwt
import orjson
import pytest

from conftest import JWT_SECRET, PASSWORD


def _email():
    return f"{uuid.uuid4().hex}@example.com"


def test_register_stores_a_lowercased_email_and_a_bcrypt_hash(client, sql):
    email = f"Ada.{uuid.uuid4().hex}@Example.COM"
    _, response = client.post("/register", json={"name": " Ada ", "email": f"  {email} ", "password": PASSWORD})
    assert response.status == 201
    body = response.json
    assert body == {"user_uuid": body["user_uuid"], "name": "Ada", "email": email.lower()}
    row = sql.fetchrow("select * from users where id = $1", uuid.UUID(body["user_uuid"]))
    assert row["email"] == email.lower()
    assert row["password_hash"].startswith("$2b$")
    assert PASSWORD not in row["password_hash"]


def test_duplicate_email_in_another_case_is_refused(client, sql):
    email = _email()
    _, first = client.post("/register", json={"name": "A", "email": email, "password": PASSWORD})
    assert first.status == 201
    _, second = client.post("/register", json={"name": "B", "email": f" {email.upper()}", "password": PASSWORD})
    assert second.status == 409
    assert second.json["error"] == "email_taken"
    assert sql.fetchval("select count(*) from users where email = $1", email) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"name": None},
        {"email": None},
        {"password": None},
        {"name": 5},
        {"email": ["a@b.co"]},
        {"password": 12345678},
        {"name": "   "},
        {"name": "x" * 101},
        {"name": "nul\x00byte"},
        {"name": "tab\tin name"},
        {"name": "bell\x07"},
        {"name": "zero\u200bwidth"},
        {"name": "bidi\u202eoverride"},
        {"name": "\u2066isolate"},
        {"email": "not-an-email"},
        {"email": "a@b"},
        {"email": "a b@example.com"},
        {"email": "a@@example.com"},
        {"email": "x" * 250 + "@example.com"},
        {"password": "short12"},
        {"password": "a" * 73},
        {"password": "é" * 37},  # 37 characters, 74 bytes of UTF-8
        {"password": "password\x00"},
        {"extra": "field"},
    ],
)
def test_invalid_registration_is_refused_and_stores_nothing(client, sql, change):
    email = _email()
    body = {"name": "Val", "email": email, "password": PASSWORD}
    body.update(change)
    body = {key: value for key, value in body.items() if value is not None}
    _, response = client.post("/register", json=body)
    assert response.status == 400, response.text
    assert response.json["error"] == "invalid_request"
    assert response.json["detail"]
    assert sql.fetchval("select count(*) from users where email = $1", email) == 0


@pytest.mark.parametrize("body", [b"{not json", b"", b"[1, 2]", b'"text"', b"null"])
def test_register_with_a_body_that_is_not_an_object(client, body):
    _, response = client.post("/register", content=body)
    assert response.status == 400
    assert set(response.json) == {"error", "detail"}


def test_72_byte_multibyte_password_works(client):
    email, password = _email(), "é" * 36  # 72 bytes: bcrypt's limit exactly
    _, response = client.post("/register", json={"name": "M", "email": email, "password": password})
    assert response.status == 201
    _, response = client.post("/login", json={"email": email, "password": password})
    assert response.status == 200
    _, wrong = client.post("/login", json={"email": email, "password": "é" * 35 + "e"})
    assert wrong.status == 401


def test_login_returns_a_pinned_hs256_token(client, new_user):
    user = new_user()
    _, response = client.post("/login", json={"email": f"  {user.email.upper()}", "password": PASSWORD})
    assert response.status == 200
    body = response.json
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 86400
    assert body["user_uuid"] == user.uuid
    assert body["name"] == user.name
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "HS256"
    claims = jwt.decode(body["access_token"], JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == user.uuid
    assert claims["exp"] - claims["iat"] == 86400


def test_unknown_email_and_wrong_password_look_the_same(client, new_user):
    user = new_user()
    _, wrong_password = client.post("/login", json={"email": user.email, "password": "wrong password"})
    _, unknown_email = client.post("/login", json={"email": _email(), "password": PASSWORD})
    _, too_long = client.post("/login", json={"email": user.email, "password": "a" * 73})
    _, nul_email = client.post("/login", json={"email": f"{user.email}\x00", "password": PASSWORD})
    _, nul_password = client.post("/login", json={"email": user.email, "password": f"{PASSWORD}\x00"})
    for response in (wrong_password, unknown_email, too_long, nul_email, nul_password):
        assert response.status == 401
        assert response.json == {"error": "invalid_credentials", "detail": "wrong email or password"}


@pytest.mark.parametrize("body", [{"email": "a@b.co"}, {"email": 1, "password": "x"}, []])
def test_malformed_login_is_a_400(client, body):
    _, response = client.post("/login", json=body)
    assert response.status == 400
    assert response.json["error"] == "invalid_request"


def test_users_list_shows_everyone_else_by_name_without_secrets(client, new_user):
    tag = uuid.uuid4().hex[:6]
    caller = new_user(f"{tag}-caller")
    carol = new_user(f"{tag}-carol")
    bob = new_user(f"{tag}-bob")
    _, response = client.get("/users_list", headers=caller.headers)
    assert response.status == 200
    users = response.json["users"]
    assert all(set(user) == {"user_uuid", "name", "online"} for user in users)
    mine = [user for user in users if user["name"].startswith(tag)]
    assert mine == [
        {"user_uuid": bob.uuid, "name": bob.name, "online": False},
        {"user_uuid": carol.uuid, "name": carol.name, "online": False},
    ]
    assert caller.uuid not in {user["user_uuid"] for user in users}
    assert [u["name"] for u in users] == sorted(u["name"] for u in users)


def test_token_in_the_access_token_query_parameter(client, new_user):
    user = new_user()
    _, response = client.get("/users_list", params={"access_token": user.token})
    assert response.status == 200


def _token(user, claims=None, secret=JWT_SECRET, algorithm="HS256", drop=()):
    """A token for `user` as the server would make it, but for the changes asked for."""
    now = int(time.time())
    payload = {"sub": user.uuid, "iat": now, "exp": now + 600, "pwd": user.stamp, **(claims or {})}
    for key in drop:
        del payload[key]
    return jwt.encode(payload, secret, algorithm=algorithm)


def _unsigned(claims):
    """An `alg: none` token, which PyJWT refuses to make for us."""

    def part(data):
        return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


BAD_TOKENS = {
    "missing": lambda user: None,
    "other-scheme": lambda user: f"Basic {user.token}",
    "empty": lambda user: "Bearer",
    "garbage": lambda user: "Bearer not-a-token",
    "bad-signature": lambda user: f"Bearer {user.token[:-4]}AAAA",
    "other-secret": lambda user: f"Bearer {_token(user, secret='another-secret-' + 'x' * 64)}",
    "hs512": lambda user: f"Bearer {_token(user, algorithm='HS512')}",
    "alg-none": lambda user: f"Bearer {_unsigned(jwt.decode(user.token, options={'verify_signature': False}))}",
    "expired": lambda user: f"Bearer {_token(user, {'iat': 1000, 'exp': 2000})}",
    "expired-past-leeway": lambda user: f"Bearer {_token(user, {'exp': int(time.time()) - 15})}",
    "no-exp": lambda user: f"Bearer {_token(user, drop=['exp'])}",
    "no-iat": lambda user: f"Bearer {_token(user, drop=['iat'])}",
    "no-sub": lambda user: f"Bearer {_token(user, drop=['sub'])}",
    "sub-not-uuid": lambda user: f"Bearer {_token(user, {'sub': 'not-a-uuid'})}",
    "unknown-user": lambda user: f"Bearer {_token(user, {'sub': str(uuid.uuid4())})}",
    "old-password": lambda user: f"Bearer {_token(user, {'pwd': '0' * 16})}",
}


@pytest.fixture
def user_with_stamp(sql, new_user):
    user = new_user()
    password_hash = sql.fetchval("select password_hash from users where id = $1", uuid.UUID(user.uuid))
    user.stamp = hashlib.sha256(password_hash.encode()).hexdigest()[:16]
    return user


def test_a_token_made_like_the_servers_is_accepted(client, user_with_stamp):
    """The control for the table below: each bad token differs from this one in one way."""
    headers = {"Authorization": f"Bearer {_token(user_with_stamp)}"}
    _, response = client.get("/users_list", headers=headers)
    assert response.status == 200
    late = {"Authorization": f"Bearer {_token(user_with_stamp, {'exp': int(time.time()) - 3})}"}
    _, response = client.get("/users_list", headers=late)
    assert response.status == 200  # within the clock leeway


@pytest.mark.parametrize("make_header", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_bad_tokens_are_401_with_www_authenticate(client, user_with_stamp, make_header):
    header = make_header(user_with_stamp)
    _, response = client.get("/users_list", headers={"Authorization": header} if header else {})
    assert response.status == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json["error"] == "unauthorized"


def test_token_of_a_deleted_user_is_refused(client, sql, new_user):
    user = new_user()
    _, response = client.get("/users_list", headers=user.headers)
    assert response.status == 200
    sql.execute("delete from users where id = $1", uuid.UUID(user.uuid))
    _, response = client.get("/users_list", headers=user.headers)
    assert response.status == 401
