"""Every refusal is JSON {"error", "detail"} with the right status, never a 500 (in-process)."""

import re

import pytest


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/no/such/route", 404, "not_found"),
        ("GET", "/register", 405, "method_not_allowed"),
        ("DELETE", "/users_list", 405, "method_not_allowed"),
        ("POST", "/history/1", 405, "method_not_allowed"),
    ],
)
def test_routing_errors_are_json(client, method, path, status, code):
    _, response = client.request(path, http_method=method)
    assert response.status == status
    assert response.headers["content-type"] == "application/json"
    assert response.json["error"] == code
    assert response.json["detail"]


@pytest.mark.parametrize("route", ["/register", "/login", "/change_password"])
@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"name=x&email=x%40example.com&password=correct+horse"),
        (
            "multipart/form-data; boundary=b",
            b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\nx\r\n--b--\r\n',
        ),
        ("text/plain", b'{"name": "x", "email": "x@example.com", "password": "correct horse"}'),
        (None, b'{"name": "x", "email": "x@example.com", "password": "correct horse"}'),
        ("application/json", b'["name", "x"]'),
        ("application/json", b"{not json"),
    ],
    ids=["form", "multipart", "text-plain", "no-type", "array", "broken"],
)
def test_only_a_json_object_is_a_body(client, sql, new_user, route, content_type, body):
    """Another site's page can send a form or text/plain from a visitor's browser, but not JSON."""
    headers = new_user().headers if route == "/change_password" else {}
    if content_type:
        headers["Content-Type"] = content_type
    _, response = client.post(route, content=body, headers=headers)
    assert response.status == 400, response.text
    assert response.json["error"] == "invalid_request"
    assert sql.fetchval("select count(*) from users where email = 'x@example.com'") == 0


def test_body_over_64_kib_is_413_json(client):
    body, headers = b"{" + b" " * 70_000 + b"}", {"Content-Type": "application/json"}
    _, response = client.post("/register", content=body, headers=headers)
    assert response.status == 413
    assert response.json["error"] == "payload_too_large"


def test_openapi_docs_describe_the_http_api(client):
    _, spec = client.get("/docs/openapi.json")
    assert {"/register", "/login", "/users_list", "/chats"} <= set(spec.json["paths"])
    _, docs = client.get("/docs", follow_redirects=True)
    assert docs.status == 200


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/static/pane.js"])
def test_the_page_and_its_modules_are_revalidated_on_each_load(client, path):
    _, response = client.get(path)
    assert response.status == 200
    assert response.headers["cache-control"] == "no-cache"


def test_the_docs_ui_is_served_from_here_not_a_cdn(client):
    """/docs works on a machine without internet: every script and stylesheet it loads is ours."""
    _, docs = client.get("/docs", follow_redirects=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert len(assets) == 4, assets
    for asset in assets:
        assert asset.startswith("/"), f"{asset} comes from elsewhere"
        _, response = client.get(asset)
        assert response.status == 200, asset
        assert len(response.body) > 100


@pytest.mark.parametrize(("method", "path"), [("GET", "/users_list"), ("POST", "/login"), ("GET", "/nope")])
def test_security_headers_on_json_responses(client, method, path):
    _, response = client.request(path, http_method=method)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'self'" in response.headers["content-security-policy"]
