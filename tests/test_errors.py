"""Every refusal is JSON {"error", "detail"} with the right status, never a 500."""

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
async def test_routing_errors_are_json(http, method, path, status, code):
    response = await http.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == code
    assert response.json()["detail"]


async def test_body_over_64_kib_is_413_json(http):
    response = await http.post("/register", content=b"{" + b" " * 70_000 + b"}")
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


async def test_openapi_docs_describe_the_http_api(http):
    spec = (await http.get("/docs/openapi.json")).json()
    assert {"/register", "/login", "/users_list"} <= set(spec["paths"])
    assert (await http.get("/docs", follow_redirects=True)).status_code == 200
