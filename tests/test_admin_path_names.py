"""A name the management API takes in its path (route alias, provider, secret) that the table
or the secrets service cannot hold is a 400 naming the path parameter, in words about that
name: it was "invalid route table: Expected `str` matching regex ... - at `key` in
`$.table.providers`" with no ``param`` (and "invalid secrets request: ... `$.name`"), about
a table the script never sent."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.stacks import Stack

pytestmark = pytest.mark.integration

_PROVIDER = {"kind": "openai-compatible", "api_base": "http://127.0.0.1:9/v1"}
_ROUTE = {"deployments": [{"provider": "fake", "model": "echo"}]}
_SECRET = {"value": "sk-path-names-0123456789"}


@pytest.mark.parametrize(
    ("method", "path", "body", "param", "said"),
    [
        ("PUT", "/providers/openai prod", _PROVIDER, "name", "provider name"),
        ("PUT", "/providers/-openai", _PROVIDER, "name", "provider name"),
        ("PUT", f"/providers/{'p' * 129}", _PROVIDER, "name", "provider name"),
        ("PUT", "/routes/team a/chat", _ROUTE, "alias", "route alias"),
        ("PUT", "/secrets/Team A", _SECRET, "name", "team-a"),
        ("POST", "/secrets/Team A/rotate", _SECRET, "name", "team-a"),
    ],
)
async def test_a_name_in_the_path_that_cannot_be_stored_is_a_400_naming_it(
    stack: Stack, method: str, path: str, body: dict[str, object], param: str, said: str
) -> None:
    before = (await stack.admin("GET", "/routes")).json()["revision"]
    refused = await stack.admin(method, quote(path, safe="/%"), body)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param), error
    assert said in error["message"]
    assert "route table" not in error["message"]
    assert "regex" not in error["message"]
    assert (await stack.admin("GET", "/routes")).json()["revision"] == before


async def test_names_that_can_be_stored_are_still_taken(stack: Stack) -> None:
    for method, path, body in (
        ("PUT", "/secrets/path-names_ok", _SECRET),
        ("PUT", "/providers/path-names.ok:v1", {**_PROVIDER, "secret": "path-names_ok"}),
        (
            "PUT",
            "/routes/path-names/ok.chat",
            {"deployments": [{"provider": "path-names.ok:v1", "model": "m"}]},
        ),
    ):
        answered = await stack.admin(method, path, body)
        assert answered.status_code == 200, f"{path}: {answered.text}"
    assert (await stack.admin("DELETE", "/routes/path-names/ok.chat")).status_code == 200
    assert (await stack.admin("DELETE", "/providers/path-names.ok:v1")).status_code == 200
    assert (await stack.admin("DELETE", "/secrets/path-names_ok")).status_code == 200


async def test_one_provider_and_one_secret_read_back_by_name(stack: Stack) -> None:
    """``GET /providers/{name}`` and ``GET /secrets/{name}`` were a 405: a script that wrote
    one read back every provider or secret to check it."""
    stored = await stack.admin("PUT", "/secrets/read-back", _SECRET)
    assert stored.status_code == 200, stored.text
    provider = {**_PROVIDER, "secret": "read-back", "concurrency": 3}
    assert (await stack.admin("PUT", "/providers/read-back", provider)).status_code == 200
    try:
        one = await stack.admin("GET", "/providers/read-back")
        assert one.status_code == 200, one.text
        assert one.json() == (await stack.admin("GET", "/providers")).json()["read-back"]
        assert (one.json()["secret"], one.json()["concurrency"]) == ("read-back", 3)
        secret = await stack.admin("GET", "/secrets/read-back")
        assert secret.status_code == 200, secret.text
        assert secret.json() == {k: v for k, v in stored.json().items() if k != "changed"}
        assert stored.json()["changed"] is True  # (a write's answer says it; a read's not)
        assert _SECRET["value"] not in secret.text
        for path, code in (
            ("/providers/no-such-provider", 404),
            ("/secrets/no-such-secret", 404),
            ("/secrets/Not A Name", 400),
        ):
            refused = await stack.admin("GET", path)
            assert refused.status_code == code, refused.text
            assert refused.json()["error"]["param"] == "name", refused.text
    finally:
        await stack.admin("DELETE", "/providers/read-back")
        await stack.admin("DELETE", "/secrets/read-back")
