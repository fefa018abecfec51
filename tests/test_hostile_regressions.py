"""Regression tests for bugs the hostile-input suites found, each named after its bug."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.stacks import Stack

pytestmark = pytest.mark.integration

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def test_reused_request_id_is_not_dropped_as_duplicate(stack: Stack) -> None:
    """Found by HTTP fuzzing: two requests sharing a client-chosen ``X-Request-Id`` got the
    same JetStream ``Nats-Msg-Id``; the second was deduplicated away and its caller hung
    until the deadline. A client could also stall another's request by guessing its id."""
    headers = {"Authorization": f"Bearer {stack.api_key}", "X-Request-Id": "reused-id-1"}
    async with httpx.AsyncClient(timeout=10) as http:
        url = f"{stack.tail_url}/v1/chat/completions"
        first = await http.post(url, json=CHAT, headers=headers)
        again = await asyncio.gather(
            *(http.post(url, json=CHAT, headers=headers) for _ in range(3))
        )
    assert first.status_code == 200, first.text
    assert [r.status_code for r in again] == [200, 200, 200]
    # Each request keeps the client's id as its prefix (for correlation) and is made unique
    # by the edge, because the request id is also the billing identity (design notes).
    ids = [r.headers["x-request-id"] for r in (first, *again)]
    assert all(i.startswith("reused-id-1.") for i in ids), ids
    assert len(set(ids)) == 4, ids


async def test_clearing_the_cooldown_of_an_invalid_deployment_id_is_400(stack: Stack) -> None:
    """Found by HTTP fuzzing of /admin/v1: an id that cannot be a NATS KV key (non-ASCII,
    wildcards) made the control service fail with 500; so did one that is a valid key but no
    subject (``0..0``: an empty token), found by the fuzzer at 10x its CI budget."""
    for bad in ("caf\u00e9", "a.>", "x y", "0..0", "a.", "a.b"):
        got = await stack.admin("DELETE", f"/deployments/{bad}/cooldown")
        assert got.status_code == 400, got.text
        assert got.json()["error"]["param"] == "deployment"
    unknown = await stack.admin("DELETE", "/deployments/never-routed/cooldown")
    assert unknown.status_code == 404, unknown.text  # a possible id, but not in the table


async def test_a_route_table_whose_providers_is_not_an_object_is_a_400(stack: Stack) -> None:
    """Found by HTTP fuzzing of /admin/v1: the check for provider keys pasted into the table
    read ``providers`` as an object before the typed decode ran, so a number there (or a
    ``table`` that is a list) was a 500."""
    for body in (
        {"table": {"providers": 8660.1, "routes": {}}},
        {"table": {"providers": [1, 2], "routes": {}}},
        {"table": [], "expected_revision": 1},
        {"table": "x"},
    ):
        got = await stack.admin("PUT", "/routes", body)
        assert got.status_code == 400, got.text
        assert got.json()["error"]["type"] == "invalid_request_error"


async def test_secret_provider_label_with_control_characters_is_400(stack: Stack) -> None:
    """Found by HTTP fuzzing of /admin/v1: OpenBao refuses control characters in custom
    metadata, and that refusal reached the admin as a 503."""
    for provider in ("a\nb", "\u0000", "x" * 200):
        got = await stack.admin("PUT", "/secrets/label-test", {"value": "v", "provider": provider})
        assert got.status_code == 400, got.text
    ok = await stack.admin("PUT", "/secrets/label-test", {"value": "v", "provider": "openai"})
    assert ok.status_code == 200, ok.text


async def test_secret_whose_last_characters_are_not_printable_is_stored(stack: Stack) -> None:
    """Found by HTTP fuzzing of /admin/v1: the last four characters of a value are kept as a
    hint in OpenBao metadata, which refuses control characters: the put answered 503."""
    for value in ("abcdefg\u009a", "abcd\U0001f600xy\u00a0z", "k" * 7 + "\u00e9"):
        got = await stack.admin("PUT", "/secrets/odd-tail", {"value": value})
        assert got.status_code == 200, got.text
        assert got.json()["last4"] == ""
    # A C0 control character (a NUL, a line break) is refused outright since: no HTTP header
    # can carry it, so every call with the key failed as a 500.
    for op, path in (("PUT", "/secrets/odd-tail"), ("POST", "/secrets/odd-tail/rotate")):
        got = await stack.admin(op, path, {"value": "abcd\U0001f600xyz\u0000"})
        assert got.status_code == 400, (op, got.text)
        assert "one line" in got.text
    got = await stack.admin("PUT", "/secrets/odd-tail", {"value": "sk-abcdefgh1234"})
    assert got.json()["last4"] == "1234"


async def test_a_batch_list_limit_out_of_1_to_100_is_a_400_not_a_500(stack: Stack) -> None:
    """Found by probing the API by hand: ``limit=²`` passed ``str.isdigit()`` and then failed
    ``int()``, a 500; ``limit=abc`` or ``-5`` were silently read as 20."""
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    async with httpx.AsyncClient(timeout=10) as http:
        url = f"{stack.tail_url}/v1/batches"
        for bad in ("\u00b2", "abc", "-5", "0", "101", "1e2"):
            got = await http.get(url, params={"limit": bad}, headers=headers)
            assert got.status_code == 400, (bad, got.text)
            assert got.json()["error"]["param"] == "limit"
        ok = await http.get(url, params={"limit": "3"}, headers=headers)
        assert ok.status_code == 200, ok.text
        assert ok.json()["object"] == "list"


async def test_a_missing_file_batch_or_route_is_a_404_that_does_not_say_model(
    stack: Stack,
) -> None:
    """Found by probing the API by hand: every 404 carried ``code: model_not_found``, even
    for a file, a batch or an admin route; OpenAI's own file and batch 404s carry no code."""
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    async with httpx.AsyncClient(timeout=10) as http:
        for path in ("/v1/files/file-nope/content", "/v1/files/file-nope", "/v1/batches/b-x"):
            got = await http.get(f"{stack.tail_url}{path}", headers=headers)
            assert got.status_code == 404, (path, got.text)
            error = got.json()["error"]
            assert error["code"] is None, (path, error)
            assert error["type"] == "invalid_request_error"
            assert "No such" in error["message"]
        model = await http.post(
            f"{stack.tail_url}/v1/chat/completions",
            json={**CHAT, "model": "no-such-model"},
            headers=headers,
        )
    assert model.status_code == 404
    assert model.json()["error"]["code"] == "model_not_found"
    route = await stack.admin("GET", "/routes/no-such-route")
    assert route.status_code == 404, route.text
    assert route.json()["error"]["code"] == "not_found"


async def test_an_unreadable_value_the_edge_skipped_is_named_in_the_400(stack: Stack) -> None:
    """Found by probing the API by hand: a number too large for a float, or a string that is
    not UTF-8, passes the edge (which reads only the fields it needs) and failed at the
    model-proxy as "request body is not a JSON object", which it is."""
    headers = {"Authorization": f"Bearer {stack.api_key}", "Content-Type": "application/json"}
    cases = {
        b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],'
        b'"temperature":1e999}': "Number out of range",
        b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"\xff\xfe"}]}': "UTF-8",
    }
    async with httpx.AsyncClient(timeout=10) as http:
        for body, named in cases.items():
            got = await http.post(
                f"{stack.tail_url}/v1/chat/completions", content=body, headers=headers
            )
            assert got.status_code == 400, got.text
            error = got.json()["error"]
            assert error["code"] == "invalid_json"
            assert named in error["message"], error
            assert "not a JSON object" not in error["message"]


async def test_a_get_on_an_llm_route_is_a_405_that_says_post(stack: Stack) -> None:
    """Found by hand: ``curl`` without ``-d`` on /v1/chat/completions answered 404
    "Unknown path", which reads as a wrong URL. The route exists; the method is wrong."""
    async with httpx.AsyncClient(timeout=10) as http:
        for path in ("/v1/chat/completions", "/v1/embeddings", "/chat/completions"):
            got = await http.get(f"{stack.tail_url}{path}")
            assert got.status_code == 405, (path, got.text)
            assert got.headers["allow"] == "POST"
            error = got.json()["error"]
            assert error["code"] == "method_not_allowed"
            assert "POST" in error["message"]
            assert path in error["message"]
        unknown = await http.get(f"{stack.tail_url}/v1/chat/completion")
        models = await http.post(f"{stack.tail_url}/v1/models", json={})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    assert models.status_code == 405  # a route of the app's router says which methods it takes
    assert "GET" in models.headers["allow"]
    assert models.json()["error"]["code"] == "method_not_allowed"


async def test_anthropic_clients_errors_from_the_app_carry_the_request_id(stack: Stack) -> None:
    """An explorer's finding: a 405 on /v1/messages or an unknown path asked by an Anthropic
    client was Anthropic-shaped but had no ``request_id`` (the fast path's errors have it in
    the body and the ``request-id`` header, which Anthropic's SDKs read)."""
    version = {"anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(base_url=stack.tail_url, timeout=10) as http:
        answers = [
            await http.get("/v1/messages", headers=version),
            await http.get("/v1/messagez", headers=version),
            await http.get("/v1/messages/batches/msgbatch_nope", headers=version),
            await http.get("/v1/models/nope", headers={**version, "x-request-id": "mine-1"}),
        ]
    for got in answers:
        body = got.json()
        assert body["type"] == "error", got.text
        assert body["request_id"] == got.headers["request-id"] == got.headers["x-request-id"]
        assert body["request_id"], got.text
    assert [a.status_code for a in answers[:2]] == [405, 404]
    assert answers[3].headers["x-request-id"].startswith("mine-1")  # the caller's, made unique
    # OpenAI's clients: their shape, the id in x-request-id only (as before).
    async with httpx.AsyncClient(base_url=stack.tail_url, timeout=10) as http:
        plain = await http.get("/v1/messagez")
    assert plain.json()["error"]["code"] == "not_found"
    assert plain.headers["x-request-id"]
    assert "request-id" not in plain.headers
